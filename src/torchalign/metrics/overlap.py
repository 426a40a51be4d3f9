"""Label overlap: Dice and Jaccard per label, and the one mean Dice used everywhere.

A label present on one side only has Dice 0 (the warp erased or invented it); a label absent from
both has no Dice (None) and is left out of means.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..errors import InputError

ArrayLike = np.ndarray | torch.Tensor

OK = "ok"
MISSING_IN_FIXED = "missing in fixed"
MISSING_IN_WARPED = "missing in warped"
MISSING_IN_BOTH = "missing in both"


def as_numpy(x: ArrayLike) -> np.ndarray:
    """A NumPy view/copy of a tensor or array (detached, on the CPU)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def label_array(data: ArrayLike, name: str) -> np.ndarray:
    """Integer label array from ``(*S)`` data; float data must hold whole numbers.

    Raises InputError naming ``name`` for non-integer or non-finite values.
    """
    a = as_numpy(data)
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64, copy=False)
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{name}: a label map must hold integers, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name}: a label map must hold integers, found NaN/Inf")
    rounded = np.rint(a)
    bad = rounded != a
    if bad.any():
        example = float(a[bad].flat[0])
        raise InputError(f"{name}: a label map must hold integers, found {int(bad.sum())} non-integer values "
                         f"(e.g. {example:g}); was it resampled with linear interpolation?")
    return rounded.astype(np.int64)


def presence_status(in_fixed: bool, in_warped: bool) -> str:
    """'ok' or which side a label is missing from."""
    if in_fixed and in_warped:
        return OK
    if in_fixed:
        return MISSING_IN_WARPED
    return MISSING_IN_FIXED if in_warped else MISSING_IN_BOTH


def dice(a: ArrayLike, b: ArrayLike) -> float | None:
    """Dice ``2|A∩B| / (|A|+|B|)`` of two boolean masks of equal shape; None when both are empty."""
    a, b = _masks(a, b)
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def mean_of(scores: Iterable[float | None]) -> float | None:
    """Mean of per-label scores, leaving out the undefined ones (None: label absent from both maps);
    None when none is defined. The one definition of a mean Dice (``evaluate``, ``batch``, benchmarks)."""
    defined = [s for s in scores if s is not None]
    return float(np.mean(defined)) if defined else None


def mean_dice(fixed: ArrayLike, warped: ArrayLike, labels: Sequence[int]) -> float | None:
    """Mean Dice over ``labels`` of two label maps: a label lost (or invented) by the warp counts 0,
    one absent from both is left out (see :func:`mean_of`)."""
    fixed, warped = as_numpy(fixed), as_numpy(warped)
    return mean_of(dice(fixed == k, warped == k) for k in labels)


def jaccard(a: ArrayLike, b: ArrayLike) -> float | None:
    """Jaccard ``|A∩B| / |A∪B|`` of two boolean masks of equal shape; None when both are empty."""
    a, b = _masks(a, b)
    union = int(np.logical_or(a, b).sum())
    return None if union == 0 else int(np.logical_and(a, b).sum()) / union


def _masks(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_numpy(a).astype(bool, copy=False), as_numpy(b).astype(bool, copy=False)
    if a.shape != b.shape:
        raise InputError(f"masks differ in shape: {a.shape} vs {b.shape}")
    return a, b
