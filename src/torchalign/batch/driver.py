"""Batched linear registration: B pairs of equal size optimised together on one device.

Each pair is prepared and initialised by :func:`torchalign.registration.prepare_pair`, as
:func:`~torchalign.registration.register` does; each pyramid level is built per pair with
:func:`~torchalign.registration.build_problem` and stacked on the batch dimension. One ``LinearTransform(batch=B)`` and one optimiser hold every pair's parameters;
the objective is the sum of the per-pair losses ``(B,)``, so (with an element-wise optimiser such
as Adam) each pair follows the same path as alone. Stopping on a plateau and restoring the best
parameters are decided per pair, as in :func:`~torchalign.registration.optimise_level`.

Pairs may lie on different world grids of the same shape and spacing: the stacked level uses the
first pair's grids, and each pair's matrix is conjugated onto them (exact for linear maps).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..config import RegistrationConfig, Stage
from ..errors import InputError
from ..grid import Grid, apply_matrix
from ..image import Image
from ..losses import make_similarity
from ..registration.pyramid import level_grid
from ..registration import (
    LevelRecord,
    Prepared,
    Problem,
    Result,
    StageRecord,
    build_problem,
    evaluate,
    linear_center_radius,
    make_optimizer,
    plateau,
)
from ..transforms.base import SpatialTransform
from ..transforms.linear import LinearTransform, MatrixTransform


def check_batchable(config: RegistrationConfig) -> None:
    """InputError unless every stage is linear and optimised element-wise (LBFGS couples the pairs)."""
    for i, stage in enumerate(config.stages, start=1):
        if not stage.is_linear:
            raise InputError(f"batched registration runs linear stages (translation, rigid, similarity, affine) "
                             f"only; stage {i} is {stage.transform!r}: use --mode sequential, pool or dask")
        if stage.optimizer == "LBFGS":
            raise InputError(f"stage {i}: LBFGS's line search couples the pairs of a batch; use Adam (or another "
                             "element-wise optimizer) or --mode sequential, pool or dask")


def batch_key(fixed: Image, moving: Image) -> tuple:
    """Pairs with equal keys have equal pyramid shapes at every level and can share a batch."""
    def geometry(image: Image) -> tuple:
        return image.grid.shape, tuple(np.round(image.grid.spacing, 6))

    return geometry(fixed), geometry(moving), str(fixed.device)


class _OnCommonGrids(SpatialTransform):
    """Pair ``i``'s matrix seen from the common grids: ``common_from_moving_i @ M_i @ fixed_i_from_common``."""

    def __init__(self, model: LinearTransform, left: Tensor, right: Tensor):
        super().__init__(model.ndim, model.batch)
        self.model = model
        self.register_buffer("left", left)
        self.register_buffer("right", right)

    def matrix(self) -> Tensor:
        return self.left @ self.model.matrix() @ self.right

    def forward(self, points: Tensor) -> Tensor:
        return apply_matrix(self.matrix().to(points.dtype), points)


def _world_maps(grids: Sequence[Grid], common: Grid, into_common: bool, device: torch.device) -> Tensor:
    """``(B, D+1, D+1)`` world maps between each grid and ``common`` (voxel for voxel)."""
    maps = [common.world_from_voxel @ g.voxel_from_world if into_common else g.world_from_voxel @ common.voxel_from_world
            for g in grids]
    return torch.as_tensor(np.stack(maps), dtype=torch.float64, device=device)


def stack_problems(problems: Sequence[Problem]) -> tuple[Problem, Tensor, Tensor]:
    """One batched problem on the first pair's grids, and the ``left``/``right`` maps onto those grids."""
    first = problems[0]
    shapes = {(p.grid.shape, p.moving_grid.shape) for p in problems}
    if len(shapes) != 1:
        raise InputError(f"pairs of one batch need equal level shapes, got {sorted(shapes)}")
    dev = first.fixed.device
    masks = None
    if any(p.fixed_mask is not None for p in problems):
        masks = torch.cat([p.fixed_mask if p.fixed_mask is not None else torch.ones_like(p.fixed[:, :1])
                           for p in problems])
    stacked = Problem(torch.cat([p.fixed for p in problems]), masks, first.grid,
                      torch.cat([p.moving for p in problems]), first.moving_grid)
    left = _world_maps([p.moving_grid for p in problems], first.moving_grid, True, dev)
    right = _world_maps([p.grid for p in problems], first.grid, False, dev)
    return stacked, left, right


