"""Initial alignments: each returns a ``(D+1, D+1)`` float64 RAS world matrix ``moving_from_fixed``.

* :func:`init_identity`, :func:`init_geometry` (grid centres), :func:`init_center_of_mass`
  (intensity centroids in world mm) and :func:`init_moments` (centroids and principal axes).
* :func:`rotation_search`: a grid of rotations (and optionally mirrors) about the fixed centroid,
  scored as batches through the engine's objective, coarse to fine, the best few refined by a
  few rotation and translation steps (ANTs' ``antsAI``/affine-initializer idea).

Intensity weights are ``image - min(image)`` inside the mask (a CT's air at -1000 then weighs
nothing instead of a negative amount), or ``max(image) - image`` when the grid's outer faces are
bright (a slide's white background); channels are averaged. Masks are images whose values in ``[0, 1]``
weight voxels (values above 1 count as 1); a mask on another grid is resampled (nearest) onto
its image's grid.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import Tensor

from .. import registration as engine  # the package, still importing when this module loads: used at call time
from ..errors import InputError
from ..functional.sampling import sample_affine
from ..grid import Grid
from ..image import Image
from ..losses import NCC
from ..resample import resample
from ..transforms.linear import MatrixTransform

PairLoss = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]
"""``(fixed (B, C, *S), warped (B, C, *S), mask (B|1, 1, *S) | None) -> (B,)``, lower is better."""

negative_ncc: PairLoss = NCC(reduction="none")
"""The searches' default loss: negated global NCC per pair ``(B,)`` in [-1, 1]."""


# ---- centres and moments ----------------------------------------------------------------------
def _check_pair(fixed: Image, moving: Image) -> int:
    if fixed.ndim != moving.ndim:
        raise InputError(f"fixed image is {fixed.ndim}-D but moving image is {moving.ndim}-D")
    for name, image in (("fixed", fixed), ("moving", moving)):
        if image.batch_size != 1:
            raise InputError(f"{name} image: initialisation takes one image, got a batch of {image.batch_size}")
    return fixed.ndim


def _mask_on(mask: Image | None, grid: Grid, name: str) -> Tensor | None:
    """Mask weights ``(1, 1, *S)`` in [0, 1] on ``grid`` (nearest-resampled if on another grid)."""
    if mask is None:
        return None
    if mask.ndim != grid.ndim:
        raise InputError(f"{name} is {mask.ndim}-D but its image is {grid.ndim}-D")
    if not mask.grid.same_as(grid):
        mask = resample(mask, grid, interp="nearest")
    weights = mask.data[:1, :1].to(torch.float64).clamp(0, 1)
    if not bool((weights > 0).any()):
        raise InputError(f"{name} is empty (no voxel > 0 on its image's grid)")
    return weights


def _intensity_weights(image: Image, mask: Image | None, name: str) -> Tensor:
    """Voxel weights ``(*S)`` float64: ``image - min`` (channel mean) inside the mask, times the mask;
    ``max - image`` instead where the grid's outer faces are bright (median in the upper half of the
    range), as a slide's white background is."""
    values = image.data[0].to(torch.float64).mean(0)
    m = _mask_on(mask, image.grid, f"{name} mask")
    inside = values if m is None else values[m[0, 0] > 0]
    low, high = inside.min(), inside.max()
    bright = bool(_border_median(values[None, None])[0] > (low + high) / 2)
    weights = (high - values if bright else values - low).clamp_min(0)
    if m is not None:
        weights = weights * m[0, 0]
    if not bool((weights > 0).any()):
        raise InputError(f"{name} image is constant{' inside its mask' if m is not None else ''}: "
                         f"it has no centre of mass")
    return weights


class _Moments(NamedTuple):
    center: np.ndarray  # (D,) world mm
    axes: np.ndarray | None = None  # (D, D), columns = principal axes, ascending variance
    variances: np.ndarray | None = None  # (D,) mm^2
    skew: np.ndarray | None = None  # (D,) third central moment along each axis / variance^1.5


