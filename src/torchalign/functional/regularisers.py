"""Smoothness penalties of world-mm displacement fields ``(B, D, *S)`` on a Grid -> ``(B,)``.

Each penalty is the mean over voxels of an energy density summed over components. Derivatives
are compact central differences on the interior voxels (as MONAI's ``BendingEnergyLoss`` and
``DiffusionLoss``): first derivatives ``(u[i+1] - u[i-1]) / 2``, second ``u[i+1] - 2u[i] + u[i-1]``
and the 4-point mixed stencil, exact for quadratics, so every axis needs at least 3 voxels. They
are taken along voxel axes and converted to world mm with ``M = dv/dx`` (the linear part of
``voxel_from_world``): squared norms only need the metric ``P = M M^T`` (diagonal ``1/spacing^2``
for orthonormal directions), so the common case costs one stencil per term.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations_with_replacement

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..grid import Grid
from .filters import gaussian_smooth
from .jacobian import jacobian_det

Pair = tuple[int, int]


def _check(disp: Tensor, grid: Grid) -> None:
    d = grid.ndim
    if disp.ndim != d + 2 or disp.shape[1] != d or tuple(disp.shape[2:]) != grid.shape:
        raise InputError(f"disp must be (B, {d}, *{grid.shape}) on its grid, got {tuple(disp.shape)}")
    if not disp.is_floating_point():
        raise InputError(f"disp must be a floating-point tensor, got {disp.dtype}")
    if min(grid.shape) < 3:
        raise InputError(f"regularisers need at least 3 voxels per axis, got grid shape {grid.shape}")


def _metric(grid: Grid) -> np.ndarray:
    m = grid.voxel_from_world[: grid.ndim, : grid.ndim]
    p = m @ m.T
    p[np.abs(p) < 1e-12 * np.abs(p).max()] = 0.0
    return p


def _shifted(u: Tensor, shifts: dict[int, int]) -> Tensor:
    """Interior view of ``u`` shifted by ``shifts[k]`` (-1, 0, +1) voxels along spatial axis k."""
    index = [slice(None), slice(None)]
    for k in range(u.ndim - 2):
        s = shifts.get(k, 0)
        index.append(slice(1 + s, u.shape[k + 2] - 1 + s))
    return u[tuple(index)]


def _first(u: Tensor, k: int) -> Tensor:
    """``du/dv_k`` on the interior: ``(B, D, *(S - 2))``."""
    return (_shifted(u, {k: 1}) - _shifted(u, {k: -1})) / 2


def _second(u: Tensor, pair: Pair) -> Tensor:
    """``d2u/dv_k dv_q`` on the interior with compact stencils: ``(B, D, *(S - 2))``."""
    k, q = pair
    if k == q:
        return _shifted(u, {k: 1}) - 2 * _shifted(u, {}) + _shifted(u, {k: -1})
    return (_shifted(u, {k: 1, q: 1}) - _shifted(u, {k: 1, q: -1})
            - _shifted(u, {k: -1, q: 1}) + _shifted(u, {k: -1, q: -1})) / 4


def _mean_inner(a: Tensor, b: Tensor) -> Tensor:
    """Mean over voxels of the component-wise inner product: ``(B,)``."""
    return (a * b).flatten(1).sum(1) / a[0, 0].numel()


def _orderings(pair: Pair) -> list[Pair]:
    k, q = pair
    return [(k, q)] if k == q else [(k, q), (q, k)]


def diffusion(disp: Tensor, grid: Grid) -> Tensor:
    """Mean of ``sum_ij (du_i/dx_j)^2`` (world mm): ``(B,)``. ``u = A x`` gives ``sum(A^2)``."""
    _check(disp, grid)
    p = _metric(grid)
    d = grid.ndim
    total = disp.new_zeros(disp.shape[0])
    for k in range(d):
        gk = _first(disp, k)
        total = total + p[k, k] * _mean_inner(gk, gk)
        for q in range(k + 1, d):
            if p[k, q] != 0:
                total = total + 2 * p[k, q] * _mean_inner(gk, _first(disp, q))
    return total


def bending_energy(disp: Tensor, grid: Grid) -> Tensor:
    """Mean of ``sum_i sum_{j,l} (d2u_i/dx_j dx_l)^2`` (cross terms counted twice): ``(B,)``."""
    _check(disp, grid)
    p = _metric(grid)
    pairs = list(combinations_with_replacement(range(grid.ndim), 2))

    def weight(a: Pair, b: Pair) -> float:
        return float(sum(p[k, r] * p[q, s] for k, q in _orderings(a) for r, s in _orderings(b)))

    total = disp.new_zeros(disp.shape[0])
    for n, a in enumerate(pairs):
        ha = _second(disp, a)
        total = total + weight(a, a) * _mean_inner(ha, ha)
        for b in pairs[n + 1:]:
            w = weight(a, b)
            if w != 0:
                total = total + 2 * w * _mean_inner(ha, _second(disp, b))
    return total


def curvature(disp: Tensor, grid: Grid) -> Tensor:
    """Mean of ``sum_i (Laplacian u_i)^2`` (world mm): ``(B,)``."""
    _check(disp, grid)
    p = _metric(grid)
    laplacian: Tensor | None = None
    for k, q in combinations_with_replacement(range(grid.ndim), 2):
        c = p[k, q] * (1 if k == q else 2)
        if c != 0:
            term = c * _second(disp, (k, q))
            laplacian = term if laplacian is None else laplacian + term
    assert laplacian is not None
    return _mean_inner(laplacian, laplacian)


def linear_elasticity(disp: Tensor, grid: Grid, mu: float = 1.0, lam: float = 1.0) -> Tensor:
    """Mean linear-elastic energy ``mu sum_ij e_ij^2 + lam/2 (tr e)^2``, ``e = (grad u + grad u^T)/2``: ``(B,)``.

    Zero for translations and for the linearisation ``u = W x`` (W skew) of a small rotation.
    """
    _check(disp, grid)
    if mu < 0 or lam < 0:
        raise InputError(f"mu and lam must be >= 0, got mu={mu}, lam={lam}")
    d = grid.ndim
    m = grid.voxel_from_world[:d, :d]
    voxel = [_first(disp, k) for k in range(d)]
    # columns[j][:, i] = du_i/dx_j
    columns = [sum(float(m[k, j]) * voxel[k] for k in range(d) if m[k, j] != 0) for j in range(d)]
    trace = sum(columns[i][:, i] for i in range(d))
    squares = sum(columns[i][:, i] ** 2 for i in range(d))
    for i in range(d):
        for j in range(i + 1, d):
            squares = squares + (columns[j][:, i] + columns[i][:, j]) ** 2 / 2
    density = mu * squares + lam / 2 * trace**2
    return density.flatten(1).mean(1)


def folding(disp: Tensor, grid: Grid, threshold: float = 0.0) -> Tensor:
    """Mean of ``relu(threshold - det J)^2`` over voxels: ``(B,)``; 0 when ``det J >= threshold`` everywhere."""
    _check(disp, grid)
    return torch.relu(threshold - jacobian_det(disp, grid)).square().flatten(1).mean(1)


def smooth_field(disp: Tensor, grid: Grid, sigma_mm: float | Sequence[float]) -> Tensor:
    """Gaussian smoothing of a field ``(B, D, *S)`` with ``sigma_mm`` in world mm (one or per axis).

    The implicit regularisation of ANTs' SyN / FireANTs (smooth the update or the field).
    """
    d = grid.ndim
    sigma = np.broadcast_to(np.asarray(sigma_mm, dtype=np.float64), (d,))
    if not np.all(np.isfinite(sigma)) or np.any(sigma < 0):
        raise InputError(f"sigma_mm must be finite and >= 0, got {np.asarray(sigma_mm).tolist()}")
    if disp.ndim != d + 2 or tuple(disp.shape[2:]) != grid.shape:
        raise InputError(f"disp must be (B, C, *{grid.shape}) on its grid, got {tuple(disp.shape)}")
    return gaussian_smooth(disp, (sigma / grid.spacing).tolist())
