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


@pytest.mark.parametrize("shape", [(5, 4, 4), (5, 4, 2)], ids=["full", "thin"])
@pytest.mark.parametrize("penalty", PENALTIES, ids=lambda f: f.__name__)
def test_gradcheck(penalty, shape) -> None:
    """The analytic backward passes (adjoint stencils, cofactors) equal finite differences, also with a
    thin axis (its voxels all count, no stencil along it)."""
    grid = Grid.from_geometry(shape, spacing=(1.0, 1.5, 2.0), direction=_rot3(0.3, 0.2))
    disp = torch.randn(2, 3, *shape, dtype=torch.float64, requires_grad=True)
    if penalty is R.folding:
        assert torch.autograd.gradcheck(lambda u: penalty(u, grid, threshold=0.9), (disp,))
    else:
        assert torch.autograd.gradcheck(lambda u: penalty(u, grid), (disp,))


@pytest.mark.parametrize("penalty", [R.diffusion, R.bending_energy, R.curvature, R.linear_elasticity],
                         ids=lambda f: f.__name__)
def test_gradcheck_on_a_sheared_grid(penalty) -> None:
    grid = Grid((5, 4, 4), np.array([[1.0, 0.3, 0.0, 0], [0.0, 1.2, 0.2, 0], [0.1, 0.0, 0.9, 0], [0, 0, 0, 1]]))
    disp = torch.randn(2, 3, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: penalty(u, grid), (disp,))


def test_bad_input_is_named() -> None:
    grid = Grid((5, 5))
    with pytest.raises(InputError, match="disp"):
        R.diffusion(torch.zeros(1, 3, 5, 5), grid)
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


# ---- thin axes: 2-D in 3-D ------------------------------------------------------------------------
def _slab(depth: int, direction_2d: np.ndarray | None = None) -> tuple[Grid, Grid]:
    """An in-plane grid (9, 8) and the same plane as a 3-D grid ``depth`` slices of 2.5 mm thick."""
    direction = np.eye(2) if direction_2d is None else direction_2d
    plane = Grid.from_geometry((9, 8), spacing=(0.8, 1.7), origin=(3, -4), direction=direction)
    direction_3d = np.eye(3)
    direction_3d[:2, :2] = direction
    slab = Grid.from_geometry((9, 8, depth), spacing=(0.8, 1.7, 2.5), origin=(3, -4, 1), direction=direction_3d)
    return plane, slab


@pytest.mark.parametrize("penalty", PENALTIES, ids=lambda f: f.__name__)
def test_a_one_voxel_axis_gives_exactly_the_2d_value(penalty) -> None:
    """Catches a stencil, an interior crop or a voxel count along a 1-voxel axis (this used to raise
    "at least 3 voxels per axis"): an in-plane field on a (9, 8, 1) grid costs exactly its 2-D value."""
    plane, slab = _slab(1)
    disp = torch.randn(2, 2, 9, 8, dtype=torch.float64)
    in_3d = torch.cat([disp, torch.zeros_like(disp[:, :1])], 1)[..., None]
    assert torch.equal(penalty(in_3d, slab), penalty(disp, plane))
    assert float(penalty(disp, plane).max()) > 0 or penalty is R.folding


@pytest.mark.parametrize("penalty", [R.diffusion, R.bending_energy, R.curvature], ids=lambda f: f.__name__)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_thin_slabs_penalise_each_slice_in_plane(penalty, depth) -> None:
    """A slab of 1-3 slices is 2-D in 3-D (as ANTs): no derivative across slices, each slice costs its 2-D
    value, the through-plane component as a 2-D field ``(u_z, 0)``, and the slices are averaged. Catches
    a difference across slices (a field that varies only across them would cost something)."""
    c, s = math.cos(0.6), math.sin(0.6)
    plane, slab = _slab(depth, np.array([[c, -s], [s, c]]))
    disp = torch.randn(2, 3, 9, 8, depth, dtype=torch.float64)
    per_slice = torch.stack([penalty(disp[:, :2, ..., z], plane) + penalty(
        torch.cat([disp[:, 2:, ..., z], torch.zeros_like(disp[:, 2:, ..., z])], 1), plane) for z in range(depth)])
    torch.testing.assert_close(penalty(disp, slab), per_slice.mean(0), rtol=1e-12, atol=0)
    across = torch.zeros_like(disp)
    across[:, :, ..., 0] = 1.0  # varies only across the slices
    torch.testing.assert_close(penalty(across, slab), torch.zeros(2, dtype=torch.float64))


def test_elasticity_and_folding_on_a_thin_slab() -> None:
    """Analytic values with one thin axis: ``u = A x`` with ``A``'s through-plane column ignored (no
    derivative across slices), so elasticity sees ``A`` with that column zeroed, and det J = det of the
    in-plane block. Catches a through-plane derivative taken from 2 slices."""
    _, slab = _slab(2)
    a = np.array([[0.1, -0.2, 0.5], [0.3, 0.0, -0.4], [0.02, 0.04, 0.3]])
    disp = _field(slab, lambda x: x @ torch.as_tensor(a).T)
    seen = a.copy()
    seen[:, 2] = 0.0
    e = (seen + seen.T) / 2
    elastic = 0.7 * (e**2).sum() + 0.3 / 2 * np.trace(e) ** 2
    scale = torch.tensor([1.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(R.linear_elasticity(disp, slab, mu=0.7, lam=0.3), scale * float(elastic))
    torch.testing.assert_close(R.diffusion(disp, slab), scale * float((seen**2).sum()))
    det = np.linalg.det(np.eye(2) + 2 * a[:2, :2])  # the doubled field of the pair
    torch.testing.assert_close(R.folding(disp, slab, threshold=0.99),
                               torch.tensor([max(0.0, 0.99 - np.linalg.det(np.eye(2) + a[:2, :2])) ** 2,
                                             max(0.0, 0.99 - det) ** 2], dtype=torch.float64))


def test_matches_monai_on_a_single_slice() -> None:
    """MONAI's 2-D losses on the slice equal ours on the (10, 9, 1) volume (unit spacing): a peer's
    2-D-in-3-D value, not only our own 2-D one."""
    monai_deform = pytest.importorskip("monai.losses.deform", reason="MONAI is the test oracle")
    disp = torch.randn(2, 2, 10, 9, dtype=torch.float64)
    volume = torch.cat([disp, torch.zeros_like(disp[:, :1])], 1)[..., None]
    be = monai_deform.BendingEnergyLoss(reduction="none")(disp).sum(1).flatten(1).mean(1)
    torch.testing.assert_close(R.bending_energy(volume, Grid((10, 9, 1))), be)
    diff = monai_deform.DiffusionLoss(reduction="none")(disp).sum(1).flatten(1).mean(1)
    torch.testing.assert_close(R.diffusion(volume, Grid((10, 9, 1))), diff)
