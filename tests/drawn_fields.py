"""Known deformations for tests: a smooth drawn field, its inverse and the warped image, all with
numpy/scipy only (none of torchalign's sampling), so a registration can be scored against the truth."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def draw_field(shape: tuple[int, ...], spacing: np.ndarray, smooth_mm: float, max_mm: float,
               seed: int) -> np.ndarray:
    """A smooth random displacement ``(D, *S)`` in mm along the voxel axes, ``max_mm`` at its largest."""
    rng = np.random.default_rng(seed)
    sigma = smooth_mm / np.asarray(spacing, dtype=np.float64)
    # periodic filtering: the same variance everywhere (edge padding would make the corners dominate)
    u = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap") for _ in shape])
    return u * (max_mm / np.abs(u).max())


def jacobian_det(u: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """det of ``I + du/dx`` (central differences in mm) for a field ``(D, *S)`` along the voxel axes."""
    d = u.shape[0]
    grads = [[np.gradient(u[i], spacing[j], axis=j) + (i == j) for j in range(d)] for i in range(d)]
    return np.linalg.det(np.moveaxis(np.array(grads), (0, 1), (-2, -1)))


def sample(volume: np.ndarray, u: np.ndarray, spacing: np.ndarray, order: int = 1) -> np.ndarray:
    """``volume`` at ``x + u(x)`` for every voxel centre ``x`` (u in mm along the voxel axes), edge-padded."""
    idx = np.indices(volume.shape, dtype=np.float64)
    coords = idx + u / np.asarray(spacing, dtype=np.float64).reshape(-1, *[1] * volume.ndim)
    return ndimage.map_coordinates(volume, coords, order=order, mode="nearest")


def invert(u: np.ndarray, spacing: np.ndarray, iterations: int = 40) -> np.ndarray:
    """The inverse displacement ``v`` with ``v(y) = -u(y + v(y))``, by fixed-point iteration."""
    v = -u.copy()
    for _ in range(iterations):
        v = -np.stack([sample(u[i], v, spacing) for i in range(u.shape[0])])
    return v
