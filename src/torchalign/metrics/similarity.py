"""Image similarity for evaluation (not the losses): NCC and mutual information, in NumPy."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .overlap import ArrayLike, as_numpy


def _pair(a: ArrayLike, b: ArrayLike, mask: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    x, y = as_numpy(a).astype(np.float64), as_numpy(b).astype(np.float64)
    if x.shape != y.shape:
        raise InputError(f"images differ in shape: {x.shape} vs {y.shape}; resample onto one grid first")
    if mask is not None:
        m = np.broadcast_to(as_numpy(mask).astype(bool), x.shape)
        x, y = x[m], y[m]
    x, y = x.ravel(), y.ravel()
    if x.size < 2:
        raise InputError("similarity needs at least two voxels")
    return x, y


def ncc(a: ArrayLike, b: ArrayLike, mask: ArrayLike | None = None) -> float | None:
    """Global normalised cross-correlation (Pearson's r) in [-1, 1]; None if either image is constant."""
    x, y = _pair(a, b, mask)
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return None if denom == 0 else float((x * y).sum() / denom)


def mutual_information(a: ArrayLike, b: ArrayLike, bins: int = 32, mask: ArrayLike | None = None,
                       normalized: bool = False) -> float | None:
    """Mutual information (nats) from a ``bins`` x ``bins`` joint histogram over each image's range.

    ``normalized=True`` gives Studholme's ``(H(A) + H(B)) / H(A, B)`` in [1, 2] instead (None when
    both images are constant, where it is 0/0).
    """
    if bins < 2:
        raise InputError(f"bins must be >= 2, got {bins}")
    x, y = _pair(a, b, mask)
    joint, _, _ = np.histogram2d(x, y, bins=bins)
    p = joint / joint.sum()
    px, py = p.sum(1), p.sum(0)
    h = lambda q: float(-(q[q > 0] * np.log(q[q > 0])).sum())  # noqa: E731
    hx, hy, hxy = h(px), h(py), h(p.ravel())
    if normalized:
        return (hx + hy) / hxy if hxy > 0 else None
    return hx + hy - hxy
