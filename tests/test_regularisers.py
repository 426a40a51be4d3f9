"""Regularisers: analytic values (MONAI test pattern), a MONAI oracle, gradients and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchalign.errors import InputError
from torchalign.functional import regularisers as R
from torchalign.functional.bspline import bending_energy as bspline_bending_energy
from torchalign.functional.bspline import control_grid, evaluate_bspline
from torchalign.functional.filters import gaussian_smooth
from torchalign.functional.jacobian import jacobian_det
from torchalign.grid import Grid
from torchalign.losses.regularisers import (
    REGULARISERS,
    BendingEnergy,
    Curvature,
    Diffusion,
    JacobianFolding,
    LinearElasticity,
)

PENALTIES = [R.diffusion, R.bending_energy, R.curvature, R.linear_elasticity, R.folding]


def _rot3(a: float, b: float) -> np.ndarray:
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return rz @ rx


def _grid(ndim: int) -> Grid:
    """Oblique, anisotropic, off-origin grids: world-mm derivatives must not depend on the voxel layout."""
    if ndim == 2:
        c, s = math.cos(0.6), math.sin(0.6)
        return Grid.from_geometry((9, 8), spacing=(0.8, 1.7), origin=(3, -4), direction=np.array([[c, -s], [s, c]]))
    return Grid.from_geometry((7, 6, 8), spacing=(1.0, 1.5, 0.7), origin=(2, 1, -3), direction=_rot3(0.4, -0.5))


def _field(grid: Grid, fn) -> torch.Tensor:
    """Field ``(2, D, *S)`` from ``fn(x (…, D)) -> (…, D)`` in world mm; batch of two (second doubled)."""
    u = fn(grid.points(torch.float64)).movedim(-1, 0)
    return torch.stack([u, 2 * u], 0)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("penalty", PENALTIES, ids=lambda f: f.__name__)
def test_constant_field_costs_nothing(ndim: int, penalty) -> None:
    grid = _grid(ndim)
    disp = torch.tensor([1.5, -2.0, 0.7][:ndim], dtype=torch.float64).reshape(1, ndim, *[1] * ndim)
    out = penalty(disp.expand(2, ndim, *grid.shape).contiguous(), grid)
    assert out.shape == (2,)
    torch.testing.assert_close(out, torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("ndim", [2, 3])
def test_linear_field_values(ndim: int) -> None:
    grid = _grid(ndim)
    a = np.array([[0.1, -0.2, 0.05], [0.3, 0.0, -0.1], [0.02, 0.04, -0.3]])[:ndim, :ndim]
    disp = _field(grid, lambda x: x @ torch.as_tensor(a).T)
    scale = torch.tensor([1.0, 4.0], dtype=torch.float64)  # the second field is doubled
    torch.testing.assert_close(R.diffusion(disp, grid), scale * float((a**2).sum()))
    torch.testing.assert_close(R.bending_energy(disp, grid), torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(R.curvature(disp, grid), torch.zeros(2, dtype=torch.float64))
    e = (a + a.T) / 2
    elastic = 0.7 * (e**2).sum() + 0.3 / 2 * np.trace(e) ** 2
    torch.testing.assert_close(R.linear_elasticity(disp, grid, mu=0.7, lam=0.3), scale * float(elastic))


def test_elasticity_vanishes_on_the_linearisation_of_a_rotation() -> None:
    grid = _grid(3)
    w = np.array([0.2, -0.1, 0.3])
    skew = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
    disp = _field(grid, lambda x: x @ torch.as_tensor(skew).T + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(R.linear_elasticity(disp, grid, mu=2.0, lam=5.0), torch.zeros(2, dtype=torch.float64))
    assert float(R.diffusion(disp, grid)[0]) > 0.1  # diffusion does penalise it


def test_quadratic_field_has_the_known_constant_bending_and_curvature_2d() -> None:
    grid = _grid(2)
    a, b, c = 0.05, -0.03, 0.02  # u0 = a x^2 + b x y, u1 = c y^2 (world mm)
    disp = _field(grid, lambda x: torch.stack([a * x[..., 0] ** 2 + b * x[..., 0] * x[..., 1], c * x[..., 1] ** 2], -1))
    scale = torch.tensor([1.0, 4.0], dtype=torch.float64)
    # Hessians: u0 [[2a, b], [b, 0]], u1 [[0, 0], [0, 2c]]
    torch.testing.assert_close(R.bending_energy(disp, grid), scale * ((2 * a) ** 2 + 2 * b**2 + (2 * c) ** 2))
    torch.testing.assert_close(R.curvature(disp, grid), scale * ((2 * a) ** 2 + (2 * c) ** 2))


def test_quadratic_field_has_the_known_constant_bending_and_curvature_3d() -> None:
    grid = _grid(3)
    # u0 = 0.02 x y + 0.01 z^2, u1 = 0.03 x^2, u2 = -0.02 y z
    disp = _field(grid, lambda x: torch.stack([0.02 * x[..., 0] * x[..., 1] + 0.01 * x[..., 2] ** 2,
                                               0.03 * x[..., 0] ** 2, -0.02 * x[..., 1] * x[..., 2]], -1))
    bending = 2 * 0.02**2 + 0.02**2 + 0.06**2 + 2 * 0.02**2
    curv = 0.02**2 + 0.06**2 + 0.0
    scale = torch.tensor([1.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(R.bending_energy(disp, grid), scale * bending)
    torch.testing.assert_close(R.curvature(disp, grid), scale * curv)


def test_sheared_grid_uses_the_full_metric() -> None:
    # a non-orthogonal voxel frame: P = M M^T has off-diagonal terms
    world_from_voxel = np.array([[1.0, 0.4, 0.0], [0.0, 1.2, 0.0], [0.0, 0.0, 1.0]])
    grid = Grid((9, 10), world_from_voxel)
    a, b = 0.04, -0.03
    disp = _field(grid, lambda x: torch.stack([a * x[..., 0] * x[..., 1], b * x[..., 0] ** 2], -1))
    scale = torch.tensor([1.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(R.bending_energy(disp, grid), scale * (2 * a**2 + (2 * b) ** 2))
    torch.testing.assert_close(R.curvature(disp, grid), scale * (2 * b) ** 2)
    m = np.array([[0.1, -0.2], [0.3, 0.05]])
    lin = _field(grid, lambda x: x @ torch.as_tensor(m).T)
    torch.testing.assert_close(R.diffusion(lin, grid), scale * float((m**2).sum()))


def test_matches_monai_on_a_unit_grid() -> None:
    monai_deform = pytest.importorskip("monai.losses.deform", reason="MONAI is the test oracle")
    grid = Grid((10, 9, 8))
    disp = torch.randn(2, 3, 10, 9, 8, dtype=torch.float64)
    # MONAI's reduction="none" keeps (B, C, *S'); ours sums components and averages voxels
    be = monai_deform.BendingEnergyLoss(reduction="none")(disp).sum(1).flatten(1).mean(1)
    torch.testing.assert_close(R.bending_energy(disp, grid), be)
    diff = monai_deform.DiffusionLoss(reduction="none")(disp).sum(1).flatten(1).mean(1)
    torch.testing.assert_close(R.diffusion(disp, grid), diff)


def test_finite_difference_bending_matches_the_analytic_bspline_energy() -> None:
    coarse = Grid.from_geometry((6, 5), spacing=(2.0, 2.5))
    lattice = control_grid(coarse, 4.0)
    coeffs = torch.randn(1, 2, *lattice.shape, dtype=torch.float64)
    analytic = bspline_bending_energy(coeffs, lattice, coarse)
    # 20x finer cells tiling the box of coarse voxel centres, the region the analytic energy integrates
    k = 20
    fine_from_coarse = np.diag([1 / k, 1 / k, 1.0])
    fine_from_coarse[:2, 2] = 0.5 / k
    fine = Grid([(n - 1) * k for n in coarse.shape], coarse.world_from_voxel @ fine_from_coarse)
    estimate = R.bending_energy(evaluate_bspline(coeffs, lattice, fine), fine)
    torch.testing.assert_close(estimate, analytic, rtol=0.015, atol=0)  # O(1/k): the stencils skip the edge cells


def test_folding_is_zero_for_a_diffeomorphism_and_positive_when_folded() -> None:
    grid = Grid((16, 16))
    x = grid.points(torch.float64)
    smooth = torch.stack([0.8 * torch.sin(x[..., 0] / 5), 0.8 * torch.sin(x[..., 1] / 5)], 0)[None]  # det >= 0.7
    assert float(R.folding(smooth, grid)) == 0
    assert float(R.folding(smooth, grid, threshold=0.95)) > 0  # compression below the margin counts
    folded = smooth.clone()
    folded[0, 0, 6:10] = torch.linspace(3.0, -3.0, 4, dtype=torch.float64)[:, None]  # x + u decreases: a fold
    assert float(R.folding(folded, grid)) > 0


@pytest.mark.parametrize("ndim", [2, 3])
def test_folding_agrees_with_the_jacobian_determinant_inside(ndim: int) -> None:
    grid = _grid(ndim)
    disp = 0.8 * torch.randn(2, ndim, *grid.shape, dtype=torch.float64)
    det = jacobian_det(disp, grid)[(slice(None),) + (slice(1, -1),) * ndim]
    expected = torch.relu(0.5 - det).square().flatten(1).mean(1)
    assert float(expected.min()) > 0
    torch.testing.assert_close(R.folding(disp, grid, threshold=0.5), expected)


@pytest.mark.parametrize("penalty", PENALTIES, ids=lambda f: f.__name__)
def test_gradcheck(penalty) -> None:
    grid = Grid.from_geometry((4, 3, 3), spacing=(1.0, 1.5, 2.0), direction=_rot3(0.3, 0.2))
    disp = torch.randn(2, 3, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    if penalty is R.folding:
        assert torch.autograd.gradcheck(lambda u: penalty(u, grid, threshold=0.9), (disp,))
    else:
        assert torch.autograd.gradcheck(lambda u: penalty(u, grid), (disp,))


@pytest.mark.parametrize("penalty", [R.diffusion, R.bending_energy, R.curvature, R.linear_elasticity],
                         ids=lambda f: f.__name__)
def test_gradcheck_on_a_sheared_grid(penalty) -> None:
    grid = Grid((4, 3, 3), np.array([[1.0, 0.3, 0.0, 0], [0.0, 1.2, 0.2, 0], [0.1, 0.0, 0.9, 0], [0, 0, 0, 1]]))
    disp = torch.randn(2, 3, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: penalty(u, grid), (disp,))


def test_bad_input_is_named() -> None:
    grid = Grid((5, 5))
    with pytest.raises(InputError, match="disp"):
        R.diffusion(torch.zeros(1, 3, 5, 5), grid)
    with pytest.raises(InputError, match="at least 3 voxels"):
        R.bending_energy(torch.zeros(1, 2, 5, 2), Grid((5, 2)))
    with pytest.raises(InputError, match="mu"):
        R.linear_elasticity(torch.zeros(1, 2, 5, 5), grid, mu=-1.0)
    with pytest.raises(InputError, match="weight"):
        Diffusion(weight=-0.1)
    with pytest.raises(InputError, match="weight"):
        Diffusion(weight=float("nan"))
    with pytest.raises(InputError, match="lam"):
        LinearElasticity(lam=-2.0)
    with pytest.raises(InputError, match="threshold"):
        JacobianFolding(threshold=-0.5)
    with pytest.raises(InputError, match="reduction"):
        Curvature(reduction="max")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="sigma_mm"):
        R.smooth_field(torch.zeros(1, 2, 5, 5), grid, -1.0)


def test_modules_weight_reduce_and_describe_themselves() -> None:
    grid = _grid(2)
    a = np.array([[0.1, -0.2], [0.3, -0.4]])
    disp = _field(grid, lambda x: x @ torch.as_tensor(a).T)
    value = float((a**2).sum())
    torch.testing.assert_close(Diffusion(weight=2.0)(disp, grid), torch.tensor(2.0 * value * 2.5, dtype=torch.float64))
    torch.testing.assert_close(Diffusion(reduction="sum")(disp, grid), torch.tensor(value * 5, dtype=torch.float64))
    assert Diffusion(reduction="none")(disp, grid).shape == (2,)
    assert repr(LinearElasticity(mu=0.5, lam=2.0)) == "LinearElasticity(mu=0.5, lam=2.0, weight=1.0, reduction='mean')"
    assert "threshold=0.1" in repr(JacobianFolding(threshold=0.1))
    assert set(REGULARISERS) == {"diffusion", "bending", "curvature", "elastic", "folding"}
    assert REGULARISERS["bending"] is BendingEnergy
    for cls in REGULARISERS.values():
        assert float(cls()(torch.zeros(1, 2, *grid.shape), grid)) == 0


def test_smooth_field_converts_mm_to_voxels() -> None:
    grid = Grid.from_geometry((20, 12), spacing=(2.0, 0.5))
    disp = torch.randn(2, 2, 20, 12)
    torch.testing.assert_close(R.smooth_field(disp, grid, 4.0), gaussian_smooth(disp, [2.0, 8.0]))
    const = torch.full((1, 2, 20, 12), 3.0)
    torch.testing.assert_close(R.smooth_field(const, grid, (1.0, 2.0)), const)
