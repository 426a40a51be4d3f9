"""Diffeomorphic transforms from stationary velocity fields (SVF), exponentiated by scaling and squaring.

* :class:`StationaryVelocity`: a dense velocity ``(B, D, *S')`` (``S'`` = image grid / stride).
* :class:`BSplineVelocity` (SVFFD): the velocity is a cubic B-spline of control-point values.
* :class:`SymmetricVelocity` (SyN-like): two half-way velocities, inverse-consistent by construction.

Velocities and displacements are world-axis mm. ``exp(v)`` is integrated on the field grid
(``steps`` squarings) and linearly sampled elsewhere; a stride of 2 integrates at half resolution,
as VoxelMorph does, which is ~8x cheaper in 3-D. ``exact_grad=False`` passes gradients straight
through the integration (see :func:`~torchalign.functional.flow.integrate_velocity`). Inverses are exact in the model (the negated
velocity, or the swapped pair) and share the parameters of the transform they came from, so they
stay differentiable and follow its optimisation.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..functional.bspline import bending_energy, control_grid, evaluate_bspline
from ..functional.filters import gaussian_smooth
from ..functional.flow import compose_fields, integrate_velocity, resample_field, sample_field
from ..grid import Grid
from .base import Pullback, SpatialTransform
from .dense import grid_fast_path, strided_grid


def _parameter(value: Tensor | None, shape: tuple[int, ...], name: str) -> nn.Parameter:
    """A given Parameter as is (shared), a tensor wrapped, or zeros; the shape is checked."""
    if value is None:
        return nn.Parameter(torch.zeros(shape))
    if tuple(value.shape) != shape or not value.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor of shape {shape}, got {tuple(value.shape)}")
    return value if isinstance(value, nn.Parameter) else nn.Parameter(value)


def _smoothed(velocity: Tensor, sigma_mm: float, grid: Grid) -> Tensor:
    """``velocity (B, D, *S')`` on ``grid`` Gaussian-smoothed by ``sigma_mm`` (0: itself), the model's field
    smoothing; in mm, so a parameter carried onto a finer level keeps the same smoothed velocity."""
    return gaussian_smooth(velocity, (sigma_mm / grid.spacing).tolist()) if sigma_mm > 0 else velocity


def _check_steps(steps: int) -> int:
    if not isinstance(steps, int) or steps < 0:
        raise InputError(f"steps must be a non-negative integer, got {steps!r}")
    return steps


def _apply_field(points: Tensor, field: Tensor, grid: Grid) -> Tensor:
    """``points + field(points)`` for a ``(B, D, *S)`` field on ``grid`` (no sampling on its own voxel centres)."""
    if grid_fast_path(points, grid):
        return points + field.movedim(1, -1)
    return points + sample_field(field, grid, points)


class _Exponential(SpatialTransform):
    """``T = exp(sign * v)`` for the velocity given by :meth:`velocity_field` on ``field_grid``."""

    def __init__(self, grid: Grid, steps: int, stride: int | Sequence[int], batch: int, sign: float,
                 exact_grad: bool = True, field_sigma: float = 0.0):
        super().__init__(grid.ndim, batch)
        self.field_sigma = float(field_sigma)
        self.grid = grid
        self.stride = stride
        self.field_grid = strided_grid(grid, stride)
        self.steps = _check_steps(steps)
        self.sign = sign
        self.exact_grad = exact_grad

    def velocity_field(self) -> Tensor:  # pragma: no cover - abstract
        """Signed velocity ``(B, D, *S')`` on ``field_grid``."""
        raise NotImplementedError

    def field(self) -> Tensor:
        """Displacement of ``exp(v)`` on ``field_grid``: ``(B, D, *S')``."""
        return integrate_velocity(self.velocity_field(), self.field_grid, self.steps, self.exact_grad)

    def half_field(self) -> Tensor:
        """Displacement of ``exp(v / 2)`` on ``field_grid`` (all squarings but the last): ``(B, D, *S')``."""
        return integrate_velocity(self.velocity_field() / 2, self.field_grid, self.steps - 1, self.exact_grad)

    def forward(self, points: Tensor) -> Tensor:
        """``exp(v)`` at any points: the last squaring, ``exp(v/2) o exp(v/2)``, is done at the points
        themselves rather than read from a field interpolated on ``field_grid`` (half the error)."""
        if self.steps == 0:
            return _apply_field(points, self.field(), self.field_grid)
        half = self.half_field()
        return _apply_field(_apply_field(points, half, self.field_grid), half, self.field_grid)

    def displacement(self, grid: Grid) -> Tensor:
        """``(B, D, *S)`` on ``grid``, equal to :meth:`forward` at its voxel centres."""
        if self.steps == 0:
            return resample_field(self.field(), self.field_grid, grid)
        half = self.half_field()
        return compose_fields(resample_field(half, self.field_grid, grid), half, grid, self.field_grid)

    def extra_repr(self) -> str:
        return f"field_grid={self.field_grid}, steps={self.steps}, sign={self.sign:+g}, batch={self.batch}"


class StationaryVelocity(_Exponential):
    """``T = exp(v)`` with a learnable dense velocity ``(B, D, *S')`` in mm (zeros by default)."""

    def __init__(self, grid: Grid, steps: int = 7, stride: int | Sequence[int] = 1, batch: int = 1,
                 velocity: Tensor | None = None, exact_grad: bool = True, field_sigma: float = 0.0):
        super().__init__(grid, steps, stride, batch if velocity is None else velocity.shape[0], 1.0, exact_grad,
                         field_sigma)
        self.velocity = _parameter(velocity, (self.batch, grid.ndim, *self.field_grid.shape), "velocity")

    def velocity_field(self) -> Tensor:
        v = _smoothed(self.velocity, self.field_sigma, self.field_grid)
        return v if self.sign > 0 else -v

    def learnable_copy(self, grid: Grid) -> StationaryVelocity:
        return StationaryVelocity(self.grid, self.steps, self.stride, velocity=self.velocity_field().detach().clone(),
                                  exact_grad=self.exact_grad)

    def inverse(self) -> StationaryVelocity:
        """``exp(-v)``, sharing this transform's velocity parameter."""
        out = StationaryVelocity(self.grid, self.steps, self.stride, velocity=self.velocity,
                                 exact_grad=self.exact_grad, field_sigma=self.field_sigma)
        out.sign = -self.sign
        return out


class BSplineVelocity(_Exponential):
    """SVFFD: ``T = exp(v)`` with ``v`` a cubic B-spline of control-point velocities (mm) over ``grid``."""

    def __init__(self, grid: Grid, control_spacing_mm: float | Sequence[float], steps: int = 7,
                 stride: int | Sequence[int] = 1, batch: int = 1, coeffs: Tensor | None = None,
                 exact_grad: bool = True, field_sigma: float = 0.0):
        super().__init__(grid, steps, stride, batch if coeffs is None else coeffs.shape[0], 1.0, exact_grad,
                         field_sigma)
        self.control_spacing_mm = control_spacing_mm
        self.lattice = control_grid(grid, control_spacing_mm)
        self.coeffs = _parameter(coeffs, (self.batch, grid.ndim, *self.lattice.shape), "coeffs")

    def velocity_field(self) -> Tensor:
        v = _smoothed(evaluate_bspline(self.coeffs, self.lattice, self.field_grid), self.field_sigma, self.field_grid)
        return v if self.sign > 0 else -v

    def bending_energy(self) -> Tensor:
        """Analytic mean bending energy of the velocity over the image's voxel-centre box: ``(B,)``."""
        return bending_energy(self.coeffs, self.lattice, self.grid)

    def inverse(self) -> BSplineVelocity:
        """``exp(-v)``, sharing this transform's control points."""
        out = BSplineVelocity(self.grid, self.control_spacing_mm, self.steps, self.stride, coeffs=self.coeffs,
                              exact_grad=self.exact_grad, field_sigma=self.field_sigma)
        out.sign = -self.sign
        return out


class SymmetricVelocity(SpatialTransform):
    """SyN-like symmetric diffeomorphism ``T = exp(-v_m) o exp(v_f)`` (``exp(v_f)`` applied first).

    ``exp(v_f)`` carries fixed-space points to a mid space and ``exp(-v_m)`` carries mid-space
    points on to moving space, so ``exp(-v_f)`` and ``exp(-v_m)`` pull the fixed and the moving
    image onto the mid space (:meth:`halves`). Both velocities ``(B, D, *S')`` live on the fixed
    grid shrunk by ``stride``. The inverse ``exp(-v_f) o exp(v_m)`` is the same model with the two
    velocities swapped, so ``T`` and ``T^-1`` are consistent up to the integration's accuracy.

    ``tied=True`` keeps one learnable velocity with ``v_m = -v_f``: the mid space is then exactly
    half-way (``T = exp(2 v_f)``). Two free halves can drift together (``v_f + w``, ``v_m + w``
    barely changes ``T``); optimisers that scale each voxel's step, such as Adam, amplify that
    drift, so registration uses the tied form.
    """

    def __init__(self, grid: Grid, steps: int = 7, stride: int | Sequence[int] = 1, batch: int = 1,
                 velocity_fixed: Tensor | None = None, velocity_moving: Tensor | None = None,
                 exact_grad: bool = True, tied: bool = False, field_sigma: float = 0.0):
        given = velocity_fixed if velocity_fixed is not None else velocity_moving
        super().__init__(grid.ndim, batch if given is None else given.shape[0])
        self.grid = grid
        self.stride = stride
        self.field_grid = strided_grid(grid, stride)
        self.steps = _check_steps(steps)
        self.exact_grad = exact_grad
        self.tied = tied
        self.field_sigma = float(field_sigma)
        self.sign = 1.0  # tied: the velocities are (sign * v, -sign * v)
        shape = (self.batch, grid.ndim, *self.field_grid.shape)
        self.velocity_fixed = _parameter(velocity_fixed, shape, "velocity_fixed")
        if tied:
            if velocity_moving is not None:
                raise InputError("a tied SymmetricVelocity takes velocity_fixed only (velocity_moving = -velocity_fixed)")
            self.register_parameter("velocity_moving", None)
        else:
            self.velocity_moving = _parameter(velocity_moving, shape, "velocity_moving")

    def velocities(self) -> tuple[Tensor, Tensor]:
        """``(v_f, v_m)``, each ``(B, D, *S')``."""
        v_f = _smoothed(self.velocity_fixed, self.field_sigma, self.field_grid)
        if self.velocity_moving is None:
            v = v_f if self.sign > 0 else -v_f
            return v, -v
        return v_f, _smoothed(self.velocity_moving, self.field_sigma, self.field_grid)

    def _exp(self, velocity: Tensor) -> Tensor:
        return integrate_velocity(velocity, self.field_grid, self.steps, self.exact_grad)

    def _halfway(self) -> tuple[Tensor, Tensor]:
        """``exp(v_f)`` and ``exp(-v_m)`` on ``field_grid`` (one integration when tied)."""
        v_f, v_m = self.velocities()
        to_mid = self._exp(v_f)
        return to_mid, to_mid if self.tied else self._exp(-v_m)

    def field(self) -> Tensor:
        """Displacement of ``T`` on ``field_grid``: ``u_f(x) + u_m'(x + u_f(x))`` with ``u_m' = exp(-v_m) - id``."""
        return self.displacement(self.field_grid)

    def forward(self, points: Tensor) -> Tensor:
        """``T`` at any points: the halves are applied one after the other at the points themselves."""
        to_mid, to_moving = self._halfway()
        return _apply_field(_apply_field(points, to_mid, self.field_grid), to_moving, self.field_grid)

    def displacement(self, grid: Grid) -> Tensor:
        """``(B, D, *S)`` on ``grid``, equal to :meth:`forward` at its voxel centres: the halves are
        composed at ``grid``'s points (on a finer grid, half the interpolation error of ``T``)."""
        to_mid, to_moving = self._halfway()
        return compose_fields(resample_field(to_mid, self.field_grid, grid), to_moving, grid, self.field_grid)

    def pullback(self, grid: Grid) -> Pullback:
        """Mid-space route: ``exp(-v_f)`` pulls the fixed image and ``exp(-v_m)`` the moving image onto
        ``grid``; each half's displacement is regularised on the velocity grid."""
        to_fixed, to_moving = self.halves()
        halves = (to_fixed.field(), to_moving.field())
        u_f, u_m = (resample_field(u, self.field_grid, grid) for u in halves)
        return Pullback(None, u_m, u_f, tuple((u, self.field_grid) for u in halves))

    def inverse(self) -> SymmetricVelocity:
        """``exp(-v_f) o exp(v_m)``: the velocities swapped (shared parameters)."""
        if self.tied:
            out = SymmetricVelocity(self.grid, self.steps, self.stride, velocity_fixed=self.velocity_fixed,
                                    exact_grad=self.exact_grad, tied=True, field_sigma=self.field_sigma)
            out.sign = -self.sign
            return out
        return SymmetricVelocity(self.grid, self.steps, self.stride, velocity_fixed=self.velocity_moving,
                                 velocity_moving=self.velocity_fixed, exact_grad=self.exact_grad,
                                 field_sigma=self.field_sigma)

    def halves(self) -> tuple[StationaryVelocity, StationaryVelocity]:
        """``(exp(-v_f), exp(-v_m))``: mid-space points to fixed and to moving space (shared parameters)."""
        def half(velocity: Tensor, sign: float) -> StationaryVelocity:
            out = StationaryVelocity(self.grid, self.steps, self.stride, velocity=velocity, exact_grad=self.exact_grad,
                                     field_sigma=self.field_sigma)
            out.sign = sign
            return out

        if self.tied:
            return half(self.velocity_fixed, -self.sign), half(self.velocity_fixed, self.sign)
        return half(self.velocity_fixed, -1.0), half(self.velocity_moving, -1.0)

    def extra_repr(self) -> str:
        return f"field_grid={self.field_grid}, steps={self.steps}, tied={self.tied}, batch={self.batch}"
