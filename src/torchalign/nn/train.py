"""Training of registration networks (unsupervised, label-supervised, field-supervised), and per-pair fine-tuning.

The objective is the classical one: ``w * similarity(fixed, warped, overlap) + sum(w * reg(u))`` with
``u`` the displacement of the predicted transform on the fixed grid, plus optional soft-Dice on
warped one-hot label maps and the squared error to a known field (synthetic pairs). :func:`train`
runs on one process, or on several when launched by ``torchrun`` (DistributedDataParallel; gloo on
the CPU, nccl on CUDA) without any change; it validates after every epoch on held-out pairs, keeps
the best checkpoint, follows a learning-rate schedule, stops early, and runs the network in mixed
precision on request. Rank 0 writes ``OUTPUT/checkpoint.pt`` (atomically, every epoch),
``OUTPUT/best.pt``, ``OUTPUT/log.csv``, ``OUTPUT/validation.csv`` and, when tensorboard is
importable, ``OUTPUT/tensorboard``.
"""
from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from ..config import Stage
from ..errors import InputError
from ..grid import Grid
from ..losses import make_similarity
from ..losses.regularisers import REGULARISERS
from ..transforms.base import SpatialTransform
from ..registration import optimise
from ..registration.deformable import smooth_gradients
from .checkpoint import checkpoint_config, load_checkpoint, save_checkpoint
from .config import LossConfig, TrainConfig
from .data import Batch, collate, datasets_from_config
from .evaluate import validate
from .models import RegistrationNet, build_model, warp

LOG_COLUMNS = ("step", "epoch", "loss", "similarity", "regulariser", "dice", "supervised", "lr", "seconds")
VAL_COLUMNS = ("epoch", "step", "loss", "similarity", "regulariser", "supervised", "dice", "folding_percent", "lr",
               "best")


# ---- the objective -------------------------------------------------------------------------------
def one_hot(labels: Tensor, values: list[int]) -> Tensor:
    """``(B, 1, *S)`` integer labels -> ``(B, K, *S)`` float indicators of ``values`` (in that order)."""
    ids = torch.as_tensor(values, dtype=labels.dtype, device=labels.device).reshape(1, -1, *[1] * (labels.ndim - 2))
    return (labels == ids).float()


def soft_dice(a: Tensor, b: Tensor, eps: float = 1e-6) -> Tensor:
    """Mean over channels of ``2 sum(ab) / (sum(a) + sum(b))`` for ``(B, K, *S)`` maps -> ``(B,)``.

    A label absent from both maps counts as a perfect match (1).
    """
    inter = (a * b).flatten(2).sum(-1)
    total = (a + b).flatten(2).sum(-1)
    return ((2 * inter + eps) / (total + eps)).mean(1)


@dataclass
class Terms:
    """Loss terms (scalars): ``loss`` is what is minimised; ``supervised`` the mean squared field error, mm^2."""

    loss: Tensor
    similarity: Tensor
    regulariser: Tensor
    dice: Tensor
    supervised: Tensor


class Objective(nn.Module):
    """The registration loss of a transform on a batch, from a :class:`~torchalign.nn.config.LossConfig`."""

    def __init__(self, config: LossConfig):
        super().__init__()
        self.similarity = make_similarity(config.similarity, **config.similarity_options)
        regs = []
        for r in config.regularisers:
            if r.name not in REGULARISERS:
                raise InputError(f"unknown regulariser {r.name!r}; expected one of {', '.join(REGULARISERS)}")
            regs.append(REGULARISERS[r.name](weight=r.weight, **r.options))
        self.regularisers = nn.ModuleList(regs)
        self.overlap = config.overlap
        self.similarity_weight = config.similarity_weight
        self.dice_weight = config.dice
        self.supervised_weight = config.supervised
        self.labels = list(config.labels or [])

    def forward(self, transform: SpatialTransform, fixed: Tensor, moving: Tensor, grid: Grid,
                fixed_labels: Tensor | None = None, moving_labels: Tensor | None = None,
                true_displacement: Tensor | None = None) -> Terms:
        """Terms for ``fixed``/``moving`` ``(B, 1, *S)`` on ``grid`` (labels ``(B, 1, *S)`` for the Dice
        term, the true displacement ``(B, D, *S)`` mm for the supervised term)."""
        use_dice = self.dice_weight > 0
        if use_dice and (fixed_labels is None or moving_labels is None):
            raise InputError("the Dice term needs label maps for both images of every pair")
        if self.supervised_weight > 0 and true_displacement is None:
            raise InputError("the supervised term needs the true displacement of every pair (synthetic data)")
        stack = [moving, torch.ones_like(moving)] if self.overlap else [moving]
        if use_dice:
            stack.append(one_hot(moving_labels, self.labels))  # type: ignore[arg-type]
        linear = transform.linear_matrix() is not None
        need_disp = len(self.regularisers) or not linear or self.supervised_weight > 0
        disp = transform.displacement(grid).to(fixed.dtype) if need_disp else None
        sampled = warp(torch.cat(stack, 1), grid, transform, disp)
        k = 2 if self.overlap else 1
        mask = sampled[:, 1:2].clamp(0.0, 1.0) if self.overlap else None
        zero = fixed.new_zeros(())
        similarity = self.similarity(fixed, sampled[:, :1], mask) if self.similarity_weight > 0 else zero
        regulariser = zero
        if disp is not None and len(self.regularisers):
            regulariser = sum((r(disp, grid) for r in self.regularisers), zero)
        dice = zero
        if use_dice:
            dice = 1 - soft_dice(sampled[:, k:], one_hot(fixed_labels, self.labels)).mean()  # type: ignore[arg-type]
        supervised = zero
        if self.supervised_weight > 0:
            supervised = ((disp - true_displacement) ** 2).sum(1).mean()  # type: ignore[operator]
        loss = self.similarity_weight * similarity + regulariser + self.dice_weight * dice
        return Terms(loss + self.supervised_weight * supervised, similarity, regulariser, dice, supervised)


