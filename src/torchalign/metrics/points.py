"""Target registration error: distances (mm) between mapped fixed landmarks and moving landmarks."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..functional.sampling import sample_world
from ..grid import Grid
from .overlap import ArrayLike, as_numpy


def inside_extent(points: Tensor, grid: Grid) -> Tensor:
    """``(...)`` mask of ``(..., D)`` world points inside the grid's extent ``[-0.5, n - 0.5)`` voxels
    (half-open, as the sampler and ITK's ``IsInsideBuffer``)."""
    voxels = grid.world_to_voxel(points.double())
    sizes = torch.tensor(grid.shape, dtype=torch.float64, device=points.device)
    return ((voxels >= -0.5) & (voxels < sizes - 0.5)).all(-1)


def require_inside(points: Tensor, grid: Grid, name: str, what: str = "the image") -> None:
    """InputError (listing the first offenders) unless all ``(N, D)`` world points lie inside ``grid``."""
    if points.ndim != 2 or points.shape[1] != grid.ndim:
        raise InputError(f"{name}: expected {grid.ndim}-D points (N, {grid.ndim}), got {tuple(points.shape)}")
    bad = torch.nonzero(~inside_extent(points, grid)).flatten()
    if bad.numel():
        listed = ", ".join(str(int(i)) for i in bad[:10]) + (" ..." if bad.numel() > 10 else "")
        raise InputError(f"{name}: {bad.numel()} of {points.shape[0]} points lie outside {what} {grid} "
                         f"(0-based indices {listed})")


def map_points(points: Tensor, field: Tensor, grid: Grid, name: str = "points") -> Tensor:
    """``p -> p + u(p)`` for ``(N, D)`` world points through a ``(1, D, *S)`` displacement field on ``grid``.

    ``u`` is sampled linearly (in the field's dtype) and added in the points' dtype. Points outside the
    field's grid raise InputError (``name`` says whose).
    """
    if field.ndim != grid.ndim + 2 or field.shape[0] != 1 or field.shape[1] != grid.ndim:
        raise InputError(f"displacement field must be (1, {grid.ndim}, *S), got {tuple(field.shape)}")
    require_inside(points, grid, name, "the displacement field's grid")
    u = sample_world(field, grid, points.to(field.dtype).unsqueeze(0), "linear", "border")  # (1, D, N)
    return points + u[0].T.to(points.dtype)


def tre(mapped: ArrayLike, target: ArrayLike) -> np.ndarray:
    """Euclidean distances ``(N,)`` (mm) between ``(N, D)`` mapped points and ``(N, D)`` targets."""
    a, b = as_numpy(mapped).astype(np.float64), as_numpy(target).astype(np.float64)
    if a.shape != b.shape:
        raise InputError(f"point sets differ: {a.shape[0]} fixed points vs {b.shape[0]} moving points"
                         if a.ndim == b.ndim == 2 and a.shape[1] == b.shape[1]
                         else f"point sets differ in shape: {a.shape} vs {b.shape}")
    if a.ndim != 2 or a.shape[0] == 0:
        raise InputError(f"expected non-empty (N, D) point sets, got {a.shape}")
    return np.linalg.norm(a - b, axis=1)


def tre_summary(distances: np.ndarray) -> dict[str, float | int]:
    """Mean, median, max and population standard deviation (ddof=0) of TRE distances, and ``n``."""
    d = np.asarray(distances, dtype=np.float64)
    return {"tre_mean": float(d.mean()), "tre_median": float(np.median(d)), "tre_max": float(d.max()),
            "tre_std": float(d.std()), "n": int(d.size)}