def _moments(image: Image, mask: Image | None, name: str, order: int = 3) -> _Moments:
    """Intensity moments in world mm up to ``order`` (lower orders leave the later fields None).

    Computed from voxel-index moments through marginal sums, without lists of points.
    """
    w = _intensity_weights(image, mask, name)
    d = w.ndim
    total = w.sum()

    def marginal(*axes: int) -> Tensor:  # w summed over every other axis, the given axes kept in order
        others = [k for k in range(d) if k not in axes]
        return w.sum(dim=others) if others else w

    idx = [torch.arange(n, dtype=torch.float64, device=w.device) for n in w.shape]
    mean = torch.stack([marginal(i) @ idx[i] for i in range(d)]) / total
    a = torch.tensor(image.grid.world_from_voxel[:d, :d], dtype=torch.float64, device=w.device)
    center = (a @ mean + torch.tensor(image.grid.origin, dtype=torch.float64, device=w.device)).cpu().numpy()
    if order == 1:
        return _Moments(center)
    centred = [idx[i] - mean[i] for i in range(d)]
    cov = torch.empty(d, d, dtype=torch.float64, device=w.device)
    for i, j in itertools.combinations_with_replacement(range(d), 2):
        cov[i, j] = cov[j, i] = (marginal(i) @ centred[i] ** 2 if i == j else
                                 centred[i] @ marginal(i, j) @ centred[j]) / total
    variances, axes = torch.linalg.eigh(a @ cov @ a.T)
    if order == 2:
        return _Moments(center, axes.cpu().numpy(), variances.cpu().numpy())
    skew = np.empty(d)
    for k in range(d):  # projection of (voxel - mean) on world axis k: a sum of broadcast 1-D terms
        coef = (a.T @ axes[:, k]).tolist()
        u = sum(coef[i] * centred[i].view([-1 if j == i else 1 for j in range(d)]) for i in range(d))
        skew[k] = float((w * u ** 3).sum() / total) / max(float(variances[k]), 1e-12) ** 1.5
    return _Moments(center, axes.cpu().numpy(), variances.cpu().numpy(), skew)


def _translation(offset: np.ndarray) -> np.ndarray:
    m = np.eye(len(offset) + 1)
    m[:-1, -1] = offset
    return m


def init_identity(fixed: Image, moving: Image, fixed_mask: Image | None = None,
                  moving_mask: Image | None = None) -> np.ndarray:
    """The identity ``(D+1, D+1)``: the images' own world coordinates are trusted."""
    return np.eye(_check_pair(fixed, moving) + 1)


def init_geometry(fixed: Image, moving: Image, fixed_mask: Image | None = None,
                  moving_mask: Image | None = None) -> np.ndarray:
    """Translation taking the fixed grid's geometric centre to the moving grid's (masks unused)."""
    _check_pair(fixed, moving)
    return _translation(moving.grid.center() - fixed.grid.center())


def init_center_of_mass(fixed: Image, moving: Image, fixed_mask: Image | None = None,
                        moving_mask: Image | None = None) -> np.ndarray:
    """Translation taking the fixed intensity centroid (world mm, inside the mask) to the moving one."""
    _check_pair(fixed, moving)
    return _translation(_moments(moving, moving_mask, "moving", order=1).center
                        - _moments(fixed, fixed_mask, "fixed", order=1).center)


