"""The multi-stage, multi-resolution driver: ``register`` is :func:`register_many` of one pair.

Each stage optimises a new transform ``S`` applied to fixed-space points before the result so far
(ANTs' composite order): ``T_new = T_prev o S``. After a stage the result is frozen as one
displacement field on the fixed grid followed by one matrix, ``T(x) = M (x + u(x))`` (a matrix
alone while every stage so far is linear), so any chain composes: a linear stage after a
deformable one moves the points before the field, a second deformable stage refines the first.
Per level: ``loss = sim(fixed, moving o T, overlap) + sum(w * reg)`` for every pair, one loop
steps all pairs, each stopping on its own plateau (:mod:`.objective`, :mod:`.optimise`).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..config import RegistrationConfig, Stage
from ..errors import InputError
from ..grid import Grid
from ..image import Image
from ..losses import make_similarity
from ..transforms.base import Compose, SpatialTransform
from ..transforms.chain import FieldTransform
from ..transforms.linear import LinearTransform, MatrixTransform, linear_center_radius
from . import initialise
from .deformable import build
from .objective import objective
from .optimise import optimise
from .problem import Prepared, Problem, build_problem, prepare, prepare_mask, stack_problems
from .pyramid import level_spacing, pyramid_grid
from .stages import make_regularisers


@dataclass
class LevelRecord:
    shrink: float
    sigma: float
    iterations: int
    losses: list[float]
    seconds: float
    shape: tuple[int, ...]
    spacing: float | None = None  # the level's voxel size in mm


@dataclass
class StageRecord:
    transform: str
    metric: str
    levels: list[LevelRecord] = field(default_factory=list)
    # deformable stages: the stage's own similarity at its finest level before and after it; a stage
    # that made it worse is undone (``kept_previous``) rather than leave the images worse aligned
    similarity_before: float | None = None
    similarity_after: float | None = None
    kept_previous: bool = False


@dataclass
class Result:
    """Outcome of :func:`register`: the fixed->moving transform, its last matrix and the history."""

    transform: SpatialTransform  # MatrixTransform, or Compose(FieldTransform on the fixed grid, MatrixTransform)
    inverse: SpatialTransform  # moving -> fixed (exact where the model allows)
    linear: Tensor  # (1, D+1, D+1) float64 world matrix applied last (the linear stages before any field)
    init: np.ndarray
    stages: list[StageRecord]
    seconds: float


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


def register(fixed: Image, moving: Image, config: RegistrationConfig, *, fixed_mask: Image | None = None,
             moving_mask: Image | None = None, init: np.ndarray | None = None,
             device: str | torch.device | None = None, progress: bool = False) -> Result:
    """Register ``moving`` to ``fixed``: the result maps fixed world points to moving world points.

    ``init`` is a ``(D+1, D+1)`` RAS world matrix (moving_from_fixed) replacing ``config.init``.
    """
    start = time.perf_counter()
    if init is not None:
        config = config.model_copy(update={"init": "none"})
    pair = prepare_pair(fixed, moving, config, fixed_mask, moving_mask, device)
    if init is not None:
        pair = pair._replace(init=np.asarray(init, dtype=np.float64))
    result = register_many([pair], config, progress=progress)[0]
    result.seconds = time.perf_counter() - start
    return result


class _State:
    """The result so far for ``B`` pairs, frozen: ``T(x) = M (x + u(x))`` and its inverse."""

    def __init__(self, init: Tensor):
        self.matrix = init  # (B, D+1, D+1) float64
        self.field: FieldTransform | None = None  # u on the fixed grid
        self.inverse: SpatialTransform = MatrixTransform(torch.linalg.inv(init))

    @property
    def transform(self) -> SpatialTransform:
        m = MatrixTransform(self.matrix)
        return m if self.field is None else Compose(self.field, m)

    def then(self, stage_model: SpatialTransform, grid: Grid) -> None:
        """Append a stage's model (applied to fixed points first) and freeze the whole on ``grid``."""
        with torch.no_grad():
            linear = stage_model.linear_matrix()
            if linear is not None and self.field is None:
                self.matrix = self.matrix @ linear.detach()
                self.inverse = MatrixTransform(torch.linalg.inv(self.matrix))
                return
            inside = stage_model if self.field is None else Compose(stage_model, self.field)
            self.field = FieldTransform(inside.displacement(grid).detach(), grid)
            undo = stage_model.inverse()
            undo = undo if undo.linear_matrix() is not None else FieldTransform(undo.displacement(grid).detach(), grid)
            self.inverse = Compose(self.inverse, undo)


