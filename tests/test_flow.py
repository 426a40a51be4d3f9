"""World-mm field maths: resampling, composition, scaling and squaring, fixed-point inversion."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchalign.errors import InputError
from torchalign.functional.flow import (
    compose_fields,
    integrate_velocity,
    invert_field,
    resample_field,
    sample_field,
)
from torchalign.grid import Grid


def smooth_field(grid: Grid, amplitude: float, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A smooth random field ``(B, D, *S)`` in mm: sinusoids of half to one period across the grid.

    Its largest derivative is below ``2 pi amplitude / extent``.
    """
    gen = torch.Generator().manual_seed(seed)
    x = grid.points(torch.float64)
    extent = torch.as_tensor(grid.spacing * np.asarray(grid.shape), dtype=torch.float64)
    out = torch.zeros(batch, grid.ndim, *grid.shape, dtype=torch.float64)
    for b in range(batch):
        for c in range(grid.ndim):
            for _ in range(3):
                freq = (0.5 + 0.5 * torch.rand(grid.ndim, generator=gen).double()) / extent
                phase = torch.rand(1, generator=gen).double() * 2 * math.pi
                out[b, c] += amplitude / 3 * torch.sin(2 * math.pi * (x * freq).sum(-1) + phase)
    return out


def _affine_field(grid: Grid, matrix: np.ndarray, shift: np.ndarray) -> torch.Tensor:
    """``u(x) = A x + b`` on ``grid``: ``(1, D, *S)`` float64."""
    x = grid.points(torch.float64)
    u = x @ torch.as_tensor(matrix).T + torch.as_tensor(shift)
    return u.movedim(-1, 0).unsqueeze(0)


def _interior(grid: Grid, margin_mm: float) -> torch.Tensor:
    """Boolean ``(*S)`` mask of voxels within ``margin_mm`` of the grid centre (max norm)."""
    x = grid.points(torch.float64) - torch.as_tensor(grid.center())
    return x.abs().amax(-1) < margin_mm


