"""The ITK/ANTs (LPS) <-> NIfTI (RAS) conversion: the one place it happens.

ITK world space is LPS: x and y point the other way from RAS. In 2-D the same two axes flip.
"""
from __future__ import annotations

import numpy as np


def ras_from_lps(ndim: int) -> np.ndarray:
    """Homogeneous ``(D+1, D+1)`` matrix flipping x and y; it is its own inverse."""
    m = np.eye(ndim + 1)
    m[0, 0] = m[1, 1] = -1.0
    return m


def flip_points(points: np.ndarray, dtype: np.dtype | type = np.float64) -> np.ndarray:
    """LPS <-> RAS for ``(..., D)`` points or vectors (negate x and y), as a new ``dtype`` array."""
    out = np.array(points, dtype=dtype, copy=True)
    out[..., :2] *= -1
    return out


def flip_matrix(matrix: np.ndarray) -> np.ndarray:
    """Express a homogeneous world matrix given in LPS in RAS, or vice versa."""
    f = ras_from_lps(matrix.shape[0] - 1)
    return f @ np.asarray(matrix, dtype=np.float64) @ f
