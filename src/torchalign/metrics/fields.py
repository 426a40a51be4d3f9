"""Deformation quality: Jacobian determinant statistics, curl, inverse consistency, field RMSE.

Displacement fields are ``(B, D, *S)`` on a Grid, channel ``i`` in mm along world axis ``i``, and
``T(x) = x + u(x)`` maps fixed world points to moving world points. Derivatives are taken with
respect to world coordinates by ``torchalign.functional.jacobian``; :func:`jacobian_stats` takes a
determinant map, so it applies to any determinant (e.g. an analytic one or one read from a file).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..functional.jacobian import curl
from ..functional.sampling import sample_world
from ..grid import Grid
from .overlap import ArrayLike, as_numpy


def _select(values: ArrayLike, mask: ArrayLike | None, name: str) -> np.ndarray:
    v = as_numpy(values).astype(np.float64, copy=False)
    if mask is None:
        return v.ravel()
    m = as_numpy(mask).astype(bool, copy=False)
    if m.shape != v.shape:
        try:
            m = np.broadcast_to(m, v.shape)
        except ValueError:
            raise InputError(f"{name}: mask of shape {m.shape} does not match values of shape {v.shape}") from None
    if not m.any():
        raise InputError(f"{name}: the mask is empty")
    return v[m]


def jacobian_stats(det: ArrayLike, mask: ArrayLike | None = None) -> dict[str, float | int | None]:
    """Statistics of a Jacobian determinant map ``(B, *S)`` or ``(*S)`` (inside ``mask`` if given).

    * ``fold_percent``: percentage of voxels with ``det J <= 0`` (folded or singular).
    * ``sdlogj``: standard deviation (ddof=0) of ``log det J`` over the voxels with ``det J > 0``
      only; folded voxels are excluded, not clipped (Learn2Reg clips ``det J`` to ``[1e-9, 1e9]``
      instead, which differs only when there are folds). None when no voxel has ``det J > 0``.
    * ``min``, ``max``, ``mean`` of ``det J``; ``n`` voxels evaluated and ``n_folded``.
    """
    d = _select(det, mask, "jacobian determinant")
    if not np.all(np.isfinite(d)):
        raise InputError("jacobian determinant contains NaN/Inf")
    positive = d[d > 0]
    folded = int(d.size - positive.size)
    return {"fold_percent": 100.0 * folded / d.size,
            "sdlogj": float(np.log(positive).std()) if positive.size else None,
            "min": float(d.min()), "max": float(d.max()), "mean": float(d.mean()),
            "n": int(d.size), "n_folded": folded}


def curl_magnitude(disp: Tensor, grid: Grid) -> Tensor:
    """Magnitude of the curl of ``u`` ``(B, D, *S)`` in world mm: ``(B, *S)``, dimensionless (mm/mm).

    3-D: the norm of the curl vector; 2-D: ``|du_y/dx - du_x/dy|``. A small rotation by ``θ``
    radians has curl magnitude ``2θ``.
    """
    c = curl(disp, grid)
    return c.abs() if grid.ndim == 2 else c.norm(dim=1)


def _check_field(field: Tensor, grid: Grid, name: str) -> None:
    if field.ndim != grid.ndim + 2 or field.shape[1] != grid.ndim or tuple(field.shape[2:]) != grid.shape:
        raise InputError(f"{name}: expected a displacement field (B, {grid.ndim}, *{grid.shape}), "
                         f"got {tuple(field.shape)}")


def inverse_consistency(forward: Tensor, forward_grid: Grid, inverse: Tensor,
                        inverse_grid: Grid) -> tuple[Tensor, Tensor]:
    """Inverse-consistency error of a forward field and its inverse, at the forward grid's voxels.

    ``forward`` ``(B, D, *S)`` on ``forward_grid`` (fixed -> moving) and ``inverse`` ``(B, D, *S')`` on
    ``inverse_grid`` (moving -> fixed). The error at ``x`` is ``|u(x) + v(x + u(x))|`` mm, the distance
    between ``x`` and its round trip (``v`` sampled linearly). Returns ``(error (B, *S), inside (B, *S))``
    where ``inside`` marks round trips whose midpoint ``x + u(x)`` lies within the inverse grid's
    voxel centres ``[0, n - 1]``, where ``v`` is interpolated rather than extended from its edge.
    """
    _check_field(forward, forward_grid, "forward field")
    _check_field(inverse, inverse_grid, "inverse field")
    x = forward_grid.points(dtype=forward.dtype, device=forward.device).unsqueeze(0)
    u = forward.movedim(1, -1)
    y = x + u
    v = sample_world(inverse, inverse_grid, y, "linear", "border").movedim(1, -1)
    voxels = inverse_grid.world_to_voxel(y.double())
    last = torch.tensor(inverse_grid.shape, dtype=torch.float64, device=y.device) - 1
    inside = ((voxels >= -1e-9) & (voxels <= last + 1e-9)).all(-1)
    return (u + v).norm(dim=-1), inside


def error_summary(error: ArrayLike, mask: ArrayLike | None = None, prefix: str = "") -> dict[str, float]:
    """Mean, median, 95th percentile and max of an error map (inside ``mask``), keys prefixed."""
    e = _select(error, mask, f"{prefix or 'error'} map")
    return {f"{prefix}mean": float(e.mean()), f"{prefix}median": float(np.median(e)),
            f"{prefix}p95": float(np.percentile(e, 95)), f"{prefix}max": float(e.max())}


def field_rmse(a: Tensor, b: Tensor, mask: ArrayLike | None = None) -> float:
    """Root mean square of ``|a(x) - b(x)|`` (mm) over voxels (inside ``mask`` ``(B|1, *S)``).

    ``a``, ``b``: displacement fields ``(B, D, *S)`` on the same grid.
    """
    if a.shape != b.shape or a.ndim < 4:
        raise InputError(f"fields must have the same (B, D, *S) shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    squared = ((a.double() - b.double()) ** 2).sum(1)
    return float(np.sqrt(_select(squared, mask, "field difference").mean()))
