"""Gaussian image pyramids that keep the world extent (smooth in voxels, then shrink the grid)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from ..functional.filters import gaussian_smooth
from ..grid import Grid
from ..image import Image
from ..resample import resample


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
