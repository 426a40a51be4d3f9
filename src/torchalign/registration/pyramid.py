"""Gaussian image pyramids that keep the world extent (smooth in mm, then shrink the grid per axis).

A level asks for voxels of a size in mm (the same on every axis); each axis is shrunk towards it
according to its own spacing, is never refined, and keeps at least ``MIN_VOXELS`` voxels (or all it
has), so a thick-slice or slab axis is left alone while the in-plane axes shrink.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from ..functional.filters import gaussian_smooth
from ..grid import Grid
from ..image import Image
from ..resample import resample


MIN_VOXELS = 8
"""No pyramid level shrinks an axis below this many voxels."""


def shrink_factors(grid: Grid, spacing_mm: float, min_voxels: int = MIN_VOXELS) -> np.ndarray:
    """Per-axis shrink factors ``(D,)`` >= 1 towards voxels of ``spacing_mm``, keeping ``min_voxels``."""
    wanted = np.maximum(1.0, spacing_mm / grid.spacing)
    cap = np.maximum(1.0, np.asarray(grid.shape, dtype=np.float64) / min_voxels)
    return np.minimum(wanted, cap)


def pyramid_grid(grid: Grid, spacing_mm: float, min_voxels: int = MIN_VOXELS) -> Grid:
    """``grid`` shrunk per axis by :func:`shrink_factors` (same world extent)."""
    return grid.downsample(shrink_factors(grid, spacing_mm, min_voxels))


def level_spacing(grid: Grid, shrink: float, spacing: float | None) -> float:
    """A level's voxel size in mm: ``spacing`` when given, else ``shrink`` times the finest spacing."""
    return float(spacing) if spacing is not None else float(shrink * grid.spacing.min())


def level_grid(grid: Grid, spacing_mm: Sequence[float]) -> Grid:
    """``grid`` shrunk so its voxels are about ``spacing_mm`` per axis (never finer than the original)."""
    factors = np.maximum(1.0, np.asarray(spacing_mm, dtype=np.float64) / grid.spacing)
    return grid.downsample(factors)


def smooth_and_shrink(image: Image, target: Grid, sigma_mm: float | Sequence[float]) -> Image:
    """Smooth ``image`` with a Gaussian of ``sigma_mm`` (per world-aligned voxel axis), resample onto ``target``."""
    sigma_vox = np.broadcast_to(np.asarray(sigma_mm, dtype=np.float64), (image.ndim,)) / image.grid.spacing
    data = image.data
    if target.same_as(image.grid.resize(target.shape), atol=1e-9) and data.is_floating_point():
        return Image(_smooth_and_shrink_axes(data, target.shape, sigma_vox.tolist()), target, dict(image.meta))
    if np.any(sigma_vox > 0):
        data = gaussian_smooth(data, sigma_vox.tolist())
    smoothed = image.with_data(data)
    if target.same_as(image.grid, atol=1e-9):
        return smoothed
    return resample(smoothed, target, interp="linear", padding="border")


def _smooth_and_shrink_axes(data: Tensor, shape: tuple[int, ...], sigma_vox: list[float]) -> Tensor:
    """Smooth and linearly shrink ``(B, C, *S)`` onto the same extent with ``shape`` voxels, one axis
    at a time: both operations are separable, so this equals smoothing the whole volume first, and
    each later axis is smoothed on a volume already shrunk along the earlier ones."""
    mode = ("linear", "bilinear", "trilinear")[data.ndim - 3]
    for axis, sigma in enumerate(sigma_vox):
        if sigma > 0:
            data = gaussian_smooth(data, [sigma if i == axis else 0.0 for i in range(len(shape))])
        if data.shape[2 + axis] != shape[axis]:
            size = [*data.shape[2:2 + axis], shape[axis], *data.shape[3 + axis:]]
            data = F.interpolate(data, size=size, mode=mode, align_corners=False)
    return data
