"""Deformable stages: building transforms per pyramid level and carrying their fields across levels.

Fields (displacements, velocities) live on each level's grid (optionally strided) and are
linearly resampled onto the next, finer level; B-spline control lattices keep their mm spacing,
so their coefficients carry over. Gradients of dense fields can be Gaussian-smoothed (the
ANTs/FireANTs "update field" smoothing) through a parameter hook.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..functional.filters import gaussian_smooth
from ..functional.flow import resample_field
from ..grid import Grid
from ..transforms.base import SpatialTransform
from ..transforms.bspline import BSplineFFD
from ..transforms.dense import DenseDisplacement
from ..transforms.velocity import BSplineVelocity, StationaryVelocity, SymmetricVelocity
from .pyramid import MIN_VOXELS

Builder = Callable[[Grid, dict[str, Any], int], SpatialTransform]


def _stride(grid: Grid, stride: int) -> list[int]:
    """``stride`` per axis, lowered on axes too short for it (a thick-slice or slab axis keeps 1)."""
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise InputError(f"stride must be a positive integer, got {stride!r}")
    return [min(stride, max(1, n // MIN_VOXELS)) for n in grid.shape]


def _velocity(g: Grid, o: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments shared by the velocity models."""
    return {"steps": o.get("steps", 7), "stride": _stride(g, o.get("stride", 1)),
            "exact_grad": bool(o.get("exact_grad", True)), "field_sigma": float(o.get("field_sigma", 0.0))}


BUILDERS: dict[str, Builder] = {
    "dense": lambda g, o, b: DenseDisplacement(g, stride=_stride(g, o.get("stride", 1)), batch=b),
    "svf": lambda g, o, b: StationaryVelocity(g, **_velocity(g, o), batch=b),
    "syn": lambda g, o, b: SymmetricVelocity(g, **_velocity(g, o), batch=b, tied=bool(o.get("tied", True))),
    "ffd": lambda g, o, b: BSplineFFD(g, o.get("control_spacing", 8.0), batch=b),
    "svffd": lambda g, o, b: BSplineVelocity(g, o.get("control_spacing", 8.0), **_velocity(g, o), batch=b),
}
_VELOCITY = {"steps", "stride", "exact_grad", "grad_sigma", "field_sigma"}
OPTIONS: dict[str, set[str]] = {
    "dense": {"stride", "grad_sigma"},
    "svf": _VELOCITY,
    "syn": _VELOCITY | {"tied"},
    "ffd": {"control_spacing"},
    "svffd": {"control_spacing", "steps", "stride", "exact_grad", "field_sigma"},
}
"""The ``transform_options`` each deformable model takes."""


def _field_grid(transform: SpatialTransform) -> Grid:
    """The grid on which a transform's parameters live (field grid or control lattice)."""
    return getattr(transform, "lattice", None) or transform.field_grid


def build(name: str, grid: Grid, options: dict[str, Any], previous: SpatialTransform | None, batch: int = 1,
          device: torch.device | str | None = None) -> SpatialTransform:
    """A ``name`` transform of ``batch`` pairs on ``grid`` (on ``device``), its parameters resampled
    from ``previous`` (same kind) if given."""
    unknown = set(options) - OPTIONS[name]
    if unknown:
        raise InputError(f"unknown transform_options {sorted(unknown)} for {name!r}; valid: {sorted(OPTIONS[name])}")
    with torch.device(device) if device is not None else contextlib.nullcontext():
        transform = BUILDERS[name](grid, options, batch)
    if previous is not None:
        src, dst = _field_grid(previous), _field_grid(transform)
        for (pname, p_old), (_, p_new) in zip(previous.named_parameters(), transform.named_parameters()):
            with_grid = resample_field(p_old.detach(), src, dst)
            if with_grid.shape != p_new.shape:
                raise InputError(f"cannot carry {pname} from {tuple(p_old.shape)} to {tuple(p_new.shape)}")
            p_new.data.copy_(with_grid)
    sigma = float(options.get("grad_sigma", 0.0))
    if sigma < 0:
        raise InputError(f"grad_sigma must be >= 0, got {sigma}")
    if sigma > 0 and name in ("dense", "svf", "syn"):
        smooth_gradients(transform, sigma)
    return transform


def smooth_gradients(transform: SpatialTransform, sigma: float) -> None:
    """Gaussian-smooth (``sigma`` voxels) the gradient of each of ``transform``'s dense fields before
    each step: the ANTs/FireANTs update-field smoothing."""
    for p in transform.parameters():
        p.register_hook(lambda g, s=sigma: gaussian_smooth(g, s))


def regularisation(regularisers: list[nn.Module], disp: Tensor, grid: Grid) -> Tensor:
    """Sum of the weighted regularisers on ``disp (B, D, *S)`` -> per pair ``(B,)``."""
    total = disp.new_zeros(disp.shape[0])
    for reg in regularisers:
        total = total + reg(disp, grid)
    return total
