"""Cubic B-spline interpolation, as ITK's ``BSplineInterpolateImageFunction`` (order 3, ``sitkBSpline``).

Two steps, both differentiable (w.r.t. the data and the points):

1. :func:`bspline_coefficients` turns samples into B-spline coefficients with the recursive
   causal/anti-causal filter of Unser (pole ``sqrt(3) - 2``), one axis at a time, with ITK's
   mirror boundary (whole-sample symmetric: ``c[-k] = c[k]``) and ITK's initialisation tolerance.
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


def _prefilter_axis(data: Tensor, axis: int) -> Tensor:
    """B-spline coefficients along one axis of ``data`` (any shape); ``axis`` of length n >= 2."""
    z = POLE
    x = data.movedim(axis, 0) * ((1.0 - z) * (1.0 - 1.0 / z))
    n = x.shape[0]
    w = torch.as_tensor(_causal_init_weights(n), dtype=x.dtype, device=x.device)
    causal = [torch.tensordot(w, x, dims=1)]
    for k in range(1, n):
        causal.append(x[k] + z * causal[-1])
    coeffs = [(z / (z * z - 1.0)) * (z * causal[n - 2] + causal[n - 1])]
    for k in range(n - 2, -1, -1):
        coeffs.append(z * (coeffs[-1] - causal[k]))
    return torch.stack(coeffs[::-1]).movedim(0, axis)


def bspline_coefficients(data: Tensor) -> Tensor:
    """Cubic B-spline coefficients of ``(B, C, *S)`` samples (mirror boundary) -> ``(B, C, *S)``.

    Integer data is filtered in float32; an axis of length 1 is left as it is (as in ITK).
    """
    out = data if data.dtype in (torch.float32, torch.float64) else data.float()
    for axis in range(2, data.ndim):
        if data.shape[axis] > 1:
            out = _prefilter_axis(out, axis)
    return out


def _mirror_indices(n: int, pad: int, device: torch.device) -> Tensor:
    """Indices ``-pad .. n-1+pad`` folded into ``[0, n)`` by whole-sample mirroring."""
    idx = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * n - 2
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


def _cubic_weights(t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four cubic B-spline weights for neighbours ``floor-1 .. floor+2`` at fraction ``t``."""
    s = 1.0 - t
    t2 = t * t
    return s * s * s / 6.0, (3.0 * t2 * t - 6.0 * t2 + 4.0) / 6.0, (-3.0 * t2 * t + 3.0 * t2 + 3.0 * t + 1.0) / 6.0, t2 * t / 6.0


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
    for axis, n in enumerate(shape):
        coeffs = coeffs.index_select(2 + axis, _mirror_indices(n, pad, device))

    # Index arithmetic in the points' precision (float64 points keep ITK's double-precision indices).
    pdtype = torch.promote_types(normalized.dtype, dtype)
    voxel_from_norm = torch.as_tensor(np.linalg.inv(normalized_from_voxel(shape)), dtype=pdtype, device=device)
    voxel = apply_matrix(voxel_from_norm, normalized.to(pdtype))
    sizes = torch.tensor(shape, dtype=pdtype, device=device)
    inside = ((voxel >= -0.5) & (voxel < sizes - 0.5)).all(-1)
    if padding == "border":
        voxel = torch.maximum(torch.minimum(voxel, sizes - 1), torch.zeros_like(sizes))
    else:  # keep the lookups inside the padded coefficients; points outside are replaced below
        voxel = torch.maximum(torch.minimum(voxel, sizes - 0.5), torch.full_like(sizes, -0.5))
    base = torch.floor(voxel).detach()
    w0, w1, w2, w3 = _cubic_weights(voxel - base)
    g = ((w0 + w1).to(dtype), (w2 + w3).to(dtype))
    # Positions of the two linear lookups per axis, as indices into the padded coefficients.
    h = (base - 1.0 + w1 / (w0 + w1) + pad, base + 1.0 + w3 / (w2 + w3) + pad)
    norm_from_padded = torch.as_tensor(normalized_from_voxel(tuple(n + 2 * pad for n in shape)), dtype=pdtype,
                                       device=device)
    h = tuple(apply_matrix(norm_from_padded, hi).to(dtype) for hi in h)

    out = None
    for corner in range(2**ndim):
        bits = [(corner >> axis) & 1 for axis in range(ndim)]
        where = torch.stack([h[b][..., axis] for axis, b in enumerate(bits)], dim=-1)
        weight = math.prod(g[b][..., axis] for axis, b in enumerate(bits)).unsqueeze(1)
        term = weight * F.grid_sample(coeffs, _to_grid_sample(where), mode="bilinear", padding_mode="border",
                                      align_corners=True)
        out = term if out is None else out + term
    if padding == "border":
        return out
    value = 0.0 if padding == "zeros" else float(padding)
    return torch.where(inside.unsqueeze(1), out, torch.as_tensor(value, dtype=dtype, device=device))
