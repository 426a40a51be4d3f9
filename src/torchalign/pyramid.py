"""Gaussian image pyramids that keep the world extent (smooth in voxels, then shrink the grid)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .functional.filters import gaussian_smooth
from .grid import Grid
from .image import Image
from .resample import resample


def level_grid(grid: Grid, spacing_mm: Sequence[float]) -> Grid:
    """``grid`` shrunk so its voxels are about ``spacing_mm`` per axis (never finer than the original)."""
    factors = np.maximum(1.0, np.asarray(spacing_mm, dtype=np.float64) / grid.spacing)
    return grid.downsample(factors)


def smooth_and_shrink(image: Image, target: Grid, sigma_mm: float | Sequence[float]) -> Image:
    """Smooth ``image`` with a Gaussian of ``sigma_mm`` (per world-aligned voxel axis), resample onto ``target``."""
    sigma_vox = np.broadcast_to(np.asarray(sigma_mm, dtype=np.float64), (image.ndim,)) / image.grid.spacing
    data = image.data
    if np.any(sigma_vox > 0):
        data = gaussian_smooth(data, sigma_vox.tolist())
    smoothed = image.with_data(data)
    if target.same_as(image.grid, atol=1e-9):
        return smoothed
    return resample(smoothed, target, interp="linear", padding="border")