def init_moments(fixed: Image, moving: Image, fixed_mask: Image | None = None, moving_mask: Image | None = None,
                 loss: PairLoss | None = None) -> np.ndarray:
    """Rigid map matching centroids and principal axes of the intensity distributions.

    ``T(x) = R (x - c_f) + c_m`` with ``R = V_m S V_f^T`` (columns of V = principal axes sorted by
    variance). Each axis has a sign ambiguity; ``S`` is one of the ``2^(D-1)`` proper sign choices
    (det R = +1): with ``loss``, the one whose coarse resampling scores lowest (as in
    :func:`rotation_search`); without, the one whose third moments (skewness) along the axes agree,
    flipping the least skewed axis if that choice is improper. Nearly symmetric objects or axes of
    equal variance leave the rotation ill-defined; :func:`rotation_search` is the robust option.
    """
    d = _check_pair(fixed, moving)
    order = 2 if loss is not None else 3
    mf = _moments(fixed, fixed_mask, "fixed", order)
    mm = _moments(moving, moving_mask, "moving", order)

    def matrix(signs: np.ndarray) -> np.ndarray:
        m = np.eye(d + 1)
        m[:d, :d] = mm.axes @ np.diag(signs) @ mf.axes.T
        m[:d, d] = mm.center - m[:d, :d] @ mf.center
        return m

    if loss is not None:
        proper = [np.array(s, dtype=float) for s in itertools.product((1, -1), repeat=d)]
        candidates = np.stack([matrix(s) for s in proper if np.linalg.det(matrix(s)[:d, :d]) > 0])
        c = _moments(fixed, fixed_mask, "fixed", order=1).center
        level = _search_level(fixed.float(), moving.float(), _binary_mask(fixed_mask, d, "fixed mask"),
                              _binary_mask(moving_mask, d, "moving mask"), 32, _reach(fixed, candidates[0], c))
        return candidates[int(np.argmin(_scores(level, loss, candidates, 0.25, len(candidates))))]
    agreement = mf.skew * mm.skew
    signs = np.where(agreement < 0, -1.0, 1.0)
    if np.linalg.det(matrix(signs)[:d, :d]) < 0:
        signs[int(np.argmin(np.abs(agreement)))] *= -1
    return matrix(signs)


# ---- rotation search, scored through the engine's objective ------------------------------------
class _Level(NamedTuple):
    """One search resolution: the engine's :class:`~torchalign.registration.Problem`, its moving image
    extended beyond its grid (and mask) by its background, and where the moving image really is."""

    problem: engine.Problem  # moving (1, C, *S_m) extended by its background, no mask
    inside: Tensor  # (1, 1, *S_m) the moving grid (or mask) before extension, 0 in the extension
    full: float  # voxels of the fixed level (or of its mask)


def _binary_mask(mask: Image | None, ndim: int, name: str) -> Image | None:
    """A float ``{0, 1}`` mask image (on its own grid), as the engine takes it."""
    if mask is None:
        return None
    if mask.ndim != ndim:
        raise InputError(f"{name} is {mask.ndim}-D but its image is {ndim}-D")
    data = (mask.data[:1, :1] > 0).float()
    if not bool(data.any()):
        raise InputError(f"{name} is empty (no voxel > 0)")
    return mask.with_data(data)


def _border_median(values: Tensor) -> Tensor:
    """Median of the voxels on the outer faces of ``values (B, C, *S)`` per channel -> ``(C,)``."""
    spatial = range(2, values.ndim)
    faces = [values.select(a, end).flatten(2) for a in spatial for end in (0, -1)]
    return torch.cat(faces, 2)[0].median(1).values


def _search_level(fixed: Image, moving: Image, fixed_mask: Image | None, moving_mask: Image | None, size: int,
                  reach: tuple[np.ndarray, float]) -> _Level:
    """Both images smoothed (sigma one voxel of the level) and shrunk so the fixed grid's longest side
    has ``size`` voxels. Smoothing that much widens the similarity's basin: on IXI T1/T2 (MI), a
    start 29 degrees from the truth outscores the wrong rotations, with half a voxel it does not.

    The moving image is extended by its background (the median outside its mask, or of its grid's
    faces) wherever it is unknown: beyond its grid, within ``reach = (point, radius mm)`` of the
    point, and outside its mask. Every candidate is then scored over the same fixed voxels (the
    fixed level, or its mask), so pushing the object out of view costs what it should instead of
    shrinking the region that is compared.
    """
    shrink = max(1.0, max(fixed.grid.shape) / size)
    problem = engine.build_problem(fixed, moving, fixed_mask, moving_mask, shrink, shrink if shrink > 1 else 0.0, "vox")
    c = problem.fixed.shape[1]
    values = problem.moving
    weight = problem.moving_mask if problem.moving_mask is not None else torch.ones_like(values[:, :1])
    outside = values.transpose(0, 1)[:, weight[:, 0] == 0]  # (C, N) voxels outside the moving mask
    background = outside.median(1).values if outside.shape[1] > 0 else _border_median(values)
    background = background.view(1, c, *[1] * moving.ndim)
    grid = problem.moving_grid
    point, radius = reach
    centre = grid.world_to_voxel(torch.from_numpy(np.asarray(point, dtype=np.float64))).numpy()
    half = radius / grid.spacing
    shape = np.asarray(grid.shape)
    before = np.clip(np.ceil(half - centre), 0, np.ceil(2 * half)).astype(int) + 1
    after = np.clip(np.ceil(centre + half - (shape - 1)), 0, np.ceil(2 * half)).astype(int) + 1
    extended = grid.crop(-before, shape + before + after)
    interior = (slice(None), slice(None), *[slice(b, b + n) for b, n in zip(before, shape)])
    data = background.expand(1, c, *extended.shape).clone()
    data[interior] = weight * values + (1 - weight) * background
    inside = torch.zeros(1, 1, *extended.shape, dtype=weight.dtype, device=weight.device)
    inside[interior] = weight
    full = float(np.prod(problem.grid.shape)) if problem.fixed_mask is None else float(problem.fixed_mask.sum())
    return _Level(replace(problem, moving=data, moving_grid=extended, moving_mask=None), inside, full)


