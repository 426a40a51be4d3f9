"""Cubic B-spline free-form deformations: control lattices, evaluation, derivatives, bending energy.

A control lattice is a :class:`~torchalign.grid.Grid` whose "voxels" are the control points: it is
aligned with the image axes, spaced ``control_spacing_mm`` apart, centred on the image's voxel
centres and extends one control point beyond each side (so every voxel centre has a full 4^D
support). Coefficients ``(B, C, *L)`` are values at the control points (for an FFD: mm along world
axes); outside the lattice missing control points count as zero, so the spline decays smoothly.

Evaluation on a grid whose axes are parallel to the lattice's is separable: along each axis the
spline is a banded ``(n, L)`` matrix of basis values, applied with one ``einsum`` per axis. This is
exact for any control spacing (integer multiple of the voxel spacing or not), runs on BLAS and
differentiates cheaply. At other points, values take 2^D linear lookups and derivatives a
4^D-neighbour gather.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..grid import Grid, apply_matrix
from .sampling import sample_world

_LETTERS = "abcdefgh"
_PAD = 4  # zero control points around the lattice: enough for base indices clamped to [-3, L + 1]


def control_grid(grid: Grid, spacing_mm: float | Sequence[float]) -> Grid:
    """Control lattice for ``grid`` with control points ``spacing_mm`` apart (per image axis).

    The lattice is aligned with the image axes, centred on the box of voxel centres, covers it and
    has one more control point beyond each side.
    """
    d = grid.ndim
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (d,)).copy()
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"control_spacing_mm must be positive, got {spacing.tolist()}")
    step = spacing / grid.spacing  # control spacing in voxels
    span = np.asarray(grid.shape, dtype=np.float64) - 1
    intervals = np.maximum(1, np.ceil(span / step - 1e-9)).astype(int)
    first = (span - intervals * step) / 2 - step  # voxel position of control point 0
    voxel_from_lattice = np.eye(d + 1)
    voxel_from_lattice[:d, :d] = np.diag(step)
    voxel_from_lattice[:d, d] = first
    return Grid((intervals + 3).tolist(), grid.world_from_voxel @ voxel_from_lattice)


def bspline_basis(fraction: Tensor, derivative: int = 0) -> Tensor:
    """Uniform cubic B-spline weights ``(..., 4)`` for ``fraction`` in [0, 1).

    A point at lattice coordinate ``i + fraction`` takes weight ``[..., a]`` from control point
    ``i - 1 + a``. ``derivative`` (0, 1 or 2) differentiates with respect to the lattice coordinate.
    """
    t = fraction
    if derivative == 0:
        w = [(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3]
        return torch.stack(w, -1) / 6
    if derivative == 1:
        w = [-((1 - t) ** 2), 3 * t**2 - 4 * t, -3 * t**2 + 2 * t + 1, t**2]
        return torch.stack(w, -1) / 2
    if derivative == 2:
        return torch.stack([1 - t, 3 * t - 2, 1 - 3 * t, t], -1)
    raise InputError(f"derivative must be 0, 1 or 2, got {derivative}")


def _support(coords: Tensor, size: int, derivative: int) -> tuple[Tensor, Tensor]:
    """Indices ``(..., 4)`` (clamped) and weights ``(..., 4)`` (zero outside the lattice) along one axis."""
    base = torch.floor(coords)
    weights = bspline_basis(coords - base, derivative)
    index = base.long().unsqueeze(-1) - 1 + torch.arange(4, device=coords.device)
    inside = (index >= 0) & (index < size)
    return index.clamp(0, size - 1), weights * inside


def basis_matrix(coords: Tensor, size: int, derivative: int = 0) -> Tensor:
    """``(n, size)`` matrix evaluating a 1-D spline with ``size`` coefficients at lattice ``coords`` (n,)."""
    index, weights = _support(coords, size, derivative)
    out = torch.zeros(coords.shape[0], size, dtype=coords.dtype, device=coords.device)
    return out.scatter_add_(1, index, weights)


def _check_coeffs(coeffs: Tensor, lattice: Grid) -> None:
    if coeffs.ndim != lattice.ndim + 2 or tuple(coeffs.shape[2:]) != lattice.shape:
        raise InputError(f"coeffs must be (B, C, *{lattice.shape}), got {tuple(coeffs.shape)}")


def _axis_map(lattice: Grid, grid: Grid) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-axis scale and offset with ``lattice coord = scale * voxel + offset``, or None if not separable."""
    d = grid.ndim
    m = lattice.voxel_from_world @ grid.world_from_voxel
    linear = m[:d, :d]
    if np.abs(linear - np.diag(np.diag(linear))).max() > 1e-9 * np.abs(linear).max():
        return None
    return np.diag(linear).copy(), m[:d, d].copy()


