"""The multi-stage, multi-resolution registration driver.

``register(fixed, moving, config)`` runs the stages of ``config`` in order, each starting from the
previous result. Per level: ``q = T(x_fixed)``, ``warped = moving(q)``, ``loss = sim(fixed, warped,
mask) + sum(w * reg(T))``, one optimiser step; stop at ``iterations`` or on a plateau.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import initialise
from ..config import RegistrationConfig, Stage
from .deformable import build, regularisation
from .stages import make_optimizer, make_regularisers
from ..errors import InputError
from ..functional.flow import resample_field
from ..functional.sampling import sample_affine, sample_displaced, sample_displaced_inside
from ..grid import Grid
from ..image import Image, normalize_intensity
from ..losses import make_similarity
from .pyramid import level_grid, smooth_and_shrink
from ..transforms.base import Compose, SpatialTransform
from ..transforms.chain import FieldTransform
from ..transforms.linear import LinearTransform, MatrixTransform
from ..transforms.velocity import SymmetricVelocity


@dataclass
class LevelRecord:
    shrink: float
    sigma: float
    iterations: int
    losses: list[float]
    seconds: float
    shape: tuple[int, ...]


@dataclass
class StageRecord:
    transform: str
    metric: str
    levels: list[LevelRecord] = field(default_factory=list)


@dataclass
class Result:
    """Outcome of :func:`register`: the fixed->moving transform, its linear part and the history."""

    transform: SpatialTransform
    inverse: SpatialTransform  # moving -> fixed (exact where the model allows)
    linear: Tensor  # (B, D+1, D+1) float64 world matrix moving_from_fixed of the linear stages
    init: np.ndarray
    stages: list[StageRecord]
    seconds: float


@dataclass
class Problem:
    """One pyramid level, ready to evaluate: fixed data on its grid, moving data with a weight channel."""

    fixed: Tensor  # (1, C, *S)
    fixed_mask: Tensor | None  # (1, 1, *S)
    grid: Grid
    moving: Tensor  # (1, C + 1, *S_m): intensities and the moving mask (or ones) as last channel
    moving_grid: Grid
    moving_masked: bool = True  # False: the last channel is all ones (the overlap alone weighs)


def prepare(image: Image, name: str, normalize: bool, mask: Image | None = None) -> Image:
    """Float32, one channel (mean of channels), finite, robustly normalised to [0, 1]."""
    image.check_finite(name)
    data = image.data.float()
    if data.shape[1] > 1:
        data = data.mean(1, keepdim=True)
    if normalize:
        try:
            data = normalize_intensity(data, mask=None if mask is None else mask.data)
        except InputError as exc:
            raise InputError(f"{name}: {exc}") from None
    elif float(data.max() - data.min()) == 0.0:
        raise InputError(f"{name}: image has zero intensity variance (constant image)")
    return image.with_data(data)


def prepare_mask(mask: Image | None, image: Image, name: str) -> Image | None:
    """A binary float mask on its own grid; empty masks and dimension mismatches are errors."""
    if mask is None:
        return None
    if mask.ndim != image.ndim:
        raise InputError(f"{name} is {mask.ndim}-D but its image is {image.ndim}-D")
    data = (mask.data[:, :1] > 0).float()
    if not bool(data.any()):
        raise InputError(f"{name} is empty (no non-zero voxel)")
    return mask.with_data(data.to(image.device))


def build_problem(fixed: Image, moving: Image, fixed_mask: Image | None, moving_mask: Image | None,
                  shrink: float, sigma: float, sigma_units: str) -> Problem:
    """Smooth and shrink both images to the level's resolution (same physical spacing)."""
    spacing = fixed.grid.spacing * shrink
    sigma_mm = sigma * fixed.grid.spacing if sigma_units == "vox" else np.full(fixed.ndim, sigma)
    f_grid = level_grid(fixed.grid, spacing)
    m_grid = level_grid(moving.grid, np.full(moving.ndim, spacing.mean()))
    f = smooth_and_shrink(fixed, f_grid, sigma_mm)
    m = smooth_and_shrink(moving, m_grid, float(np.mean(sigma_mm)))
    fm = None
    if fixed_mask is not None:
        fm = (smooth_and_shrink(fixed_mask, f_grid, 0.0).data > 0.5).float()
    weight = torch.ones_like(m.data[:, :1]) if moving_mask is None else \
        (smooth_and_shrink(moving_mask, m_grid, 0.0).data > 0.5).float()
    return Problem(f.data, fm, f_grid, torch.cat([m.data, weight], 1), m_grid, moving_mask is not None)