def _scores(level: _Level, similarity: PairLoss, matrices: np.ndarray, min_overlap: float,
            batch_size: int) -> np.ndarray:
    """The engine's objective for each ``(K, D+1, D+1)`` candidate -> ``(K,)``; ``inf`` where less than
    ``min_overlap`` of the fixed level (or mask) lands inside the moving image (and mask)."""
    problem = level.problem
    out = np.full(len(matrices), np.inf)
    for start in range(0, len(matrices), batch_size):
        m = torch.as_tensor(matrices[start:start + batch_size], dtype=torch.float64, device=problem.fixed.device)
        with torch.no_grad():
            inside = sample_affine(level.inside, problem.moving_grid, m, problem.grid).clamp(0, 1)
            if problem.fixed_mask is not None:
                inside = inside * problem.fixed_mask
            keep = inside.flatten(1).sum(1) >= min_overlap * level.full
            if not bool(keep.any()):
                continue
            k = int(keep.sum())
            # the objective compares the fixed batch with the warped one as they are: a batch of 1 is expanded
            batch = replace(problem, fixed=problem.fixed.expand(k, *problem.fixed.shape[1:]))
            loss = engine.objective(batch, MatrixTransform(m[keep]), similarity)
        out[start + keep.nonzero().flatten().cpu().numpy()] = loss.double().cpu().numpy()
    return out


def _angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """Rotation angle (degrees) of ``b^-1 a`` for candidates that differ by a rotation; ``inf`` if by a flip."""
    d = a.shape[0] - 1
    r = (np.linalg.inv(b) @ a)[:d, :d]
    if np.linalg.det(r) < 0:
        return np.inf
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - d + 2) / 2, -1.0, 1.0))))


def _distinct_best(candidates: np.ndarray, scores: np.ndarray, k: int, apart_deg: float) -> np.ndarray:
    """Indices of the ``k`` best finite scores, each more than ``apart_deg`` from the better ones kept."""
    chosen: list[int] = []
    for i in np.argsort(scores, kind="stable"):
        if len(chosen) == k or not np.isfinite(scores[i]):
            break
        if all(_angle_between(candidates[i], candidates[j]) > apart_deg for j in chosen):
            chosen.append(int(i))
    return np.asarray(chosen, dtype=int)