def optimise_batch(model: LinearTransform, stage: Stage, iterations: int, lr: float,
                   objective: Callable[[], Tensor], desc: str) -> list[list[float]]:
    """:func:`~torchalign.registration.optimise_level` for ``B`` pairs at once; per-pair loss histories.

    A pair that reaches a plateau keeps its parameters from then on (the others go on), and each
    pair ends with its lowest-loss parameters, exactly as when registered alone.
    """
    batch = model.batch
    params = [p for p in model.parameters() if p.requires_grad]
    histories: list[list[float]] = [[] for _ in range(batch)]
    if not params or iterations == 0:
        return histories
    opt = make_optimizer(stage, params, lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=0.05 * lr)
    best_value = [float("inf")] * batch
    best = [p.detach().clone() for p in params]
    kept = [p.detach().clone() for p in params]
    active = [True] * batch
    values: list[float] = []

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        per_pair = objective()
        values[:] = per_pair.detach().double().cpu().tolist()
        total = per_pair.sum()
        total.backward()
        return total

    for _ in range(iterations):
        before = [p.detach().clone() for p in params]
        opt.step(closure)
        schedule.step()
        with torch.no_grad():
            for i in range(batch):
                if not active[i]:
                    for p, k in zip(params, kept):
                        p[i] = k[i]
                    continue
                if not np.isfinite(values[i]):
                    raise InputError(f"{desc}: the loss of pair {i + 1} diverged (became {values[i]}); "
                                     "lower the learning rate")
                if values[i] < best_value[i]:
                    best_value[i] = values[i]
                    for b, p0 in zip(best, before):
                        b[i] = p0[i]
                histories[i].append(values[i])
                if plateau(histories[i], stage.window, stage.tolerance):
                    active[i] = False
                    for k, p in zip(kept, params):
                        k[i] = p[i]
        if not any(active):
            break
    with torch.no_grad():
        final = objective().double().cpu().tolist()
        for i in range(batch):
            if final[i] > best_value[i]:
                for p, b in zip(params, best):
                    p[i] = b[i]
    return histories


def register_batch(pairs: Sequence[Prepared], config: RegistrationConfig) -> list[Result]:
    """Register the prepared pairs together (see the module doc); one :class:`Result` per pair.

    Each result's ``seconds`` and each level's ``seconds`` are the batch's time divided by ``B``.
    """
    check_batchable(config)
    if not pairs:
        return []
    start = time.perf_counter()
    batch, first = len(pairs), pairs[0]
    if len({batch_key(p.fixed, p.moving) for p in pairs}) != 1:
        raise InputError("pairs of one batch need equal fixed and moving shapes and spacings")
    dev = first.fixed.device
    center = np.stack([linear_center_radius(p.fixed.grid)[0] for p in pairs])
    radius = linear_center_radius(first.fixed.grid)[1]
    linear = torch.as_tensor(np.stack([p.init for p in pairs]), dtype=torch.float64, device=dev)
    records: list[list[StageRecord]] = [[] for _ in range(batch)]
    problems: dict[tuple, tuple[Problem, Tensor, Tensor]] = {}
    for stage in config.stages:
        similarity = make_similarity(stage.metric, **{**stage.metric_options, "reduction": "none"})
        model = LinearTransform(first.fixed.ndim, stage.transform, center=center, radius=radius, base=linear,
                                freeze=stage.freeze, batch=batch).to(dev)
        stage_records = [StageRecord(stage.transform, stage.metric) for _ in range(batch)]
        for i, level in enumerate(stage.levels):
            t0 = time.perf_counter()
            if level.iterations == 0:  # nothing to optimise (as register's run_stage)
                shape = level_grid(first.fixed.grid, first.fixed.grid.spacing * level.shrink).shape
                for record in stage_records:
                    record.levels.append(LevelRecord(level.shrink, level.sigma, 0, [], 0.0, shape))
                continue
            key = (level.shrink, level.sigma, stage.sigma_units)
            if key not in problems:  # levels shared by several stages are built once, as in register()
                problems[key] = stack_problems([build_problem(p.fixed, p.moving, p.fixed_mask, p.moving_mask, *key)
                                                for p in pairs])
            problem, left, right = problems[key]
            common = _OnCommonGrids(model, left, right)
            lr = stage.lr * float(np.mean(problem.grid.spacing))
            desc = f"{stage.transform} L{i + 1}/{len(stage.levels)} {problem.grid.shape} x{batch}"

            def objective(problem: Problem = problem, common: _OnCommonGrids = common,
                          similarity: Callable[..., Tensor] = similarity) -> Tensor:
                return evaluate(problem, common, similarity)

            histories = optimise_batch(model, stage, level.iterations, lr, objective, desc)
            seconds = (time.perf_counter() - t0) / batch
            for record, losses in zip(stage_records, histories):
                record.levels.append(LevelRecord(level.shrink, level.sigma, len(losses), losses, seconds,
                                                 problem.grid.shape))
        linear = model.matrix().detach()
        for pair_records, record in zip(records, stage_records):
            pair_records.append(record)
    seconds = (time.perf_counter() - start) / batch
    results = []
    for i, p in enumerate(pairs):
        transform = MatrixTransform(linear[i:i + 1])
        results.append(Result(transform=transform, inverse=transform.inverse(), linear=linear[i:i + 1], init=p.init,
                              stages=records[i], seconds=seconds))
    return results