def _separable(coeffs: Tensor, matrices: Sequence[Tensor]) -> Tensor:
    """Apply one ``(n_k, L_k)`` matrix per spatial axis of ``coeffs (B, C, *L)`` -> ``(B, C, *n)``."""
    d = len(matrices)
    out = coeffs
    for k, mat in enumerate(matrices):
        axes = _LETTERS[:d]
        src = "yz" + axes
        dst = "yz" + axes[:k] + "w" + axes[k + 1:]
        out = torch.einsum(f"w{axes[k]},{src}->{dst}", mat.to(out.dtype), out)
    return out


def evaluate_bspline(coeffs: Tensor, lattice: Grid, grid: Grid, derivative: Sequence[int] | None = None) -> Tensor:
    """Spline (or a partial derivative w.r.t. lattice coordinates) at the voxel centres of ``grid``.

    ``coeffs (B, C, *L)`` on ``lattice`` -> ``(B, C, *S)``. ``derivative`` gives the order (0-2) per
    lattice axis. Separable (a matrix per axis) when ``grid`` is axis-parallel to the lattice.
    """
    _check_coeffs(coeffs, lattice)
    if grid.ndim != lattice.ndim:
        raise InputError(f"grid is {grid.ndim}-D but the lattice is {lattice.ndim}-D")
    orders = tuple(derivative) if derivative is not None else (0,) * grid.ndim
    if len(orders) != grid.ndim:
        raise InputError(f"derivative needs one order per axis ({grid.ndim}), got {orders}")
    mapping = _axis_map(lattice, grid)
    if mapping is None:
        points = grid.points(dtype=torch.float64, device=coeffs.device).unsqueeze(0)
        return evaluate_bspline_points(coeffs, lattice, points, orders)
    scale, offset = mapping
    dtype = coeffs.dtype if coeffs.is_floating_point() else torch.float32
    mats = []
    for k, (n, size) in enumerate(zip(grid.shape, lattice.shape)):
        coords = torch.arange(n, dtype=torch.float64, device=coeffs.device) * scale[k] + offset[k]
        mats.append(basis_matrix(coords, size, orders[k]).to(dtype))
    return _separable(coeffs, mats)