def _refine(level: _Level, similarity: PairLoss, best: np.ndarray, scores: np.ndarray, center: np.ndarray,
            angle_deg: float, shift_mm: float, steps: int, min_overlap: float, batch_size: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Batched coordinate search from each of ``best (K, D+1, D+1)``: per step, +-``angle_deg`` about
    each axis pair through ``center`` and +-``shift_mm`` along each axis; a candidate that no move
    improves halves its steps. Returns the candidates and their scores."""
    d = best.shape[-1] - 1
    scale = np.ones(len(best))
    rows = np.arange(len(best))
    for _ in range(steps):
        moves = np.stack([_local_moves(d, center, angle_deg * s, shift_mm * s) for s in scale])  # (K, M, D+1, D+1)
        trials = best[:, None] @ moves
        trial_scores = _scores(level, similarity, trials.reshape(-1, d + 1, d + 1), min_overlap,
                               batch_size).reshape(moves.shape[:2])
        choice = np.argmin(trial_scores, axis=1)
        improved = trial_scores[rows, choice] < scores
        best = np.where(improved[:, None, None], trials[rows, choice], best)
        scores = np.where(improved, trial_scores[rows, choice], scores)
        scale = np.where(improved, scale, scale / 2)
    return best, scores


def _default_angles(ndim: int) -> np.ndarray:
    return np.arange(-180.0, 180.0, 15.0 if ndim == 2 else 45.0)


def rotation_matrices(ndim: int, angles_deg: Sequence[float] | None = None) -> np.ndarray:
    """Grid of rotations ``(K, D, D)``: 2-D, one per angle; 3-D, ZYX Euler angles ``Rz(a) Ry(b) Rx(c)``.

    In 3-D, ``a`` and ``c`` take every value of ``angles_deg`` and ``b`` those within [-90, 90]
    (that covers all rotations); duplicates (gimbal lock at b = +-90) are removed. Defaults:
    2-D every 15 degrees (24 rotations), 3-D every 45 degrees (208 distinct rotations).
    """
    angles = _default_angles(ndim) if angles_deg is None else np.asarray(angles_deg, dtype=np.float64)
    if angles.ndim != 1 or len(angles) == 0 or not np.all(np.isfinite(angles)):
        raise InputError(f"angles_deg must be a non-empty list of finite angles, got {angles_deg}")
    if ndim == 2:
        c, s = np.cos(np.radians(angles)), np.sin(np.radians(angles))
        return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    tilt = angles[(angles >= -90) & (angles <= 90)]
    if len(tilt) == 0:
        tilt = np.zeros(1)
    euler = np.array(list(itertools.product(angles, tilt, angles)))
    r = Rotation.from_euler("ZYX", euler, degrees=True).as_matrix()
    _, first = np.unique(np.round(r, 6).reshape(len(r), -1), axis=0, return_index=True)
    return r[np.sort(first)]


def _local_moves(ndim: int, center: np.ndarray, angle_deg: float, shift_mm: float) -> np.ndarray:
    """+-``angle_deg`` about each axis pair through ``center``, then +-``shift_mm`` per axis -> ``(M, D+1, D+1)``."""
    moves = []
    for i, j in itertools.combinations(range(ndim), 2):
        for sign in (1, -1):
            a = np.radians(sign * angle_deg)
            m = np.eye(ndim + 1)
            m[[i, i, j, j], [i, j, i, j]] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
            m[:ndim, ndim] = center - m[:ndim, :ndim] @ center
            moves.append(m)
    for i in range(ndim):
        for sign in (1, -1):
            moves.append(_translation(sign * shift_mm * np.eye(ndim)[i]))
    return np.stack(moves)


def _reach(fixed: Image, base: np.ndarray, center: np.ndarray) -> tuple[np.ndarray, float]:
    """Where the candidates ``base o Rot_c`` can send the fixed grid: a ball ``(point, radius mm)``,
    with a quarter of the radius to spare for the refinement's shifts."""
    d = fixed.ndim
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in fixed.grid.shape])), dtype=np.float64)
    world = corners @ fixed.grid.world_from_voxel[:d, :d].T + fixed.grid.origin
    radius = float(np.linalg.norm(world - center, axis=1).max()) * float(np.linalg.norm(base[:d, :d], 2))
    return base[:d, :d] @ center + base[:d, d], 1.25 * radius