def test_sample_field_and_resample_field_are_exact_for_a_linear_field() -> None:
    grid = Grid.from_geometry((12, 10, 9), spacing=(1.0, 1.5, 2.0), origin=(-5, 3, 1))
    a = np.array([[0.1, -0.05, 0.0], [0.02, 0.0, 0.1], [0.0, 0.03, -0.1]])
    field = _affine_field(grid, a, np.array([1.0, -2.0, 0.5]))
    coarse = grid.downsample(2)
    out = resample_field(field, grid, coarse)
    inside = _interior(coarse, 5.0)
    torch.testing.assert_close(out[0][:, inside], _affine_field(coarse, a, np.array([1.0, -2.0, 0.5]))[0][:, inside])
    assert resample_field(field, grid, grid) is field
    pts = torch.as_tensor(grid.center()).reshape(1, 1, 3)
    torch.testing.assert_close(sample_field(field, grid, pts)[0, 0], pts[0, 0] @ torch.as_tensor(a).T
                               + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("shape", [(21, 17), (11, 10, 9)])
def test_resampling_across_a_pyramid_agrees_with_sampling_at_points(shape: tuple[int, ...]) -> None:
    grid = Grid.from_geometry(shape, spacing=(1.0, 1.5, 0.8)[: len(shape)], origin=(3, -2, 1)[: len(shape)])
    field = torch.randn(2, len(shape), *shape, dtype=torch.float64)
    for onto in (grid.downsample(2), grid.resize([2 * n + 1 for n in shape])):  # same extent: interpolate
        at_points = sample_field(field, grid, onto.points(torch.float64).unsqueeze(0)).movedim(-1, 1)
        torch.testing.assert_close(resample_field(field, grid, onto), at_points)
    shifted = grid.crop([1] * len(shape), [n - 2 for n in shape])  # another extent: sampled at points
    at_points = sample_field(field, grid, shifted.points(torch.float64).unsqueeze(0)).movedim(-1, 1)
    torch.testing.assert_close(resample_field(field, grid, shifted), at_points)


def test_field_shape_errors_name_the_argument() -> None:
    grid = Grid((6, 5))
    with pytest.raises(InputError, match="velocity"):
        integrate_velocity(torch.zeros(1, 3, 6, 5), grid)
    with pytest.raises(InputError, match="second"):
        compose_fields(torch.zeros(1, 2, 6, 5), torch.zeros(1, 2, 5, 5), grid)
    with pytest.raises(InputError, match="steps"):
        integrate_velocity(torch.zeros(1, 2, 6, 5), grid, steps=-1)
    with pytest.raises(InputError, match="disp"):
        invert_field(torch.zeros(1, 2, 6, 5, dtype=torch.long), grid)
    with pytest.raises(InputError, match="3-D"):
        resample_field(torch.zeros(1, 2, 6, 5), grid, Grid((4, 4, 4)))


def test_compose_fields_of_affine_maps_is_the_matrix_product() -> None:
    grid = Grid.from_geometry((24, 20), spacing=(1.0, 1.25), origin=(-12, -12))
    a1, b1 = np.array([[0.05, 0.02], [-0.03, 0.04]]), np.array([0.5, -0.3])
    a2, b2 = np.array([[-0.04, 0.01], [0.02, 0.03]]), np.array([-0.2, 0.4])
    w = compose_fields(_affine_field(grid, a1, b1), _affine_field(grid, a2, b2), grid)
    # T2(T1(x)) - x = (I + A2)(x + A1 x + b1) + b2 - x
    eye = np.eye(2)
    expected = _affine_field(grid, (eye + a2) @ (eye + a1) - eye, (eye + a2) @ b1 + b2)
    inside = _interior(grid, 8.0)
    torch.testing.assert_close(w[0][:, inside], expected[0][:, inside])


def test_compose_fields_accepts_a_second_field_on_another_grid() -> None:
    grid = Grid((10, 10))
    other = Grid.from_geometry((8, 8), spacing=(2.0, 2.0), origin=(-3, -3))
    first = torch.full((2, 2, 10, 10), 0.5, dtype=torch.float64)
    second = torch.full((2, 2, 8, 8), -1.5, dtype=torch.float64)
    torch.testing.assert_close(compose_fields(first, second, grid, other), torch.full_like(first, -1.0))


def test_constant_velocity_integrates_to_the_same_translation() -> None:
    grid = Grid((9, 8, 7))
    v = torch.tensor([1.5, -0.5, 2.0]).reshape(1, 3, 1, 1, 1).expand(2, 3, 9, 8, 7).contiguous()
    torch.testing.assert_close(integrate_velocity(v, grid, steps=6), v)
    torch.testing.assert_close(integrate_velocity(v, grid, steps=0), v)


def test_scaling_and_squaring_of_a_rotation_velocity_is_the_exponential_map() -> None:
    grid = Grid.from_geometry((64, 64), origin=(-31.5, -31.5))  # centred on the origin
    theta = 0.3
    w = np.array([[0.0, -theta], [theta, 0.0]])  # v(x) = W x, a rotation's generator
    v = _affine_field(grid, w, np.zeros(2))
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    expected = _affine_field(grid, rot - np.eye(2), np.zeros(2))
    inside = _interior(grid, 12.0)
    err7 = (integrate_velocity(v, grid, 7) - expected)[0][:, inside].norm(dim=0).max()
    err0 = (integrate_velocity(v, grid, 0) - expected)[0][:, inside].norm(dim=0).max()
    # the linearised flow is O(theta^2 r / 2^(steps+1)): ~0.5 mm at steps=0, ~4e-3 mm at steps=7
    assert err7 < 1e-2
    assert err0 > 0.3


@pytest.mark.parametrize(("shape", "amplitude"), [((40, 36), 3.0), ((24, 22, 20), 1.2)])
def test_exp_v_composed_with_exp_minus_v_is_the_identity(shape: tuple[int, ...], amplitude: float) -> None:
    grid = Grid.from_geometry(shape, spacing=(1.0, 1.2, 0.9)[: len(shape)])
    v = smooth_field(grid, amplitude=amplitude, batch=2)
    roundtrip = compose_fields(integrate_velocity(v, grid), integrate_velocity(-v, grid), grid)
    residual = roundtrip.norm(dim=1)
    assert residual.shape == (2, *shape)
    assert float(residual.median()) < 0.02 and float(residual.max()) < 0.3


def test_invert_field_of_an_affine_field_is_the_inverse_matrix() -> None:
    grid = Grid.from_geometry((30, 30), origin=(-14.5, -14.5))
    a = np.array([[0.08, 0.03], [-0.02, -0.05]])
    inverse, residual = invert_field(_affine_field(grid, a, np.array([0.3, -0.2])), grid, iterations=50, tol=1e-6)
    m = np.linalg.inv(np.eye(2) + a)
    expected = _affine_field(grid, m - np.eye(2), -m @ np.array([0.3, -0.2]))
    inside = _interior(grid, 8.0)
    torch.testing.assert_close(inverse[0][:, inside], expected[0][:, inside], atol=1e-5, rtol=0)
    assert residual.iterations > 0 and residual.max_mm.shape == (1,)


@pytest.mark.parametrize(("shape", "amplitude"), [((48, 40), 2.0), ((24, 22, 20), 1.2)])
def test_invert_field_round_trip_residual_is_reported_and_small(shape: tuple[int, ...], amplitude: float) -> None:
    grid = Grid(shape)
    disp = smooth_field(grid, amplitude=amplitude, batch=2, seed=3)
    inverse, residual = invert_field(disp, grid, iterations=40, tol=1e-3)
    assert float(residual.max_mm.max()) <= 1e-3 and residual.mean_mm.shape == (2,)
    # independent check of T(T^-1(x)) = x and of T^-1(T(x)) = x
    forward_after = compose_fields(inverse, disp, grid).norm(dim=1)
    torch.testing.assert_close(forward_after.amax(dim=tuple(range(1, len(shape) + 1))), residual.max_mm)
    # T^-1(T(x)) samples the inverse between voxel centres: linear-interpolation error, ~0.02 mm here
    backward_after = compose_fields(disp, inverse, grid).norm(dim=1)
    assert float(backward_after.median()) < 0.05


def test_invert_field_stops_at_the_iteration_limit_and_says_so() -> None:
    grid = Grid((32, 32))
    disp = smooth_field(grid, amplitude=2.0)
    _, residual = invert_field(disp, grid, iterations=1, tol=0.0)
    assert residual.iterations == 1 and float(residual.max_mm) > 1e-3
    with pytest.raises(InputError, match="tol"):
        invert_field(disp, grid, tol=-1.0)


def test_gradcheck_integration_and_composition() -> None:
    grid = Grid.from_geometry((5, 4), spacing=(1.0, 1.5))
    v = (0.3 * torch.randn(1, 2, 5, 4, dtype=torch.float64)).requires_grad_()
    u = (0.3 * torch.randn(1, 2, 5, 4, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda f: integrate_velocity(f, grid, steps=2), (v,))
    assert torch.autograd.gradcheck(lambda f, g: compose_fields(f, g, grid), (u, v))


def test_straight_through_integration_has_the_exact_value_and_an_identity_gradient() -> None:
    grid = Grid.from_geometry((12, 10, 8), spacing=(2.0, 1.5, 1.0))
    v = smooth_field(grid, 2.0).float().requires_grad_()
    u = integrate_velocity(v, grid, 6, exact_grad=False)
    torch.testing.assert_close(u, integrate_velocity(v.detach(), grid, 6))
    weights = torch.randn_like(u)
    (u * weights).sum().backward()
    torch.testing.assert_close(v.grad, weights)  # d exp(v)/dv taken as the identity
    exact = v.detach().clone().requires_grad_()
    (integrate_velocity(exact, grid, 6) * weights).sum().backward()
    assert not torch.allclose(exact.grad, weights)  # the exact gradient differs for a non-zero velocity