class TrainStep(nn.Module):
    """``model`` and ``objective`` as one module whose forward returns the loss terms (what DDP wraps).

    With ``amp`` set to a dtype, the network runs under autocast in it; its head, the integration
    and the objective stay float32.
    """

    def __init__(self, model: RegistrationNet, objective: Objective, amp: torch.dtype | None = None):
        super().__init__()
        self.model = model
        self.objective = objective
        self.amp = amp

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        with torch.autocast(batch.fixed.device.type, dtype=self.amp, enabled=self.amp is not None):
            transform = self.model(batch.fixed, batch.moving, batch.grid)
        t = self.objective(transform, batch.fixed, batch.moving, batch.grid, batch.fixed_labels, batch.moving_labels,
                           batch.displacement)
        return t.loss, t.similarity, t.regulariser, t.dice, t.supervised


# ---- fine-tuning ---------------------------------------------------------------------------------
def finetune(transform: SpatialTransform, fixed: Tensor, moving: Tensor, grid: Grid, objective: Objective,
             steps: int, lr: float, grad_sigma: float = 0.0) -> tuple[SpatialTransform, list[float]]:
    """Optimise a predicted transform on one pair for up to ``steps`` Adam steps of the engine's loop.

    ``fixed``/``moving`` are ``(1, 1, *S)`` on ``grid``; ``lr`` is in mm (the transform parameters'
    units). ``grad_sigma`` (voxels) Gaussian-smooths the gradient of dense fields before each step
    (the ANTs/FireANTs update-field smoothing that the classical ``syn`` preset uses). Returns the
    fine-tuned transform (the lowest loss seen) and the loss of every step.
    """
    if steps < 0 or lr <= 0 or grad_sigma < 0:
        raise InputError(f"fine-tuning needs steps >= 0, lr > 0 and grad_sigma >= 0, got steps={steps}, lr={lr}, "
                         f"grad_sigma={grad_sigma}")
    tuned = transform.learnable_copy(grid)
    if grad_sigma > 0 and tuned.linear_matrix() is None:
        smooth_gradients(tuned, grad_sigma)
    # the engine's loop: Adam, annealed lr, a stop when ten steps bring no improvement, best parameters kept
    stage = Stage(transform="dense", optimizer="Adam", lr=lr, tolerance=0.0)
    histories = optimise(tuned, stage, steps, lr, lambda: objective(tuned, fixed, moving, grid).loss.reshape(1),
                         desc="fine-tuning")
    losses = histories[0]
    return tuned, losses


# ---- training ------------------------------------------------------------------------------------
@dataclass
class Distributed:
    """Where this process runs: its rank among ``world`` processes and its device."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool  # whether train() initialised the process group (and so tears it down)


def setup_distributed(device: str) -> Distributed:
    """One process, or a torchrun worker (``WORLD_SIZE > 1``): join the process group (gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = torch.device(device)
    if world <= 1:
        return Distributed(0, 1, dev, False)
    owns = not dist.is_initialized()
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if owns:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), dev, owns)


def make_optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """A ``torch.optim`` class by name."""
    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)) or name == "LBFGS":
        raise InputError(f"unknown or unsupported optimizer {name!r}; use a torch.optim class such as Adam or SGD")
    return cls(params, lr=lr)