def evaluate(problem: Problem, transform: SpatialTransform, similarity: Callable[..., Tensor],
             linear: Tensor | None = None, regularisers: Sequence[nn.Module] = ()) -> Tensor:
    """Per-pair objective ``(B,)``: similarity over the overlap (and masks) plus weighted regularisers.

    A linear stage passes its learnable ``transform`` alone (sampled through one folded matrix); a
    deformable stage passes the deformable part and the fixed ``linear`` matrix applied after it.
    """
    if isinstance(transform, SymmetricVelocity):
        assert linear is not None  # a deformable stage
        return evaluate_midspace(problem, transform, similarity, linear, regularisers)
    reg = None
    if linear is None:
        sampled = sample_affine(problem.moving, problem.moving_grid, transform.matrix(), problem.grid)
    else:
        disp = transform.displacement(problem.grid)
        sampled = sample_displaced(problem.moving, problem.moving_grid, disp, problem.grid, linear)
        reg = regularisation(list(regularisers), disp, problem.grid)
    c = problem.fixed.shape[1]
    warped, weight = sampled[:, :c], sampled[:, c:]
    weight = weight.clamp(0.0, 1.0)  # linear interpolation of ones can overshoot 1 by rounding
    mask = weight if problem.fixed_mask is None else weight * problem.fixed_mask
    loss = similarity(problem.fixed, warped, mask)
    return loss if reg is None else loss + reg


def evaluate_midspace(problem: Problem, transform: SymmetricVelocity, similarity: Callable[..., Tensor],
                      linear: Tensor, regularisers: Sequence[nn.Module] = ()) -> Tensor:
    """SyN's objective ``(B,)``: both images pulled onto the mid space and compared there.

    ``exp(-v_f)`` carries mid-space points (the fixed level's voxel centres) to the fixed image and
    ``linear o exp(-v_m)`` to the moving image, so each half is driven by its own image's gradient
    and neither image is favoured. Each half's displacement is regularised on the velocity grid.
    """
    to_fixed, to_moving = transform.halves()
    grid, field_grid = problem.grid, transform.field_grid
    halves = (to_fixed.field(), to_moving.field())
    reg = sum(regularisation(list(regularisers), u, field_grid) for u in halves)
    u_f, u_m = (resample_field(u, field_grid, grid) for u in halves)
    c = problem.fixed.shape[1]
    if problem.fixed_mask is None:
        fixed, fixed_weight = sample_displaced_inside(problem.fixed, grid, u_f, grid)
    else:
        both = sample_displaced(torch.cat([problem.fixed, problem.fixed_mask], 1), grid, u_f, grid)
        fixed, fixed_weight = both[:, :c], both[:, c:]
    if problem.moving_masked:
        both = sample_displaced(problem.moving, problem.moving_grid, u_m, grid, linear)
        moving, moving_weight = both[:, :c], both[:, c:]
    else:
        moving, moving_weight = sample_displaced_inside(problem.moving[:, :c], problem.moving_grid, u_m, grid, linear)
    mask = (fixed_weight * moving_weight).clamp(0.0, 1.0)
    return similarity(fixed, moving, mask) + reg


def plateau(losses: list[float], window: int, tolerance: float) -> bool:
    """True when the loss improved less than ``tolerance`` (relative) over the last ``window`` steps."""
    if len(losses) < window:
        return False
    old, recent = losses[-window], min(losses[-window + 1:])
    return old - recent < tolerance * max(abs(old), 1e-12)


