"""Jacobians of ``x -> x + u(x)`` for world-mm displacement fields ``(B, D, *S)`` on a Grid.

Derivatives are finite differences along the voxel axes (central inside, one-sided at the
borders: :func:`~torchalign.functional.filters.spatial_gradient`), chained through the linear part
of ``grid.voxel_from_world`` so that anisotropic and oblique grids give world-mm derivatives:
``du_i/dx_j = sum_k du_i/dv_k * dv_k/dx_j``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InputError
from ..grid import Grid
from .filters import spatial_gradient


def _check_disp(disp: Tensor, grid: Grid) -> None:
    d = grid.ndim
    if disp.ndim != d + 2 or disp.shape[1] != d or tuple(disp.shape[2:]) != grid.shape:
        raise InputError(f"disp must be (B, {d}, *{grid.shape}) on its grid, got {tuple(disp.shape)}")
    if not disp.is_floating_point():
        raise InputError(f"disp must be a floating-point tensor, got {disp.dtype}")


def _world_gradient(disp: Tensor, grid: Grid) -> list[list[Tensor]]:
    """``g[i][j] = du_i/dx_j``, each ``(B, *S)``."""
    _check_disp(disp, grid)
    d = grid.ndim
    voxel = spatial_gradient(disp)  # (B, D_component, D_voxel, *S)
    m = grid.voxel_from_world[:d, :d]  # dv_k / dx_j
    rows = []
    for i in range(d):
        row = []
        for j in range(d):
            terms = [float(m[k, j]) * voxel[:, i, k] for k in range(d) if m[k, j] != 0]
            row.append(sum(terms[1:], terms[0]))
        rows.append(row)
    return rows


def jacobian_matrix(disp: Tensor, grid: Grid) -> Tensor:
    """Jacobian of ``x -> x + u(x)`` w.r.t. world mm: ``(B, *S, D, D)``, ``[..., i, j] = d(x + u)_i/dx_j``."""
    g = _world_gradient(disp, grid)
    d = grid.ndim
    return torch.stack([torch.stack([g[i][j] + float(i == j) for j in range(d)], -1) for i in range(d)], -2)


def jacobian_det(disp: Tensor, grid: Grid) -> Tensor:
    """Determinant of the Jacobian of ``x -> x + u(x)``: ``(B, *S)`` (< 0 where the map folds)."""
    g = _world_gradient(disp, grid)
    d = grid.ndim
    j = [[g[r][c] + 1 if r == c else g[r][c] for c in range(d)] for r in range(d)]
    if d == 2:
        return j[0][0] * j[1][1] - j[0][1] * j[1][0]
    return (j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
            - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
            + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0]))


def curl(disp: Tensor, grid: Grid) -> Tensor:
    """Curl of ``u`` in world mm: ``(B, 3, *S)`` in 3-D, the scalar ``du_1/dx_0 - du_0/dx_1`` ``(B, *S)`` in 2-D."""
    g = _world_gradient(disp, grid)
    if grid.ndim == 2:
        return g[1][0] - g[0][1]
    return torch.stack([g[2][1] - g[1][2], g[0][2] - g[2][0], g[1][0] - g[0][1]], 1)
