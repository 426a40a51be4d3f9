"""Deformable stages: building transforms per pyramid level and carrying their fields across levels.

Fields (displacements, velocities) live on each level's grid (optionally strided) and are
linearly resampled onto the next, finer level; B-spline control lattices keep their mm spacing,
so their coefficients carry over. Gradients of dense fields can be Gaussian-smoothed (the
ANTs/FireANTs "update field" smoothing) through a parameter hook.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from ..errors import InputError
from ..functional.filters import gaussian_smooth
from ..functional.flow import resample_field
from ..grid import Grid
from ..losses.regularisers import REGULARISERS
from ..transforms.base import SpatialTransform
from ..transforms.bspline import BSplineFFD
from ..transforms.dense import DenseDisplacement
from ..transforms.velocity import BSplineVelocity, StationaryVelocity, SymmetricVelocity

Builder = Callable[[Grid, dict[str, Any]], SpatialTransform]

def _velocity(o: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments shared by the velocity models."""
    return {"steps": o.get("steps", 7), "stride": o.get("stride", 1), "exact_grad": bool(o.get("exact_grad", True)),
            "field_sigma": float(o.get("field_sigma", 0.0))}


BUILDERS: dict[str, Builder] = {
    "dense": lambda g, o: DenseDisplacement(g, stride=o.get("stride", 1)),
    "svf": lambda g, o: StationaryVelocity(g, **_velocity(o)),
    "syn": lambda g, o: SymmetricVelocity(g, **_velocity(o), tied=bool(o.get("tied", True))),
    "ffd": lambda g, o: BSplineFFD(g, o.get("control_spacing", 8.0)),
    "svffd": lambda g, o: BSplineVelocity(g, o.get("control_spacing", 8.0), **_velocity(o)),
}
OPTIONS = {"stride", "steps", "control_spacing", "grad_sigma", "exact_grad", "tied", "field_sigma"}


def _field_grid(transform: SpatialTransform) -> Grid:
    """The grid on which a transform's parameters live (field grid or control lattice)."""
    return getattr(transform, "lattice", None) or transform.field_grid


def build(name: str, grid: Grid, options: dict[str, Any], previous: SpatialTransform | None) -> SpatialTransform:
    """A ``name`` transform on ``grid``, its parameters resampled from ``previous`` (same kind) if given."""
    unknown = set(options) - OPTIONS
    if unknown:
        raise InputError(f"unknown transform_options {sorted(unknown)} for {name!r}; valid: {sorted(OPTIONS)}")
    transform = BUILDERS[name](grid, options)
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
        for p in transform.parameters():
            p.register_hook(lambda g, s=sigma: gaussian_smooth(g, s))
    return transform


def make_regularisers(specs: list[Any]) -> list[nn.Module]:
    """Regulariser modules (per-pair values) from config entries ``{name, weight, options}``."""
    out = []
    for spec in specs:
        if spec.name not in REGULARISERS:
            raise InputError(f"unknown regulariser {spec.name!r}; expected one of {', '.join(REGULARISERS)}")
        out.append(REGULARISERS[spec.name](weight=spec.weight, reduction="none", **spec.options))
    return out


def regularisation(regularisers: list[nn.Module], disp: Tensor, grid: Grid) -> Tensor:
    """Sum of the weighted regularisers on ``disp (B, D, *S)`` -> per pair ``(B,)``."""
    total = disp.new_zeros(disp.shape[0])
    for reg in regularisers:
        total = total + reg(disp, grid)
    return total