def evaluate_bspline_points(coeffs: Tensor, lattice: Grid, points: Tensor,
                            derivative: Sequence[int] | None = None) -> Tensor:
    """Spline (or a lattice-coordinate partial derivative) at world ``points (B|1, *Q, D)`` -> ``(B, C, *Q)``.

    Values take 2^D linear lookups per point (:func:`_linear_lookups`); derivatives gather the 4^D
    control points. The lattice is zero-padded by ``_PAD`` so that one base index plus constant
    offsets addresses every neighbour, and points far outside (clamped into the padding) read zeros.
    """
    _check_coeffs(coeffs, lattice)
    d = lattice.ndim
    if points.ndim < 2 or points.shape[-1] != d:
        raise InputError(f"points must be (B, ..., {d}), got {tuple(points.shape)}")
    b, c = coeffs.shape[:2]
    if points.shape[0] not in (1, b) and b != 1:
        raise InputError(f"batch sizes differ: coeffs {b}, points {points.shape[0]}")
    orders = tuple(derivative) if derivative is not None else (0,) * d
    if not any(orders):
        return _linear_lookups(coeffs, lattice, points)
    dtype = coeffs.dtype
    nb = max(b, points.shape[0])
    coords = apply_matrix(lattice.voxel_from_world, points.to(torch.float64)).reshape(points.shape[0], -1, d)
    padded = F.pad(coeffs, [_PAD] * (2 * d))
    sizes = padded.shape[2:]
    strides = [math.prod(sizes[k + 1:]) for k in range(d)]
    table = padded.reshape(b, c, -1).transpose(1, 2).reshape(-1, c)  # (B * N, C) rows of control points
    flat = torch.zeros(coords.shape[:2], dtype=torch.long, device=coeffs.device)
    weights = []
    for k in range(d):
        base = torch.floor(coords[..., k])
        weights.append(bspline_basis(coords[..., k] - base, orders[k]).to(dtype))
        start = base.clamp(-3, lattice.shape[k] + 1).long() - 1 + _PAD
        flat = flat + start * strides[k]
    rows = flat + (torch.arange(b, device=coeffs.device) * table.shape[0] // b).reshape(-1, 1)  # (nb, Q)
    out = None
    for combo in product(range(4), repeat=d):
        offset = sum(a * strides[k] for k, a in enumerate(combo))
        weight = math.prod(weights[k][..., a] for k, a in enumerate(combo))
        term = F.embedding(rows + offset, table) * weight.unsqueeze(-1)
        out = term if out is None else out + term
    assert out is not None
    return out.expand(nb, -1, -1).movedim(-1, 1).reshape(nb, c, *points.shape[1:-1])


def _linear_lookups(coeffs: Tensor, lattice: Grid, points: Tensor) -> Tensor:
    """Spline values at world ``points`` by 2^D linear interpolations (Sigg & Hadwiger, GPU Gems 2, ch. 20).

    Per axis the weights ``w0..w3`` of control points ``i-1..i+2`` fold into two linear lookups,
    ``(w0 + w1)`` at ``i - 1 + w1 / (w0 + w1)`` and ``(w2 + w3)`` at ``i + 1 + w3 / (w2 + w3)`` (both
    sums are >= 1/6). Exact, and ~5x faster than 4^D gathers for dense point sets on CPU.
    """
    d = lattice.ndim
    dtype = coeffs.dtype  # float32 lattice coordinates are within 1e-5 of a control spacing here
    padded = F.pad(coeffs, [_PAD] * (2 * d))
    padded_grid = lattice.crop([-_PAD] * d, padded.shape[2:])
    coords = apply_matrix(lattice.voxel_from_world, points.to(dtype))
    upper = torch.tensor(lattice.shape, dtype=dtype, device=coords.device) + 1.5
    coords = torch.minimum(coords.clamp_min(-2.5), upper)  # beyond: every lookup reads the zero padding
    base = torch.floor(coords)
    f = coords - base
    w1 = (3 * f**3 - 6 * f**2 + 4) / 6
    g0 = (1 - f) ** 3 / 6 + w1
    g1 = 1 - g0
    lookups = (base - 1 + w1 / g0, base + 1 + f**3 / (6 * g1))
    weights = (g0, g1)
    # world position of a lookup = origin + sum_k column_k * lattice coordinate_k, per axis and side
    world_from_lattice = torch.tensor(lattice.world_from_voxel, dtype=dtype, device=coords.device)
    parts = [[lookups[a][..., k, None] * world_from_lattice[:d, k] for k in range(d)] for a in range(2)]
    origin = world_from_lattice[:d, d]
    out = None
    for combo in product((0, 1), repeat=d):
        where = origin + sum(parts[a][k] for k, a in enumerate(combo))
        weight = math.prod(weights[a][..., k] for k, a in enumerate(combo))
        term = weight.unsqueeze(1) * sample_world(padded, padded_grid, where, "linear", "border")
        out = term if out is None else out + term
    assert out is not None
    return out


def _lattice_from_world_linear(lattice: Grid) -> np.ndarray:
    d = lattice.ndim
    return lattice.voxel_from_world[:d, :d]


def bspline_gradient(coeffs: Tensor, lattice: Grid, grid: Grid) -> Tensor:
    """Exact world-mm first derivatives at the voxel centres of ``grid``: ``(B, C, D, *S)``, ``[:, c, j] = d/dx_j``."""
    d = lattice.ndim
    m = _lattice_from_world_linear(lattice)
    lattice_derivs = [evaluate_bspline(coeffs, lattice, grid, [int(i == k) for i in range(d)]) for k in range(d)]
    return torch.stack([sum(float(m[k, j]) * lattice_derivs[k] for k in range(d)) for j in range(d)], 2)


def bspline_hessian(coeffs: Tensor, lattice: Grid, grid: Grid) -> Tensor:
    """Exact world-mm second derivatives at the voxel centres of ``grid``: ``(B, C, D, D, *S)``."""
    d = lattice.ndim
    m = _lattice_from_world_linear(lattice)
    h = {}
    for k in range(d):
        for q in range(k, d):
            orders = [0] * d
            orders[k] += 1
            orders[q] += 1
            h[k, q] = h[q, k] = evaluate_bspline(coeffs, lattice, grid, orders)
    rows = []
    for j in range(d):
        rows.append(torch.stack([sum(float(m[k, j] * m[q, l]) * h[k, q] for k in range(d) for q in range(d))
                                 for l in range(d)], 2))
    return torch.stack(rows, 2)


_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(4)  # exact for degree <= 7


def _gram(size: int, lo: float, hi: float, p: int, q: int) -> np.ndarray:
    """``G[j, k] = integral over [lo, hi] of B_j^(p)(t) B_k^(q)(t) dt`` for the 1-D lattice basis (exact)."""
    knots = np.concatenate([[lo], np.arange(math.floor(lo) + 1, math.ceil(hi)), [hi]])
    a, b = knots[:-1], knots[1:]
    keep = b > a
    a, b = a[keep], b[keep]
    t = ((b - a)[:, None] * (_GAUSS_NODES[None, :] + 1) / 2 + a[:, None]).ravel()
    w = ((b - a)[:, None] / 2 * _GAUSS_WEIGHTS[None, :]).ravel()
    coords = torch.from_numpy(t)
    bp = basis_matrix(coords, size, p).numpy()
    bq = basis_matrix(coords, size, q).numpy()
    return bp.T @ (w[:, None] * bq)


def bending_energy(coeffs: Tensor, lattice: Grid, region: Grid | None = None) -> Tensor:
    """Analytic mean bending energy of the spline, ``(B,)``.

    The integral of ``sum_c sum_{j,l} (d^2 u_c / dx_j dx_l)^2`` (world mm, cross terms counted twice)
    over the box spanned by the voxel centres of ``region`` (default: the lattice's fully supported
    box), divided by the box volume. Computed exactly from the coefficients with 1-D Gram matrices
    of basis second derivatives (Gauss-Legendre quadrature, exact for these polynomials).
    """
    _check_coeffs(coeffs, lattice)
    d = lattice.ndim
    if region is None:
        lo = np.ones(d)
        hi = np.asarray(lattice.shape, dtype=np.float64) - 2
    else:
        if _axis_map(lattice, region) is None:
            raise InputError("region must be axis-parallel to the control lattice")
        corners = np.array(list(product(*[(0, n - 1) for n in region.shape])), dtype=np.float64)
        coords = apply_matrix(lattice.voxel_from_world @ region.world_from_voxel, torch.from_numpy(corners)).numpy()
        lo, hi = coords.min(0), coords.max(0)
    if np.any(hi <= lo):
        raise InputError("the integration region is empty along at least one axis")
    m = _lattice_from_world_linear(lattice)
    p = m @ m.T  # (dt/dx)(dt/dx)^T: metric coupling lattice-coordinate second derivatives
    grams = {(k, a, b): torch.as_tensor(_gram(lattice.shape[k], lo[k], hi[k], a, b), dtype=coeffs.dtype,
                                        device=coeffs.device)
             for k in range(d) for a in range(3) for b in range(3)}

    def orders(k: int, q: int) -> list[int]:
        o = [0] * d
        o[k] += 1
        o[q] += 1
        return o

    total = coeffs.new_zeros(coeffs.shape[0])
    pairs = [(k, q) for k in range(d) for q in range(d)]
    for (k, q), (r, s) in product(pairs, pairs):
        weight = float(p[k, r] * p[q, s])
        if abs(weight) < 1e-15 * np.abs(p).max() ** 2:
            continue
        left, right = orders(k, q), orders(r, s)
        mats = [grams[axis, left[axis], right[axis]] for axis in range(d)]
        total = total + weight * (coeffs * _separable(coeffs, mats)).flatten(1).sum(1)
    # total is the integral in lattice coordinates; the mean over the same box needs no Jacobian.
    return total / float(np.prod(hi - lo))
