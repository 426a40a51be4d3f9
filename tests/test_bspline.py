"""Cubic B-spline FFD maths: lattice geometry, polynomial reproduction, exact derivatives, bending energy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchalign.errors import InputError
from torchalign.functional.bspline import (
    basis_matrix,
    bending_energy,
    bspline_basis,
    bspline_gradient,
    bspline_hessian,
    control_grid,
    evaluate_bspline,
    evaluate_bspline_points,
)
from torchalign.grid import Grid


def _rotation2(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _rotation3(a: float, b: float) -> np.ndarray:
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return rz @ rx


def _lattice_coords(lattice: Grid) -> torch.Tensor:
    """Control-point indices ``(D, *L)`` as float64."""
    axes = [torch.arange(n, dtype=torch.float64) for n in lattice.shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), 0)


def _quadratic_coeffs(lattice: Grid) -> torch.Tensor:
    """Coefficients whose spline is ``f(t) = t0^2 + 2 t0 t1 - t1`` in lattice coordinates t.

    A cubic B-spline reproduces ``t^2`` from coefficients ``j^2 - 1/3`` (the basis has variance 1/3)
    and ``t0 t1`` from ``j0 j1`` (the product of two linear reproductions).
    """
    j = _lattice_coords(lattice)
    return (j[0] ** 2 - 1 / 3 + 2 * j[0] * j[1] - j[1])[None, None]


def _oblique_grid_2d() -> Grid:
    return Grid.from_geometry((23, 19), spacing=(1.0, 1.5), origin=(3.0, -2.0), direction=_rotation2(0.4))


def test_control_grid_covers_the_voxel_centres_with_one_extra_point_each_side() -> None:
    grid = Grid.from_geometry((40, 31, 12), spacing=(1.0, 1.5, 3.0), direction=_rotation3(0.3, 0.2))
    lattice = control_grid(grid, (5.0, 6.0, 7.0))
    np.testing.assert_allclose(lattice.spacing, [5.0, 6.0, 7.0])
    np.testing.assert_allclose(lattice.direction, grid.direction, atol=1e-12)
    t = lattice.world_to_voxel(grid.points(torch.float64)).reshape(-1, 3)
    lo, hi = t.min(0).values.numpy(), t.max(0).values.numpy()
    assert np.all(lo >= 1 - 1e-9) and np.all(hi <= np.asarray(lattice.shape) - 2 + 1e-9)
    # centred: the margins on both sides are equal
    np.testing.assert_allclose(lo - 1, np.asarray(lattice.shape) - 2 - hi, atol=1e-9)


@pytest.mark.parametrize("spacing", [0.0, -2.0, float("nan")])
def test_control_grid_rejects_bad_spacing(spacing: float) -> None:
    with pytest.raises(InputError, match="control_spacing_mm"):
        control_grid(Grid((8, 8)), spacing)


def test_basis_is_a_partition_of_unity_and_its_derivatives_sum_to_zero() -> None:
    t = torch.linspace(0, 0.999, 37, dtype=torch.float64)
    torch.testing.assert_close(bspline_basis(t).sum(-1), torch.ones_like(t))
    for order in (1, 2):
        torch.testing.assert_close(bspline_basis(t, order).sum(-1), torch.zeros_like(t), atol=1e-12, rtol=0)
    # derivatives agree with finite differences of the basis
    h = 1e-6
    fd = (bspline_basis(t + h) - bspline_basis(t - h)) / (2 * h)
    torch.testing.assert_close(bspline_basis(t, 1), fd, atol=1e-8, rtol=0)
    with pytest.raises(InputError, match="derivative"):
        bspline_basis(t, 3)


def test_basis_matrix_is_banded_with_four_entries_per_row() -> None:
    m = basis_matrix(torch.tensor([1.25, 2.5, 3.999], dtype=torch.float64), 7)
    assert ((m != 0).sum(1) == 4).all()
    assert (m[1, :1] == 0).all() and (m[1, 5:] == 0).all()
    on_knot = basis_matrix(torch.tensor([1.0], dtype=torch.float64), 7)
    torch.testing.assert_close(on_knot[0, :4], torch.tensor([1 / 6, 4 / 6, 1 / 6, 0], dtype=torch.float64))


def test_spline_reproduces_a_quadratic_on_an_oblique_anisotropic_grid() -> None:
    grid = _oblique_grid_2d()
    lattice = control_grid(grid, (4.0, 5.5))
    coeffs = _quadratic_coeffs(lattice)
    t = lattice.world_to_voxel(grid.points(torch.float64))
    expected = t[..., 0] ** 2 + 2 * t[..., 0] * t[..., 1] - t[..., 1]
    dense = evaluate_bspline(coeffs, lattice, grid)
    assert dense.shape == (1, 1, *grid.shape)
    torch.testing.assert_close(dense[0, 0], expected, atol=1e-10, rtol=0)
    at_points = evaluate_bspline_points(coeffs, lattice, grid.points(torch.float64).unsqueeze(0))
    torch.testing.assert_close(at_points[0, 0], expected, atol=1e-10, rtol=0)


def test_non_integer_and_integer_control_spacing_give_the_same_spline_as_the_point_path() -> None:
    grid = Grid.from_geometry((17, 14, 11), spacing=(1.0, 1.0, 2.0))
    for spacing in (4.0, 3.7):
        lattice = control_grid(grid, spacing)
        coeffs = torch.randn(2, 3, *lattice.shape, dtype=torch.float64)
        dense = evaluate_bspline(coeffs, lattice, grid)
        points = evaluate_bspline_points(coeffs, lattice, grid.points(torch.float64).unsqueeze(0))
        assert dense.shape == points.shape == (2, 3, *grid.shape)
        torch.testing.assert_close(dense, points, atol=1e-12, rtol=0)


def test_grid_rotated_against_the_lattice_falls_back_to_points() -> None:
    grid = _oblique_grid_2d()
    lattice = control_grid(grid, 4.0)
    rot = _rotation2(0.9)  # not axis-parallel to the lattice; centred inside it
    origin = grid.center() - rot @ (np.array([2.5, 2.0]) * 1.5)
    other = Grid.from_geometry((6, 5), spacing=(1.5, 1.5), origin=origin, direction=rot)
    coeffs = _quadratic_coeffs(lattice)
    t = lattice.world_to_voxel(other.points(torch.float64))
    expected = t[..., 0] ** 2 + 2 * t[..., 0] * t[..., 1] - t[..., 1]
    torch.testing.assert_close(evaluate_bspline(coeffs, lattice, other)[0, 0], expected, atol=1e-10, rtol=0)


def test_points_outside_the_lattice_decay_to_zero() -> None:
    grid = Grid((10, 10))
    lattice = control_grid(grid, 3.0)
    coeffs = torch.ones(1, 2, *lattice.shape, dtype=torch.float64)
    far = torch.tensor([[[-50.0, 4.0], [4.0, 80.0]]], dtype=torch.float64)
    assert evaluate_bspline_points(coeffs, lattice, far).abs().max() == 0


def test_batch_of_points_broadcasts_against_a_batch_of_one() -> None:
    grid = Grid((12, 9))
    lattice = control_grid(grid, 4.0)
    coeffs = torch.randn(1, 2, *lattice.shape, dtype=torch.float64)
    pts = torch.rand(2, 5, 2, dtype=torch.float64) * 8
    out = evaluate_bspline_points(coeffs, lattice, pts)
    assert out.shape == (2, 2, 5)
    torch.testing.assert_close(out[1], evaluate_bspline_points(coeffs, lattice, pts[1:])[0])


def test_exact_world_derivatives_of_a_quadratic() -> None:
    grid = _oblique_grid_2d()
    lattice = control_grid(grid, (4.0, 5.5))
    coeffs = _quadratic_coeffs(lattice)
    m = torch.as_tensor(lattice.voxel_from_world[:2, :2])  # dt/dx
    t = lattice.world_to_voxel(grid.points(torch.float64))
    df_dt = torch.stack([2 * t[..., 0] + 2 * t[..., 1], 2 * t[..., 0] - 1], -1)
    expected_grad = df_dt @ m  # d f / d x_j = sum_k df/dt_k * M_kj
    grad = bspline_gradient(coeffs, lattice, grid)
    assert grad.shape == (1, 1, 2, *grid.shape)
    torch.testing.assert_close(grad[0, 0].movedim(0, -1), expected_grad, atol=1e-10, rtol=0)
    h_t = torch.tensor([[2.0, 2.0], [2.0, 0.0]], dtype=torch.float64)
    expected_hess = m.T @ h_t @ m
    hess = bspline_hessian(coeffs, lattice, grid)
    assert hess.shape == (1, 1, 2, 2, *grid.shape)
    torch.testing.assert_close(hess[0, 0, :, :, 5, 7], expected_hess, atol=1e-10, rtol=0)
    torch.testing.assert_close(hess[0, 0].std(dim=(-1, -2)), torch.zeros(2, 2, dtype=torch.float64), atol=1e-9,
                               rtol=0)


def test_derivatives_at_points_match_the_separable_path_and_a_rotated_grid() -> None:
    grid = _oblique_grid_2d()
    lattice = control_grid(grid, (4.0, 5.5))
    coeffs = torch.randn(2, 2, *lattice.shape, dtype=torch.float64)
    points = grid.points(torch.float64).unsqueeze(0)
    for orders in [(1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]:
        torch.testing.assert_close(evaluate_bspline_points(coeffs, lattice, points, orders),
                                   evaluate_bspline(coeffs, lattice, grid, orders), atol=1e-12, rtol=0)
    # the exact Hessian of a quadratic on a grid rotated against the lattice (point path)
    rot = _rotation2(1.1)
    other = Grid.from_geometry((5, 4), spacing=(1.5, 1.5), origin=grid.center() - rot @ np.array([3.0, 2.0]),
                               direction=rot)
    m = torch.as_tensor(lattice.voxel_from_world[:2, :2])
    hess = bspline_hessian(_quadratic_coeffs(lattice), lattice, other)
    expected = m.T @ torch.tensor([[2.0, 2.0], [2.0, 0.0]], dtype=torch.float64) @ m
    torch.testing.assert_close(hess[0, 0].movedim(0, -1).movedim(0, -1), expected.expand(5, 4, 2, 2), atol=1e-10,
                               rtol=0)


def test_bending_energy_of_a_quadratic_is_the_known_constant() -> None:
    grid = _oblique_grid_2d()
    lattice = control_grid(grid, (4.0, 5.5))
    m = lattice.voxel_from_world[:2, :2]
    h_world = m.T @ np.array([[2.0, 2.0], [2.0, 0.0]]) @ m
    energy = bending_energy(_quadratic_coeffs(lattice), lattice, grid)
    torch.testing.assert_close(energy, torch.tensor([float((h_world**2).sum())], dtype=torch.float64))


@pytest.mark.parametrize("ndim", [2, 3])
def test_bending_energy_matches_the_mean_of_exact_hessians_on_a_fine_grid(ndim: int) -> None:
    shape = (14, 11) if ndim == 2 else (9, 8, 7)
    rot = _rotation2(0.3) if ndim == 2 else _rotation3(0.3, -0.2)
    grid = Grid.from_geometry(shape, spacing=(1.0, 1.3, 0.8)[:ndim], direction=rot)
    lattice = control_grid(grid, 3.0)
    coeffs = torch.randn(2, ndim, *lattice.shape, dtype=torch.float64)
    energy = bending_energy(coeffs, lattice, grid)
    # midpoint rule on a fine grid spanning the same box of voxel centres
    k = 8 if ndim == 2 else 6
    fine_shape = [(n - 1) * k for n in shape]
    fine = Grid(fine_shape, grid.world_from_voxel @ _fine_from_coarse(ndim, k))
    hess = bspline_hessian(coeffs, lattice, fine)
    estimate = hess.square().sum(dim=(1, 2, 3)).flatten(1).mean(1)
    torch.testing.assert_close(energy, estimate, rtol=2e-3, atol=0)


def _fine_from_coarse(ndim: int, k: int) -> np.ndarray:
    """Voxel matrix of a grid with k-times finer cells, whose cell centres tile [0, n-1] of the coarse grid."""
    m = np.eye(ndim + 1)
    m[:ndim, :ndim] /= k
    m[:ndim, ndim] = 0.5 / k
    return m


def test_bending_energy_default_region_and_bad_region() -> None:
    grid = Grid((12, 12))
    lattice = control_grid(grid, 4.0)
    coeffs = torch.randn(1, 2, *lattice.shape, dtype=torch.float64)
    assert bending_energy(coeffs, lattice).shape == (1,)
    rotated = Grid.from_geometry((12, 12), direction=_rotation2(0.2))
    with pytest.raises(InputError, match="axis-parallel"):
        bending_energy(coeffs, lattice, rotated)
    with pytest.raises(InputError, match="coeffs"):
        bending_energy(coeffs[:, :, :-1], lattice)


def test_gradcheck_evaluation_and_bending_energy() -> None:
    grid = Grid.from_geometry((5, 4), spacing=(1.0, 1.2))
    lattice = control_grid(grid, 2.5)
    coeffs = torch.randn(1, 2, *lattice.shape, dtype=torch.float64, requires_grad=True)
    pts = (torch.rand(1, 3, 2, dtype=torch.float64) * 4).requires_grad_()
    assert torch.autograd.gradcheck(lambda c: evaluate_bspline(c, lattice, grid), (coeffs,))
    assert torch.autograd.gradcheck(lambda c, p: evaluate_bspline_points(c, lattice, p), (coeffs, pts))
    assert torch.autograd.gradcheck(lambda c: bending_energy(c, lattice, grid), (coeffs,))