def rotation_search(fixed: Image, moving: Image, loss: PairLoss | None = None, base: np.ndarray | None = None, *,
                    angles_deg: Sequence[float] | None = None, center: np.ndarray | None = None,
                    flips: bool = False, refine_steps: int = 0, translation_mm: float | None = None,
                    top_k: int = 4, size: int = 32, fine_size: int | None = 64,
                    fixed_mask: Image | None = None, moving_mask: Image | None = None,
                    min_overlap: float = 0.25, batch_size: int = 32) -> np.ndarray:
    """Best of a grid of rotations about ``center``, composed with ``base``, coarse to fine -> ``(D+1, D+1)`` RAS.

    Candidates are ``base @ Rot_c`` with ``Rot_c(x) = R (x - c) + c``, R from
    :func:`rotation_matrices(D, angles_deg) <rotation_matrices>` (with ``flips``, each also
    mirrored along the first world axis through c). ``base`` defaults to :func:`init_center_of_mass`
    and ``center`` to the fixed intensity centroid, so every candidate keeps the centroids matched.

    Candidates are scored with the engine's objective
    (:func:`torchalign.registration.objective` on a :func:`~torchalign.registration.build_problem`
    level) under ``loss`` (a ``reduction="none"`` similarity, lower is better; NCC by default),
    ``batch_size`` at a time. The whole grid is scored with the fixed image's longest side shrunk
    to ``size`` voxels; the ``top_k`` best that lie more than one grid step apart are kept, refined
    by ``refine_steps`` steps of a batched coordinate search (+-half the grid step about each axis
    and +-``translation_mm``, default two voxels of the level, along each axis; a candidate that
    no move improves halves its steps), then re-scored and refined again at ``fine_size`` voxels
    (halved angle steps), where the best is chosen. Every candidate is compared over the same fixed
    voxels, with the moving image extended by its background where it is unknown (see
    :func:`_search_level`); candidates that leave less than ``min_overlap`` of the fixed image (or
    mask) inside the moving image (and mask) are discarded.
    """
    d = _check_pair(fixed, moving)
    if refine_steps < 0 or top_k < 1 or size < 4 or batch_size < 1 or (fine_size is not None and fine_size < size):
        raise InputError("rotation_search needs refine_steps >= 0, top_k >= 1, size >= 4, fine_size >= size "
                         "and batch_size >= 1")
    if base is None:
        base = init_center_of_mass(fixed, moving, fixed_mask, moving_mask)
    base = np.asarray(base, dtype=np.float64)
    if base.shape != (d + 1, d + 1):
        raise InputError(f"base must be a ({d + 1}, {d + 1}) matrix, got {base.shape}")
    c = _moments(fixed, fixed_mask, "fixed", order=1).center if center is None else np.asarray(center, dtype=np.float64)
    similarity = negative_ncc if loss is None else loss
    fixed_mask = _binary_mask(fixed_mask, d, "fixed mask")
    moving_mask = _binary_mask(moving_mask, d, "moving mask")
    r = rotation_matrices(d, angles_deg)
    if flips:
        r = np.concatenate([r, r * np.r_[-1.0, np.ones(d - 1)]])  # R diag(-1, 1, ...): mirror, then rotate
    about_c = np.tile(np.eye(d + 1), (len(r), 1, 1))
    about_c[:, :d, :d] = r
    about_c[:, :d, d] = c - r @ c
    candidates = base @ about_c
    angles = np.unique(_default_angles(d) if angles_deg is None else np.asarray(angles_deg, dtype=np.float64))
    step = float(np.diff(angles).min()) if len(angles) > 1 else 20.0
    reach = _reach(fixed, base, c)
    longest = max(fixed.grid.shape)  # a size beyond it is the image itself
    sizes = [size] if fine_size is None or min(fine_size, longest) <= min(size, longest) else [size, fine_size]
    best = scores = None
    for i, n in enumerate(sizes):
        level = _search_level(fixed.float(), moving.float(), fixed_mask, moving_mask, n, reach)
        if best is None:
            scores = _scores(level, similarity, candidates, min_overlap, batch_size)
            if not np.isfinite(scores).any():
                raise InputError(f"no rotation keeps {min_overlap:.0%} of the fixed image inside the moving image; "
                                 "check the images' world positions or lower min_overlap")
            keep = _distinct_best(candidates, scores, top_k, 1.01 * step)
            best, scores = candidates[keep], scores[keep]
        else:
            scores = _scores(level, similarity, best, min_overlap, batch_size)
        shift = 2 * float(level.problem.grid.spacing.max()) if translation_mm is None else float(translation_mm) / 2 ** i
        best, scores = _refine(level, similarity, best, scores, c, 0.5 * step / 2 ** i, shift, refine_steps,
                               min_overlap, batch_size)
    return best[int(np.argmin(scores))]
