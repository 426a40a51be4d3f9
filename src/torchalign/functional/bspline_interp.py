"""Cubic B-spline interpolation, as ITK's ``BSplineInterpolateImageFunction`` (order 3, ``sitkBSpline``).

Two steps, both differentiable (w.r.t. the data and the points):

1. :func:`bspline_coefficients` turns samples into B-spline coefficients with the recursive
   causal/anti-causal filter of Unser (pole ``sqrt(3) - 2``), one axis at a time, with ITK's
   mirror boundary (whole-sample symmetric: ``c[-k] = c[k]``) and ITK's initialisation tolerance.
   The filter is linear, so it is precomputed as an ``(n, n)`` matrix and applied by ``matmul``.
2. :func:`sample_cubic` evaluates the spline by the 2^D linear-lookup trick (Sigg & Hadwiger,
   GPU Gems 2, ch. 20): the 4 weights per axis fold into 2 linear lookups at shifted positions, so
   a 3-D point costs 8 ``grid_sample`` lookups instead of 64 gathers.

Outside handling follows ITK's resampler: a point whose continuous index lies in
``[-0.5, n - 0.5)`` is evaluated (the spline is mirrored about the edge voxel, exactly as ITK does
for B-splines), a point further out takes the padding value. ``padding="border"`` instead clamps the
index to ``[0, n - 1]``, i.e. the edge value everywhere outside.

Points arrive in the normalised coordinates of :mod:`torchalign.functional.sampling` (array-axis
order, ``align_corners=True``); they are turned back into voxel indices here, and the lookups go
through ``grid_sample`` with the same single axis flip as there.
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..grid import apply_matrix
from .sampling import _to_grid_sample, normalized_from_voxel

POLE = math.sqrt(3.0) - 2.0
"""The pole of the cubic B-spline's inverse filter."""
TOLERANCE = 1e-10
"""ITK's ``BSplineDecompositionImageFilter`` tolerance: truncates the causal initial sum."""
_HORIZON = math.ceil(math.log(TOLERANCE) / math.log(abs(POLE)))


def _causal_init_weights(n: int) -> np.ndarray:
    """Weights ``w`` (n,) with ``c+[0] = w . c`` for the mirror boundary (ITK's SetInitialCausalCoefficient)."""
    z = POLE
    if _HORIZON < n:
        w = np.zeros(n)
        w[:_HORIZON] = z ** np.arange(_HORIZON)
        return w
    k = np.arange(n, dtype=np.float64)
    w = z**k + z ** (2 * n - 2 - k)
    w[0], w[n - 1] = 1.0, z ** (n - 1)
    return w / (1.0 - z ** (2 * n - 2))


@functools.lru_cache(maxsize=8)
def prefilter_matrix(n: int) -> np.ndarray:
    """``(n, n)`` float64 matrix (read-only) taking n >= 2 samples to their cubic B-spline coefficients.

    The recursive filter (gain, causal pass, anti-causal pass) is linear, so it is run once in float64
    on the identity; applying it is then one matrix product per axis (exact and differentiable; n
    multiply-adds per voxel, which BLAS does faster than a Python loop over slices for n up to ~1000s).
    """
    z = POLE
    x = np.eye(n) * ((1.0 - z) * (1.0 - 1.0 / z))
    x[0] = _causal_init_weights(n) @ x
    for k in range(1, n):
        x[k] += z * x[k - 1]
    x[n - 1] = (z / (z * z - 1.0)) * (z * x[n - 2] + x[n - 1])
    for k in range(n - 2, -1, -1):
        x[k] = z * (x[k + 1] - x[k])
    x.setflags(write=False)
    return x


def bspline_coefficients(data: Tensor) -> Tensor:
    """Cubic B-spline coefficients of ``(B, C, *S)`` samples (mirror boundary) -> ``(B, C, *S)``.

    Integer data is filtered in float32; an axis of length 1 is left as it is (as in ITK).
    """
    out = data if data.dtype in (torch.float32, torch.float64) else data.float()
    for axis in range(2, data.ndim):
        n = data.shape[axis]
        if n > 1:
            m = torch.tensor(prefilter_matrix(n), dtype=out.dtype, device=out.device)
            out = torch.matmul(out.movedim(axis, -1), m.T).movedim(-1, axis)
    return out