class _Log:
    """A CSV log (appended on resume) with an optional TensorBoard writer under ``tag``; only rank 0 writes."""

    def __init__(self, path: Path, columns: tuple[str, ...], append: bool, board: Any, tag: str):
        new = not (append and path.exists())
        self.file = path.open("w" if new else "a", newline="")
        self.csv = csv.writer(self.file)
        self.columns = columns
        if new:
            self.csv.writerow(columns)
        self.board, self.tag = board, tag

    def write(self, row: dict[str, float]) -> None:
        self.csv.writerow([f"{row[c]:.6g}" if isinstance(row[c], float) else row[c] for c in self.columns])
        self.file.flush()
        if self.board is not None:
            for key in self.columns:
                if key not in ("step", "epoch", "seconds", "best"):
                    self.board.add_scalar(f"{self.tag}/{key}", row[key], row["step"])

    def close(self) -> None:
        self.file.close()


def _board(outdir: Path, enabled: bool) -> Any:
    """A TensorBoard writer in ``outdir/tensorboard``, or None (disabled or tensorboard not installed)."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(outdir / "tensorboard"))


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    """The epoch-wise learning-rate scheduler of ``config.schedule`` (None for a constant rate)."""
    s = config.schedule
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=s.min_lr)
    if s.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=s.factor,
                                                          patience=s.patience, min_lr=s.min_lr)
    return None


def score(metrics: dict[str, float], monitor: str) -> float:
    """The validation score to minimise: the loss, or minus the label Dice."""
    if monitor == "dice":
        if math.isnan(metrics["dice"]):
            raise InputError("monitor: dice needs validation pairs with label maps")
        return -metrics["dice"]
    return metrics["loss"]


@dataclass
class TrainSummary:
    """What :func:`train` did: steps and epochs reached, the last logged loss, time, the checkpoints.

    ``best`` is ``OUTPUT/best.pt`` (the epoch with the best validation score) when validating;
    ``best_score`` its score (loss, or minus Dice); ``stopped_early`` whether early stopping ended it.
    """

    steps: int
    epochs: int
    loss: float
    seconds: float
    checkpoint: Path
    best: Path | None = None
    best_score: float = math.inf
    stopped_early: bool = False


def train(config: TrainConfig, dataset: Dataset | None = None, validation: Dataset | None = None, *,
          resume: bool = False, progress: bool = False,
          on_step: Callable[[dict[str, float]], None] | None = None) -> TrainSummary:
    """Train the model of ``config`` on ``dataset`` (default: the datasets ``config.data`` describes).

    After every epoch: the validation metrics on ``validation`` (default: the held-out part of
    ``config.data``) go to ``OUTPUT/validation.csv``; ``OUTPUT/best.pt`` keeps the epoch with the
    best ``config.monitor`` score; the schedule steps; ``config.early_stop`` epochs without a
    better score end the run; ``OUTPUT/checkpoint.pt`` is written. ``resume`` continues from
    ``checkpoint.pt`` (model, optimizer, schedule, best score, epoch and step; the model config
    must match). An epoch interrupted by ``max_steps`` still saves one (a resumed run repeats that
    epoch in full). ``on_step`` receives every logged training row (rank 0 only).
    """
    run = setup_distributed(config.device)
    try:
        return _train(config, dataset, validation, resume, progress, on_step, run)
    finally:
        if run.owns_group:
            dist.destroy_process_group()


def _check_monitoring(config: TrainConfig, validation: Dataset | None) -> None:
    if validation is None and (config.early_stop is not None or config.schedule.name == "plateau"):
        raise InputError("early_stop and the plateau schedule need validation pairs (set data.validation > 0)")


def _train(config: TrainConfig, dataset: Dataset | None, validation: Dataset | None, resume: bool, progress: bool,
           on_step: Callable[[dict[str, float]], None] | None, run: Distributed) -> TrainSummary:
    start_time = time.perf_counter()
    if dataset is None:
        if config.data is None:
            raise InputError("the training config has no `data` section and no dataset was given")
        dataset, validation = datasets_from_config(config.data, config.model.normalize, config.seed)
    _check_monitoring(config, validation)
    outdir = Path(config.output)
    ckpt_path, best_path = outdir / "checkpoint.pt", outdir / "best.pt"
    torch.manual_seed(config.seed)
    model = build_model(config.model).to(run.device)
    objective = Objective(config.loss).to(run.device)
    optimizer = make_optimizer(config.optimizer, list(model.parameters()), config.lr)
    scheduler = make_scheduler(config, optimizer)
    amp_dtype = torch.float16 if run.device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(run.device.type, enabled=config.amp and amp_dtype == torch.float16)
    epoch = step = stale = 0
    best = math.inf
    if resume:
        state = load_checkpoint(ckpt_path, run.device)
        stored = checkpoint_config(state, ckpt_path)
        if stored.model != config.model:
            raise InputError(f"{ckpt_path}: cannot resume: it holds a different model ({stored.model.model_dump()})")
        model.load_state_dict(state["state_dict"])
        if state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        progress_state = state.get("progress") or {}
        if scheduler is not None and progress_state.get("scheduler"):
            scheduler.load_state_dict(progress_state["scheduler"])
        if progress_state.get("scaler"):
            scaler.load_state_dict(progress_state["scaler"])
        best, stale = float(progress_state.get("best", math.inf)), int(progress_state.get("stale", 0))
        epoch, step = int(state["epoch"]), int(state["step"])
    step_module: nn.Module = TrainStep(model, objective, amp_dtype if config.amp else None)
    if run.world > 1:
        step_module = nn.parallel.DistributedDataParallel(step_module)
    sampler = DistributedSampler(dataset, num_replicas=run.world, rank=run.rank, shuffle=True, seed=config.seed)
    workers = config.data.num_workers if config.data is not None else 0
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=workers, drop_last=False)  # not persistent: workers see set_epoch
    if run.rank == 0:
        outdir.mkdir(parents=True, exist_ok=True)
    board = _board(outdir, config.tensorboard) if run.rank == 0 else None
    log = _Log(outdir / "log.csv", LOG_COLUMNS, resume, board, "train") if run.rank == 0 else None
    val_log = (_Log(outdir / "validation.csv", VAL_COLUMNS, resume, board, "validation")
               if run.rank == 0 and validation is not None else None)
    last = math.nan
    stopped = False
    limit = config.max_steps if config.max_steps is not None else math.inf
    try:
        bar = tqdm(total=None if math.isinf(limit) else int(limit), initial=step, disable=not progress or run.rank,
                   desc="train", leave=False)
        while epoch < config.epochs and step < limit and not stopped:
            sampler.set_epoch(epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            model.train()
            for batch in loader:
                if step >= limit:
                    break
                batch = batch.to(run.device)
                optimizer.zero_grad(set_to_none=True)
                loss, sim, reg, dice, sup = step_module(batch)
                if not torch.isfinite(loss):
                    raise InputError(f"training diverged at step {step} (loss {float(loss)}); lower lr")
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                step += 1
                terms = torch.stack([loss, sim, reg, dice, sup]).detach().float()
                if run.world > 1:
                    dist.all_reduce(terms)
                    terms /= run.world
                last = float(terms[0])
                row = {"step": step, "epoch": epoch, "loss": last, "similarity": float(terms[1]),
                       "regulariser": float(terms[2]), "dice": float(terms[3]), "supervised": float(terms[4]),
                       "lr": float(optimizer.param_groups[0]["lr"]), "seconds": time.perf_counter() - start_time}
                bar.update(1)
                if log is not None:
                    log.write(row)
                    if on_step is not None:
                        on_step(row)
            else:
                epoch += 1
                # every rank validates the same (all-reduced) weights, so all take the same decisions
                metrics = (validate(model, objective, validation, config.batch_size, config.loss.labels)
                           if validation is not None else None)
                if metrics is not None:
                    current = score(metrics, config.monitor)
                    improved = current < best
                    best, stale = (current, 0) if improved else (best, stale + 1)
                    if run.rank == 0 and improved:
                        save_checkpoint(best_path, config, model, None, epoch, step)
                    if val_log is not None:
                        val_log.write({"epoch": epoch, "step": step, **metrics, "best": int(improved),
                                       "lr": float(optimizer.param_groups[0]["lr"])})
                    stopped = config.early_stop is not None and stale >= config.early_stop
                if config.schedule.name == "plateau":
                    scheduler.step(score(metrics, config.monitor))  # type: ignore[arg-type]
                elif scheduler is not None:
                    scheduler.step()
            if run.rank == 0:
                save_checkpoint(ckpt_path, config, model, optimizer, epoch, step,
                                {"scheduler": None if scheduler is None else scheduler.state_dict(),
                                 "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                                 "best": best, "stale": stale})
        bar.close()
    finally:
        for writer in (log, val_log):
            if writer is not None:
                writer.close()
        if board is not None:
            board.close()
    if run.world > 1:
        dist.barrier()
    return TrainSummary(step, epoch, last, time.perf_counter() - start_time, ckpt_path,
                        best_path if validation is not None else None, best, stopped)
