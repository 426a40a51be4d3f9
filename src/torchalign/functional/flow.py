"""Displacement and velocity fields in world mm: resampling, composition, exponentiation, inversion.

Fields are ``(B, D, *S)`` tensors on a :class:`~torchalign.grid.Grid`; channel ``i`` is mm along
world axis ``i`` and the map is ``T(x) = x + u(x)``. Because the vectors are world-axis mm (not
voxels), resampling a field onto another grid never rescales or rotates its values. Fields are
sampled with linear interpolation and border padding (a field is extended by its edge value).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..grid import Grid
from .sampling import sample_affine, sample_displaced, sample_world


def _check_field(field: Tensor, grid: Grid, name: str) -> None:
    d = grid.ndim
    if field.ndim != d + 2 or field.shape[1] != d or tuple(field.shape[2:]) != grid.shape:
        raise InputError(f"{name} must be (B, {d}, *{grid.shape}) on its grid, got {tuple(field.shape)}")
    if not field.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {field.dtype}")


def sample_field(field: Tensor, grid: Grid, points: Tensor) -> Tensor:
    """Displacement of ``field (B, D, *S)`` at world ``points (B|1, *Q, D)``, channels last: ``(B, *Q, D)``."""
    _check_field(field, grid, "field")
    return sample_world(field, grid, points, interp="linear", padding="border").movedim(1, -1)


def resample_field(field: Tensor, grid: Grid, onto: Grid) -> Tensor:
    """Linear resampling of ``field (B, D, *S)`` onto the voxel centres of ``onto`` -> ``(B, D, *S_onto)``.

    Returns ``field`` itself when ``onto`` is the same grid. When ``onto`` covers the same extent
    (a pyramid level or a stride of ``grid``: ``grid.resize(onto.shape)``), this is
    ``F.interpolate(align_corners=False)``, which clamps at the edges like border padding and is
    ~7x faster than sampling at points (no coordinate tensor).
    """
    _check_field(field, grid, "field")
    if onto.ndim != grid.ndim:
        raise InputError(f"cannot resample a {grid.ndim}-D field onto a {onto.ndim}-D grid")
    if onto.same_as(grid, atol=1e-9):
        return field
    if onto.same_as(grid.resize(onto.shape), atol=1e-9):
        mode = ("bilinear", "trilinear")[grid.ndim - 2]
        return F.interpolate(field, size=onto.shape, mode=mode, align_corners=False)
    identity = torch.eye(grid.ndim + 1, dtype=torch.float64, device=field.device)
    return sample_affine(field, grid, identity, onto, padding="border")


def compose_fields(first: Tensor, second: Tensor, grid: Grid, second_grid: Grid | None = None) -> Tensor:
    """Displacement of ``x -> T2(T1(x))`` on ``grid``: ``u1(x) + u2(x + u1(x))``.

    ``first (B, D, *S)`` lies on ``grid``; ``second`` on ``second_grid`` (default ``grid``). The
    order matches ``Compose(first, second)``: ``first`` is applied to the points first.
    """
    _check_field(first, grid, "first")
    second_grid = grid if second_grid is None else second_grid
    _check_field(second, second_grid, "second")
    return first + sample_displaced(second, second_grid, first, grid, padding="border")


def integrate_velocity(velocity: Tensor, grid: Grid, steps: int = 7, exact_grad: bool = True) -> Tensor:
    """Scaling and squaring: the displacement of ``exp(v)`` for a stationary ``velocity (B, D, *S)``.

    ``u = v / 2^steps`` then ``steps`` times ``u(x) <- u(x) + u(x + u(x))`` -> ``(B, D, *S)``.
    ``exact_grad=False`` integrates without recording the squarings and passes gradients straight
    through (``d exp(v) / dv ~ identity``, exact at ``v = 0``), as log-domain demons and greedy
    SyN-type optimisers do: the backward pass costs nothing and no intermediate fields are kept.
    """
    _check_field(velocity, grid, "velocity")
    if not isinstance(steps, int) or steps < 0:
        raise InputError(f"steps must be a non-negative integer, got {steps!r}")
    if not exact_grad and velocity.requires_grad:
        with torch.no_grad():
            u = integrate_velocity(velocity, grid, steps)
        return velocity + (u - velocity).detach()  # value exp(v) - id, gradient identity
    u = velocity / (2**steps)
    for _ in range(steps):
        u = u + sample_displaced(u, grid, u, grid, padding="border")
    return u


@dataclass(frozen=True)
class InversionResidual:
    """``|T(T^-1(x)) - x|`` in mm over the voxel centres after fixed-point inversion.

    ``max_mm`` and ``mean_mm`` are ``(B,)``; ``iterations`` is the number of updates performed.
    """

    max_mm: Tensor
    mean_mm: Tensor
    iterations: int


def invert_field(disp: Tensor, grid: Grid, iterations: int = 30, tol: float = 1e-3) -> tuple[Tensor, InversionResidual]:
    """Inverse displacement ``v`` with ``x + v(x) + u(x + v(x)) = x``, by fixed-point iteration.

    ``v <- -u(x + v)`` from ``v = -u`` (converges where ``|grad u| < 1``), stopping when the largest
    residual ``|v + u(x + v)|`` is at most ``tol`` mm or after ``iterations`` updates.
    Returns ``(inverse (B, D, *S), residual)``.
    """
    _check_field(disp, grid, "disp")
    if iterations < 0:
        raise InputError(f"iterations must be >= 0, got {iterations}")
    if tol < 0:
        raise InputError(f"tol must be >= 0, got {tol}")
    inverse = -disp
    done = 0
    while True:
        pulled = sample_displaced(disp, grid, inverse, grid, padding="border")
        error = (inverse + pulled).norm(dim=1).flatten(1)
        if done == iterations or float(error.max()) <= tol:
            break
        inverse = -pulled
        done += 1
    return inverse, InversionResidual(error.amax(1).detach(), error.mean(1).detach(), done)