def _mirror_pad(x: Tensor, dim: int, pad: int) -> Tensor:
    """Extend ``x`` by ``pad`` samples at both ends of ``dim`` by whole-sample mirroring (``x[-k] = x[k]``)."""
    n = x.shape[dim]
    idx = torch.cat([torch.arange(-pad, 0), torch.arange(n, n + pad)])
    if n == 1:
        idx = torch.zeros_like(idx)
    else:
        idx = idx.remainder(2 * n - 2)
        idx = torch.where(idx >= n, 2 * n - 2 - idx, idx)
    ends = x.index_select(dim, idx.to(x.device))  # only 2 * pad slices: cheap, unlike a full index_select
    return torch.cat([ends.narrow(dim, 0, pad), x, ends.narrow(dim, pad, pad)], dim=dim)


def _cubic_weights(t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four cubic B-spline weights for neighbours ``floor-1 .. floor+2`` at fraction ``t``."""
    s = 1.0 - t
    t2 = t * t
    t3 = t2 * t
    return s * s * s / 6.0, (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0, (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0, t3 / 6.0


def sample_cubic(data: Tensor, normalized: Tensor, padding: str | float = "zeros") -> Tensor:
    """Cubic B-spline interpolation of ``(B, C, *S)`` data at normalised points ``(B, *Q, D)`` -> ``(B, C, *Q)``.

    ``Q`` has ``D`` dimensions (as ``grid_sample`` needs); ``normalized`` is in array-axis order with
    ``align_corners=True`` (see ``sampling.normalized_from_voxel``). ``padding`` is ``"zeros"``,
    ``"border"`` or a number. The result is floating point (float32 for integer data).
    """
    shape = tuple(data.shape[2:])
    ndim = len(shape)
    coeffs = bspline_coefficients(data)
    dtype, device = coeffs.dtype, coeffs.device
    pad = 2
    for axis in range(ndim):
        coeffs = _mirror_pad(coeffs, 2 + axis, pad)

    # Index arithmetic in the points' precision (float64 points keep ITK's double-precision indices).
    pdtype = torch.promote_types(normalized.dtype, dtype)
    voxel_from_norm = torch.as_tensor(np.linalg.inv(normalized_from_voxel(shape)), dtype=pdtype, device=device)
    voxel = apply_matrix(voxel_from_norm, normalized.to(pdtype))
    sizes = torch.tensor(shape, dtype=pdtype, device=device)
    inside = ((voxel >= -0.5) & (voxel < sizes - 0.5)).all(-1)
    # "border" clamps to the edge voxels; otherwise clamping only keeps the lookups inside the padded
    # coefficients, and points outside are replaced by the padding value below.
    low, high = (torch.zeros_like(sizes), sizes - 1) if padding == "border" else (sizes * 0 - 0.5, sizes - 0.5)
    voxel = torch.maximum(torch.minimum(voxel, high), low)
    base = torch.floor(voxel).detach()
    t = (voxel - base).to(dtype)
    base = base.to(dtype)
    w0, w1, w2, w3 = _cubic_weights(t)
    g = (w0 + w1, w2 + w3)
    # Per axis, two linear lookups at floor-1+w1/g0 and floor+1+w3/g1 (indices into the padded
    # coefficients, then their normalised coordinates) replace the four taps.
    norm_from_padded = normalized_from_voxel(tuple(n + 2 * pad for n in shape))
    scale = torch.tensor(np.diag(norm_from_padded)[:ndim], dtype=dtype, device=device)
    shift = torch.tensor(norm_from_padded[:ndim, ndim], dtype=dtype, device=device)
    h0 = _to_grid_sample((base + (pad - 1.0) + w1 / g[0]) * scale + shift)
    h1 = _to_grid_sample((base + (pad + 1.0) + w3 / g[1]) * scale + shift)
    del w0, w2, t, base

    out = torch.zeros(coeffs.shape[:2] + normalized.shape[1:-1], dtype=dtype, device=device)
    for corner in itertools.product((0, 1), repeat=ndim):
        upper = torch.tensor(corner, dtype=torch.bool, device=device)
        weight = math.prod(g[b][..., axis] for axis, b in enumerate(corner)).unsqueeze(1)
        value = F.grid_sample(coeffs, torch.where(_to_grid_sample(upper), h1, h0), mode="bilinear",
                              padding_mode="border", align_corners=True)
        out.addcmul_(weight, value)
    if padding == "border":
        return out
    fill = 0.0 if padding == "zeros" else float(padding)
    return torch.where(inside.unsqueeze(1), out, torch.as_tensor(fill, dtype=dtype, device=device))