def register_many(pairs: Sequence[Prepared], config: RegistrationConfig, progress: bool = False) -> list[Result]:
    """Register prepared pairs together, stacked on the batch dimension; one :class:`Result` per pair.

    The pairs need equal level shapes (equal image shapes and spacings); deformable stages also need
    one fixed grid. Each result's ``seconds`` (and each level's) is the batch's time divided by ``B``.
    """
    if not pairs:
        return []
    start = time.perf_counter()
    batch, first = len(pairs), pairs[0]
    dev = first.fixed.device
    fixed_grid = first.fixed.grid
    if not all(stage.is_linear for stage in config.stages) and \
            not all(p.fixed.grid.same_as(fixed_grid, atol=1e-6) for p in pairs):
        raise InputError("pairs registered together with deformable stages need the same fixed image grid")
    center = np.stack([linear_center_radius(p.fixed.grid)[0] for p in pairs])
    radius = linear_center_radius(fixed_grid)[1]
    state = _State(torch.as_tensor(np.stack([p.init for p in pairs]), dtype=torch.float64, device=dev))
    records: list[list[StageRecord]] = [[] for _ in range(batch)]
    problems: dict[tuple, tuple[Problem, Tensor, Tensor | None]] = {}
    for stage in config.stages:
        if stage.is_linear:
            def make(grid: Grid, previous: SpatialTransform | None, stage: Stage = stage) -> SpatialTransform:
                return previous or LinearTransform(fixed_grid.ndim, stage.transform, center=torch.as_tensor(
                    center, device=dev), radius=radius, freeze=stage.freeze, batch=batch)
        else:
            def make(grid: Grid, previous: SpatialTransform | None, stage: Stage = stage) -> SpatialTransform:
                return build(stage.transform, grid, dict(stage.transform_options), previous, batch, dev)
        model, stage_records = run_stage(pairs, stage, state, make, problems, progress)
        state.then(model, fixed_grid)
        for pair_records, record in zip(records, stage_records):
            pair_records.append(record)
    seconds = (time.perf_counter() - start) / batch
    transform, inverse = state.transform, state.inverse
    return [Result(transform if batch == 1 else transform.select(i), inverse if batch == 1 else inverse.select(i),
                   state.matrix[i:i + 1], p.init, records[i], seconds) for i, p in enumerate(pairs)]


def run_stage(pairs: Sequence[Prepared], stage: Stage, state: _State,
              make: Callable[[Grid, SpatialTransform | None], SpatialTransform],
              problems: dict[tuple, tuple[Problem, Tensor, Tensor | None]], progress: bool
              ) -> tuple[SpatialTransform, list[StageRecord]]:
    """All levels of one stage, coarse to fine; ``make(level_grid, previous)`` gives each level's model.

    ``problems`` caches pyramid levels across the stages of one registration. A deformable stage
    that leaves its own similarity worse than before it is undone pair by pair (its parameters
    zeroed: the identity) and says so in its record.
    """
    batch, first = len(pairs), pairs[0]
    similarity = make_similarity(stage.metric, reduction="none", **stage.metric_options)
    regularisers = make_regularisers(stage.regularisers)
    records = [StageRecord(stage.transform, stage.metric) for _ in range(batch)]
    model: SpatialTransform | None = None
    last: tuple[Problem, Callable[[SpatialTransform], SpatialTransform]] | None = None
    for i, level in enumerate(stage.levels):
        t0 = time.perf_counter()
        spacing = level_spacing(first.fixed.grid, level.shrink, level.spacing)
        if level.iterations == 0:  # only carry the model onto this level's (finer) grid
            grid = pyramid_grid(first.fixed.grid, spacing)
            model = make(grid, model)
            for record in records:
                record.levels.append(LevelRecord(level.shrink, level.sigma, 0, [], 0.0, grid.shape, spacing))
            continue
        key = (spacing, level.sigma, stage.sigma_units)
        if key not in problems:
            problems[key] = stack_problems([build_problem(p.fixed, p.moving, p.fixed_mask, p.moving_mask, level.shrink,
                                                          level.sigma, stage.sigma_units, level.spacing) for p in pairs])
        problem, left, right = problems[key]
        model = make(problem.grid, model)
        outer = [MatrixTransform(right)] if right is not None else []

        def seen(inner: SpatialTransform, outer: list = outer, left: Tensor = left) -> SpatialTransform:
            """``inner`` then the result so far, on the batch's common grids."""
            return Compose(*outer, inner, state.transform, MatrixTransform(left))

        transform = seen(model)
        desc = f"{stage.transform} L{i + 1}/{len(stage.levels)} {problem.grid.shape}" + (f" x{batch}" if batch > 1 else "")
        lr = stage.lr * float(np.mean(problem.grid.spacing))
        histories = optimise(model, stage, level.iterations, lr,
                             lambda: objective(problem, transform, similarity, regularisers), progress, desc)
        seconds = (time.perf_counter() - t0) / batch
        for record, losses in zip(records, histories):
            record.levels.append(LevelRecord(level.shrink, level.sigma, len(losses), losses, seconds,
                                             problem.grid.shape, spacing))
        last = (problem, seen)
    assert model is not None  # a stage has at least one level (validated)
    if not stage.is_linear and last is not None:
        _do_no_harm(model, records, similarity, *last)
    return model, records


def _do_no_harm(model: SpatialTransform, records: list[StageRecord], similarity: Callable[..., Tensor],
                problem: Problem, seen: Callable[[SpatialTransform], SpatialTransform]) -> None:
    """Undo (zero) the deformable ``model`` for each pair whose similarity it made worse on ``problem``."""
    with torch.no_grad():
        identity = MatrixTransform(torch.eye(problem.grid.ndim + 1, dtype=torch.float64,
                                             device=problem.fixed.device).expand(len(records), -1, -1))
        before = objective(problem, seen(identity), similarity).double().cpu().tolist()
        after = objective(problem, seen(model), similarity).double().cpu().tolist()
        for i, record in enumerate(records):
            record.similarity_before, record.similarity_after = before[i], after[i]
            if after[i] > before[i]:
                record.kept_previous = True
                for p in model.parameters():
                    p[i] = 0.0