def optimise_level(transform: SpatialTransform, stage: Stage, iterations: int, lr: float,
                   objective: Callable[[], Tensor], progress: bool, desc: str) -> list[float]:
    """Run one level's optimisation in place on ``transform``; return the loss history.

    The learning rate is annealed (cosine, to 5 %) over the level, and the parameters with the
    lowest loss seen are restored at the end.
    """
    params = [p for p in transform.parameters() if p.requires_grad]
    if not params or iterations == 0:
        return []
    opt = make_optimizer(stage, params, lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=0.05 * lr)
    losses: list[float] = []
    best = (float("inf"), [p.detach().clone() for p in params])

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = objective().sum()
        loss.backward()
        return loss

    bar = tqdm(range(iterations), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        before = [p.detach().clone() for p in params]
        value = float(opt.step(closure).detach())  # the loss at ``before``
        if not np.isfinite(value):
            raise InputError(f"{desc}: the loss diverged (became {value}); lower the learning rate")
        if value < best[0]:
            best = (value, before)
        schedule.step()
        losses.append(value)
        bar.set_postfix(loss=f"{value:.5g}")
        if plateau(losses, stage.window, stage.tolerance):
            break
    with torch.no_grad():
        final = float(objective().sum())
    if final > best[0]:
        with torch.no_grad():
            for p, b in zip(params, best[1]):
                p.copy_(b)
    return losses


def initial_matrix(name: str, fixed: Image, moving: Image, fixed_mask: Image | None, moving_mask: Image | None,
                   loss: Callable[..., Tensor]) -> np.ndarray:
    """The ``(D+1, D+1)`` starting matrix named by the config's ``init``."""
    inits: dict[str, Callable[[], np.ndarray]] = {
        "none": lambda: initialise.init_identity(fixed, moving),
        "geometry": lambda: initialise.init_geometry(fixed, moving),
        "com": lambda: initialise.init_center_of_mass(fixed, moving, fixed_mask, moving_mask),
        "moments": lambda: initialise.init_moments(fixed, moving, fixed_mask, moving_mask, loss=loss),
        "search": lambda: initialise.rotation_search(fixed, moving, loss, fixed_mask=fixed_mask,
                                                     moving_mask=moving_mask, refine_steps=3),
    }
    return inits[name]()


def linear_center_radius(grid: Grid) -> tuple[np.ndarray, float]:
    """Rotation centre (grid centre) and the radius (mean half-extent, mm) for parameter scaling."""
    extent = np.asarray(grid.shape) * grid.spacing
    return grid.center(), float(extent.mean() / 2)


def register(fixed: Image, moving: Image, config: RegistrationConfig, *, fixed_mask: Image | None = None,
             moving_mask: Image | None = None, init: np.ndarray | None = None,
             device: str | torch.device | None = None, progress: bool = False) -> Result:
    """Register ``moving`` to ``fixed``: the result maps fixed world points to moving world points.

    ``init`` is a ``(D+1, D+1)`` RAS world matrix (moving_from_fixed) replacing ``config.init``.
    """
    start = time.perf_counter()
    if init is not None:
        config = config.model_copy(update={"init": "none"})
    f, m, fixed_mask, moving_mask, computed = prepare_pair(fixed, moving, config, fixed_mask, moving_mask, device)
    init = computed if init is None else np.asarray(init, dtype=np.float64)
    dev = f.device
    center, radius = linear_center_radius(f.grid)
    linear = torch.as_tensor(np.asarray(init, dtype=np.float64), device=dev).unsqueeze(0)
    transform: SpatialTransform = MatrixTransform(linear)
    records: list[StageRecord] = []
    problems: dict[tuple, Problem] = {}
    for stage in config.stages:
        if stage.is_linear:
            model = LinearTransform(f.ndim, stage.transform, center=center, radius=radius, base=linear,
                                    freeze=stage.freeze).to(dev)
            record, _ = run_stage(f, m, fixed_mask, moving_mask, stage, progress, lambda grid, prev: model,
                                  problems=problems)
            linear = model.matrix().detach()
            transform = MatrixTransform(linear)
        else:
            options = dict(stage.transform_options)
            record, deform = run_stage(
                f, m, fixed_mask, moving_mask, stage, progress,
                lambda grid, prev: build(stage.transform, grid, options, prev).to(dev), linear, problems)
            transform = Compose(freeze(deform, f.grid), MatrixTransform(linear))
            inverse = Compose(MatrixTransform(torch.linalg.inv(linear)), freeze(deform.inverse(), f.grid))
        records.append(record)
    if not isinstance(transform, Compose):
        inverse = transform.inverse()
    return Result(transform, inverse, linear, np.asarray(init), records, time.perf_counter() - start)


class Prepared(NamedTuple):
    """One pair ready to register: normalised images, binary masks and the initial matrix."""

    fixed: Image
    moving: Image
    fixed_mask: Image | None
    moving_mask: Image | None
    init: np.ndarray


def prepare_pair(fixed: Image, moving: Image, config: RegistrationConfig, fixed_mask: Image | None = None,
                 moving_mask: Image | None = None, device: str | torch.device | None = None) -> Prepared:
    """Check, normalise and move a pair to ``device``; compute the initial matrix named by ``config.init``."""
    if fixed.ndim != moving.ndim:
        raise InputError(f"fixed image is {fixed.ndim}-D but moving image is {moving.ndim}-D")
    torch.manual_seed(config.seed)
    dev = torch.device(device) if device is not None else fixed.device
    fm = prepare_mask(None if fixed_mask is None else fixed_mask.to(dev), fixed, "fixed mask")
    mm = prepare_mask(None if moving_mask is None else moving_mask.to(dev), moving, "moving mask")
    f = prepare(fixed.to(dev), "fixed image", config.normalize, fm)
    m = prepare(moving.to(dev), "moving image", config.normalize, mm)
    # one score per candidate: the searches evaluate batches of candidate matrices
    loss = make_similarity(config.stages[0].metric, reduction="none", **config.stages[0].metric_options)
    return Prepared(f, m, fm, mm, np.asarray(initial_matrix(config.init, f, m, fm, mm, loss), dtype=np.float64))


def freeze(transform: SpatialTransform, grid: Grid) -> FieldTransform:
    """The transform's displacement on ``grid``, computed once (velocity models are not re-integrated)."""
    with torch.no_grad():
        return FieldTransform(transform.displacement(grid).detach(), grid)


def run_stage(fixed: Image, moving: Image, fixed_mask: Image | None, moving_mask: Image | None, stage: Stage,
              progress: bool, make: Callable[[Grid, SpatialTransform | None], SpatialTransform],
              linear: Tensor | None = None, problems: dict[tuple, Problem] | None = None
              ) -> tuple[StageRecord, SpatialTransform]:
    """All levels of one stage, coarse to fine; ``make(level_grid, previous)`` gives each level's model.

    ``linear`` is the fixed matrix applied after a deformable model (None for linear stages);
    ``problems`` caches pyramid levels across the stages of one registration.
    """
    problems = {} if problems is None else problems
    similarity = make_similarity(stage.metric, **stage.metric_options)
    regularisers = make_regularisers(stage.regularisers)
    record = StageRecord(stage.transform, stage.metric)
    model: SpatialTransform | None = None
    for i, level in enumerate(stage.levels):
        t0 = time.perf_counter()
        if level.iterations == 0:  # only carry the model onto this level's (finer) grid
            grid = level_grid(fixed.grid, fixed.grid.spacing * level.shrink)
            model = make(grid, model)
            record.levels.append(LevelRecord(level.shrink, level.sigma, 0, [], time.perf_counter() - t0, grid.shape))
            continue
        key = (level.shrink, level.sigma, stage.sigma_units)
        if key not in problems:
            problems[key] = build_problem(fixed, moving, fixed_mask, moving_mask, *key)
        problem = problems[key]
        model = make(problem.grid, model)
        desc = f"{stage.transform} L{i + 1}/{len(stage.levels)} {problem.grid.shape}"
        lr = stage.lr * float(np.mean(problem.grid.spacing))

        def objective(problem: Problem = problem, model: SpatialTransform = model) -> Tensor:
            return evaluate(problem, model, similarity, linear, regularisers)

        losses = optimise_level(model, stage, level.iterations, lr, objective, progress, desc)
        record.levels.append(LevelRecord(level.shrink, level.sigma, len(losses), losses,
                                         time.perf_counter() - t0, problem.grid.shape))
    assert model is not None  # a stage has at least one level (validated)
    return record, model
