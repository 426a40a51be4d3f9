"""Initial alignments: each returns a ``(D+1, D+1)`` float64 RAS world matrix ``moving_from_fixed``.

* :func:`init_identity`, :func:`init_geometry` (grid centres), :func:`init_center_of_mass`
  (intensity centroids in world mm) and :func:`init_moments` (centroids and principal axes).
* :func:`rotation_search`: a coarse grid of rotations about the fixed centroid, evaluated as
  batches on downsampled images, optionally refined by a few translation steps (ANTs'
  ``antsAI``/affine-initializer idea).

Intensity weights are ``image - min(image)`` inside the mask (a CT's air at -1000 then weighs
nothing instead of a negative amount); channels are averaged. Masks are images whose values in
``[0, 1]`` weight voxels (values above 1 count as 1); a mask on another grid is resampled
(nearest) onto its image's grid.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import Tensor

from ..errors import InputError
from ..functional.sampling import sample_world
from ..grid import Grid, apply_matrix
from ..image import Image
from .pyramid import level_grid, smooth_and_shrink
from ..resample import resample

PairLoss = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]
"""``(fixed (B, C, *S), warped (B, C, *S), mask (B|1, 1, *S) | None) -> (B,)``, lower is better."""


def negative_ncc(fixed: Tensor, warped: Tensor, mask: Tensor | None = None) -> Tensor:
    """Negative (masked) normalised cross-correlation over all channels and voxels -> ``(B,)`` in [-1, 1]."""
    b = max(fixed.shape[0], warped.shape[0])
    shape = (b, *warped.shape[1:])  # a batch of 1 on either side broadcasts
    f = fixed.expand(shape).reshape(b, -1)
    m = warped.expand(shape).reshape(b, -1)
    w = torch.ones_like(m) if mask is None else mask.expand(shape).reshape(b, -1)
    total = w.sum(1).clamp_min(1e-12)
    fc = f - (w * f).sum(1, keepdim=True) / total[:, None]
    mc = m - (w * m).sum(1, keepdim=True) / total[:, None]
    num = (w * fc * mc).sum(1)
    den = torch.sqrt((w * fc * fc).sum(1) * (w * mc * mc).sum(1)).clamp_min(1e-12)
    return -num / den


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
    """Voxel weights ``(*S)`` float64: ``image - min`` (channel mean) inside the mask, times the mask."""
    values = image.data[0].to(torch.float64).mean(0)
    m = _mask_on(mask, image.grid, f"{name} mask")
    inside = values if m is None else values[m[0, 0] > 0]
    weights = values - inside.min()
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
    a = torch.tensor(image.grid.world_from_voxel[:d, :d])
    center = (a @ mean.cpu() + torch.tensor(image.grid.origin)).numpy()
    if order == 1:
        return _Moments(center)
    centred = [idx[i] - mean[i] for i in range(d)]
    cov = torch.empty(d, d, dtype=torch.float64)
    for i, j in itertools.combinations_with_replacement(range(d), 2):
        cov[i, j] = cov[j, i] = (marginal(i) @ centred[i] ** 2 if i == j else
                                 centred[i] @ marginal(i, j) @ centred[j]) / total
    variances, axes = torch.linalg.eigh(a @ cov @ a.T)
    if order == 2:
        return _Moments(center, axes.numpy(), variances.numpy())
    skew = np.empty(d)
    for k in range(d):  # projection of (voxel - mean) on world axis k: a sum of broadcast 1-D terms
        coef = (a.T @ axes[:, k]).tolist()
        u = sum(coef[i] * centred[i].view([-1 if j == i else 1 for j in range(d)]) for i in range(d))
        skew[k] = float((w * u ** 3).sum() / total) / max(float(variances[k]), 1e-12) ** 1.5
    return _Moments(center, axes.numpy(), variances.numpy(), skew)


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
        scores = _Search(fixed, moving, fixed_mask, moving_mask, loss).evaluate(candidates)
        return candidates[int(np.argmin(scores))]
    agreement = mf.skew * mm.skew
    signs = np.where(agreement < 0, -1.0, 1.0)
    if np.linalg.det(matrix(signs)[:d, :d]) < 0:
        signs[int(np.argmin(np.abs(agreement)))] *= -1
    return matrix(signs)


# ---- batched rotation search ------------------------------------------------------------------
class _Search:
    """Both images at a coarse resolution, ready to score many candidate matrices as batches."""

    def __init__(self, fixed: Image, moving: Image, fixed_mask: Image | None, moving_mask: Image | None,
                 loss: PairLoss, size: int = 32, min_overlap: float = 0.25, batch_size: int = 32):
        self.loss, self.min_overlap, self.batch_size = loss, min_overlap, batch_size
        extent = np.asarray(fixed.grid.shape) * fixed.grid.spacing
        spacing = [float(extent.max()) / size] * fixed.ndim
        self.fixed_grid = level_grid(fixed.grid, spacing)
        self.fixed = _coarse(fixed.float(), self.fixed_grid).data
        mask = _mask_on(fixed_mask, fixed.grid, "fixed mask")
        self.fixed_weight = None if mask is None else resample(Image(mask.float(), fixed.grid), self.fixed_grid).data
        self.full = float(np.prod(self.fixed_grid.shape)) if mask is None else float(self.fixed_weight.sum())
        # The moving image gets a last channel of ones (or its mask): sampled with zero padding,
        # it tells how much of each warped voxel lies inside the moving image (and mask).
        weight = _mask_on(moving_mask, moving.grid, "moving mask")
        ones = torch.ones_like(moving.data[:, :1], dtype=torch.float32) if weight is None else weight.float()
        self.moving_grid = level_grid(moving.grid, spacing)
        self.moving = _coarse(Image(torch.cat([moving.data.float(), ones], 1), moving.grid), self.moving_grid).data
        self.points = self.fixed_grid.points(torch.float32, fixed.device)

    def evaluate(self, matrices: np.ndarray) -> np.ndarray:
        """Loss of each ``(K, D+1, D+1)`` candidate -> ``(K,)``; too little overlap scores ``inf``."""
        out = []
        for start in range(0, len(matrices), self.batch_size):
            m = torch.as_tensor(matrices[start:start + self.batch_size], dtype=torch.float32, device=self.points.device)
            q = apply_matrix(m, self.points.expand(m.shape[0], *self.points.shape))
            with torch.no_grad():
                sampled = sample_world(self.moving, self.moving_grid, q)
                warped, weight = sampled[:, :-1], sampled[:, -1:].clamp(0, 1)
                if self.fixed_weight is not None:
                    weight = weight * self.fixed_weight
                fixed = self.fixed.expand(warped.shape[0], *self.fixed.shape[1:])
                scores = self.loss(fixed, warped, weight).double().cpu()
                overlap = weight.flatten(1).sum(1).double().cpu() / self.full
            out.append(torch.where(overlap >= self.min_overlap, scores, torch.full_like(scores, np.inf)))
        return torch.cat(out).numpy()


def _coarse(image: Image, grid: Grid) -> Image:
    """``image`` smoothed (sigma = half the coarse spacing where coarser) and resampled onto ``grid``."""
    sigma = np.where(grid.spacing > image.grid.spacing * 1.01, 0.5 * grid.spacing, 0.0)
    return smooth_and_shrink(image, grid, sigma.tolist())


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
    """Identity, then +-``angle_deg`` about each axis pair through ``center``, then +-``shift_mm`` per axis."""
    moves = [np.eye(ndim + 1)]
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


def rotation_search(fixed: Image, moving: Image, loss: PairLoss = negative_ncc, base: np.ndarray | None = None, *,
                    angles_deg: Sequence[float] | None = None, center: np.ndarray | None = None,
                    refine_steps: int = 0, translation_mm: float | None = None, top_k: int = 4,
                    size: int = 32, fixed_mask: Image | None = None, moving_mask: Image | None = None,
                    min_overlap: float = 0.25, batch_size: int = 32) -> np.ndarray:
    """Best of a grid of rotations about ``center``, composed with ``base`` -> ``(D+1, D+1)`` RAS.

    Candidates are ``base @ Rot_c`` with ``Rot_c(x) = R (x - c) + c``, R from
    :func:`rotation_matrices(D, angles_deg) <rotation_matrices>`. ``base`` defaults to
    :func:`init_center_of_mass` and ``center`` to the fixed intensity centroid, so every candidate
    keeps the centroids matched. Both images are smoothed and resampled so the fixed image's
    longest side has ``size`` voxels; candidates are scored ``batch_size`` at a time with ``loss``
    (lower is better) over the fixed voxels inside the moving image (and the masks); candidates
    leaving less than ``min_overlap`` of the fixed (masked) region inside the moving image are
    discarded. With ``refine_steps > 0`` the ``top_k`` best are refined by a batched coordinate
    search: each step tries +-half the grid's angle step about each axis (through ``center``) and
    +-``translation_mm`` (default two coarse voxels) along each axis, and halves a candidate's
    steps when no move improves it.
    """
    d = _check_pair(fixed, moving)
    if refine_steps < 0 or top_k < 1 or size < 4 or batch_size < 1:
        raise InputError("rotation_search needs refine_steps >= 0, top_k >= 1, size >= 4 and batch_size >= 1")
    if base is None:
        base = init_center_of_mass(fixed, moving, fixed_mask, moving_mask)
    base = np.asarray(base, dtype=np.float64)
    if base.shape != (d + 1, d + 1):
        raise InputError(f"base must be a ({d + 1}, {d + 1}) matrix, got {base.shape}")
    c = _moments(fixed, fixed_mask, "fixed", order=1).center if center is None else np.asarray(center, dtype=np.float64)
    search = _Search(fixed, moving, fixed_mask, moving_mask, loss, size, min_overlap, batch_size)
    r = rotation_matrices(d, angles_deg)
    about_c = np.tile(np.eye(d + 1), (len(r), 1, 1))
    about_c[:, :d, :d] = r
    about_c[:, :d, d] = c - r @ c
    candidates = base @ about_c
    scores = search.evaluate(candidates)
    if not np.isfinite(scores).any():
        raise InputError(f"no rotation keeps {min_overlap:.0%} of the fixed image inside the moving image; "
                         "check the images' world positions or lower min_overlap")
    keep = np.argsort(scores)[:top_k]
    best, best_scores = candidates[keep], scores[keep]
    angles = np.unique(_default_angles(d) if angles_deg is None else np.asarray(angles_deg, dtype=np.float64))
    angle = 0.5 * (float(np.diff(angles).min()) if len(angles) > 1 else 10.0)
    shift = 2 * float(search.fixed_grid.spacing.max()) if translation_mm is None else float(translation_mm)
    scale = np.ones(len(best))
    for _ in range(refine_steps):
        moves = np.stack([_local_moves(d, c, angle * s, shift * s) for s in scale])  # (K, M, D+1, D+1)
        trials = best[:, None] @ moves
        trial_scores = search.evaluate(trials.reshape(-1, d + 1, d + 1)).reshape(moves.shape[:2])
        choice = np.argmin(trial_scores, axis=1)
        improved = trial_scores[np.arange(len(best)), choice] < best_scores
        best = np.where(improved[:, None, None], trials[np.arange(len(best)), choice], best)
        best_scores = np.minimum(best_scores, trial_scores[np.arange(len(best)), choice])
        scale = np.where(improved, scale, scale / 2)
    return best[int(np.argmin(best_scores))]
