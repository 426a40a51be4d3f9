"""Deformable transforms: dense, B-spline FFD, SVF, SVFFD and the symmetric (SyN-like) model."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchalign.errors import InputError
from torchalign.functional.bspline import bspline_gradient, control_grid, evaluate_bspline
from torchalign.functional.flow import compose_fields, integrate_velocity, resample_field
from torchalign.grid import Grid
from torchalign.transforms import Compose
from torchalign.transforms.bspline import BSplineFFD
from torchalign.transforms.dense import DenseDisplacement, on_grid, strided_grid
from torchalign.transforms.linear import MatrixTransform
from torchalign.transforms.velocity import BSplineVelocity, StationaryVelocity, SymmetricVelocity


def _grid(ndim: int) -> Grid:
    if ndim == 2:
        return Grid.from_geometry((40, 36), spacing=(1.0, 1.2), origin=(-20, -21))
    return Grid.from_geometry((22, 20, 18), spacing=(1.0, 1.1, 1.2), origin=(-11, -11, -10))


def _smooth(grid: Grid, amplitude: float, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A smooth random field ``(B, D, *S)`` in mm: a B-spline with control points ~10 mm apart."""
    gen = torch.Generator().manual_seed(seed)
    lattice = control_grid(grid, 10.0)
    coeffs = amplitude * torch.randn(batch, grid.ndim, *lattice.shape, generator=gen, dtype=torch.float64)
    return evaluate_bspline(coeffs, lattice, grid).float()


def _points(grid: Grid, batch: int = 1) -> torch.Tensor:
    return grid.points().unsqueeze(0).expand(batch, *grid.shape, grid.ndim)


def _interior(grid: Grid, margin: int) -> tuple[slice, ...]:
    return (slice(None),) + (slice(margin, -margin),) * grid.ndim


def _make(kind: str, grid: Grid, amplitude: float = 1.5, batch: int = 2):
    """A transform of each kind holding a smooth random deformation."""
    field = _smooth(grid, amplitude, batch)
    if kind == "dense":
        return DenseDisplacement.from_field(field, grid)
    if kind == "ffd":
        lattice = control_grid(grid, 8.0)
        coeffs = amplitude * torch.randn(batch, grid.ndim, *lattice.shape)
        return BSplineFFD(grid, 8.0, coeffs=coeffs)
    if kind == "svf":
        return StationaryVelocity(grid, velocity=field)
    if kind == "svffd":
        lattice = control_grid(grid, 8.0)
        return BSplineVelocity(grid, 8.0, coeffs=amplitude * torch.randn(batch, grid.ndim, *lattice.shape))
    return SymmetricVelocity(grid, velocity_fixed=field, velocity_moving=-0.5 * _smooth(grid, amplitude, batch, 1))


KINDS = ["dense", "ffd", "svf", "svffd", "syn"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ndim", [2, 3])
def test_zero_parameters_are_the_identity(kind: str, ndim: int) -> None:
    grid = _grid(ndim)
    t = {"dense": lambda: DenseDisplacement(grid, stride=2, batch=2),
         "ffd": lambda: BSplineFFD(grid, 6.0, batch=2),
         "svf": lambda: StationaryVelocity(grid, stride=2, batch=2),
         "svffd": lambda: BSplineVelocity(grid, 6.0, batch=2),
         "syn": lambda: SymmetricVelocity(grid, batch=2)}[kind]()
    assert t.batch == 2 and t.ndim == ndim
    x = _points(grid)
    torch.testing.assert_close(t(x), x.expand(2, *x.shape[1:]))
    pts = torch.rand(1, 7, ndim) * 10
    torch.testing.assert_close(t(pts), pts.expand(2, 7, ndim))
    assert t.displacement(grid).shape == (2, ndim, *grid.shape)
    assert float(t.displacement(grid).abs().max()) == 0


def test_on_grid_detects_exact_voxel_centres_only() -> None:
    grid = _grid(3)
    x = _points(grid, 2)
    assert on_grid(x, grid)
    assert on_grid(x + 1e-5, grid)  # within the 1e-4 mm tolerance
    assert not on_grid(x + 1e-3, grid)
    shifted = x.clone()
    shifted[:, 5, 5, 5, 0] += 0.5  # an interior point moved: corners still match
    assert not on_grid(shifted, grid)
    assert not on_grid(x.reshape(2, -1, 3), grid)


def test_dense_field_at_a_stride_interpolates_linearly_and_resamples_to_the_image_grid() -> None:
    grid = _grid(2)
    t = DenseDisplacement(grid, stride=2, batch=2)
    assert t.field.shape == (2, 2, 20, 18)
    a = torch.tensor([[0.05, -0.02], [0.01, 0.03]])
    with torch.no_grad():
        t.field.copy_((t.field_grid.points() @ a.T + torch.tensor([1.0, -0.5])).movedim(-1, 0).expand(2, 2, 20, 18))
    pts = torch.rand(2, 9, 2) * 20 - 10  # well inside the grid
    torch.testing.assert_close(t(pts), pts + pts @ a.T + torch.tensor([1.0, -0.5]), atol=1e-5, rtol=0)
    disp = t.displacement(grid)
    x = grid.points()
    inside = _interior(grid, 2)
    torch.testing.assert_close(disp[inside], (x @ a.T + torch.tensor([1.0, -0.5])).movedim(-1, 0).expand(2, 2, 40, 36)
                               [inside], atol=1e-5, rtol=0)


def test_dense_inverse_reports_its_residual_and_round_trips() -> None:
    grid = _grid(2)
    t = _make("dense", grid)
    inv = t.inverse(iterations=50, tol=1e-3)
    assert isinstance(inv, DenseDisplacement) and inv.residual is not None
    assert float(inv.residual.max_mm.max()) <= 1e-3
    x = _points(grid, 2)
    forward_after = (t(inv(x)) - x).norm(dim=-1)  # the quantity the residual reports
    assert float(forward_after.max()) <= 1.1e-3
    backward_after = (inv(t(x)) - x).norm(dim=-1)
    assert float(backward_after.median()) < 0.02


def test_bad_parameters_raise_input_errors() -> None:
    grid = _grid(2)
    with pytest.raises(InputError, match="field"):
        DenseDisplacement(grid, field=torch.zeros(1, 2, 5, 5))
    with pytest.raises(InputError, match="stride"):
        DenseDisplacement(grid, stride=0)
    with pytest.raises(InputError, match="coeffs"):
        BSplineFFD(grid, 5.0, coeffs=torch.zeros(1, 2, 3, 3))
    with pytest.raises(InputError, match="control_spacing_mm"):
        BSplineFFD(grid, -5.0)
    with pytest.raises(InputError, match="steps"):
        StationaryVelocity(grid, steps=-2)
    with pytest.raises(InputError, match="velocity_moving"):
        SymmetricVelocity(grid, velocity_moving=torch.zeros(1, 3, 40, 36))


@pytest.mark.parametrize("ndim", [2, 3])
def test_ffd_grid_fast_path_matches_the_point_path(ndim: int) -> None:
    grid = _grid(ndim)
    t = _make("ffd", grid)
    x = _points(grid)
    dense = t(x)  # separable fast path
    listed = t(x.reshape(1, -1, ndim)).reshape(dense.shape)  # 4^D gather
    torch.testing.assert_close(dense, listed, atol=1e-5, rtol=0)
    torch.testing.assert_close(t.displacement(grid), (dense - x).movedim(-1, 1), atol=1e-5, rtol=0)


def test_points_that_need_a_gradient_skip_the_grid_shortcut() -> None:
    grid = _grid(2)
    t = _make("ffd", grid, batch=1)
    x = _points(grid).clone().requires_grad_()
    t(x).sum().backward()
    # d/dx_j sum_i (x_i + u_i(x)) = 1 + sum_i du_i/dx_j, with the exact spline derivatives
    expected = 1 + bspline_gradient(t.coeffs.detach(), t.lattice, grid)[0].sum(0).movedim(0, -1)
    torch.testing.assert_close(x.grad[0], expected, atol=1e-4, rtol=0)
    assert float((expected - 1).abs().max()) > 0.1


def test_ffd_bending_energy_and_gradients() -> None:
    grid = _grid(2)
    t = BSplineFFD(grid, 6.0)
    lattice = t.lattice
    j = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in lattice.shape], indexing="ij"), 0)
    with torch.no_grad():  # u_0 = 6 t_0^2 (t: lattice coordinates, 6 mm apart) = x_0^2 / 6 + ...
        t.coeffs[0, 0] = 6 * (j[0] ** 2 - 1 / 3)
    torch.testing.assert_close(t.bending_energy(), torch.tensor([(2 / 6) ** 2]), rtol=1e-4, atol=0)
    (t.bending_energy().sum() + t(torch.rand(1, 5, 2) * 10).sum()).backward()
    assert t.coeffs.grad is not None and float(t.coeffs.grad.abs().sum()) > 0


def test_ffd_inverse_is_a_dense_field_with_a_residual() -> None:
    grid = _grid(2)
    t = _make("ffd", grid, amplitude=1.0)
    inv = t.inverse(iterations=50)
    assert isinstance(inv, DenseDisplacement) and float(inv.residual.max_mm.max()) <= 1e-3
    x = _points(grid, 2)
    assert float((inv(t(x)) - x).norm(dim=-1).median()) < 0.02


@pytest.mark.parametrize("kind", ["svf", "svffd"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_velocity_inverse_is_the_negated_velocity_and_round_trips(kind: str, ndim: int) -> None:
    grid = _grid(ndim)
    t = _make(kind, grid, amplitude=1.5 if kind == "svf" else 1.0)
    inv = t.inverse()
    assert type(inv) is type(t) and inv.sign == -1.0
    assert next(iter(inv.parameters())) is next(iter(t.parameters()))  # shared: follows the optimisation
    torch.testing.assert_close(inv.velocity_field(), -t.velocity_field())
    x = _points(grid, 2)
    residual = (inv(t(x)) - x).norm(dim=-1)[_interior(grid, 3)]
    assert float(residual.median()) < 0.02 and float(residual.max()) < 0.2
    assert inv.inverse().sign == 1.0


def test_rotation_velocity_exponentiates_to_the_rotation_through_a_strided_module() -> None:
    grid = Grid.from_geometry((64, 64), origin=(-31.5, -31.5))
    t = StationaryVelocity(grid, steps=8, stride=2)
    theta = 0.25
    x = t.field_grid.points(torch.float64)
    with torch.no_grad():
        t.velocity.copy_(torch.stack([-theta * x[..., 1], theta * x[..., 0]], 0)[None].float())
    pts = torch.tensor([[[5.0, 3.0], [-8.0, 6.0], [0.0, -10.0]]])
    c, s = math.cos(theta), math.sin(theta)
    expected = pts @ torch.tensor([[c, -s], [s, c]]).T
    torch.testing.assert_close(t(pts), expected, atol=0.02, rtol=0)


def test_velocity_gradients_flow_to_the_parameters_through_the_inverse() -> None:
    grid = _grid(2)
    t = StationaryVelocity(grid, stride=2, velocity=0.1 * torch.randn(1, 2, 20, 18))
    (t.inverse()(torch.rand(1, 6, 2) * 10)).sum().backward()
    assert t.velocity.grad is not None and float(t.velocity.grad.abs().sum()) > 0


def test_strided_velocity_displacement_is_resampled_to_the_requested_grid() -> None:
    grid = _grid(3)
    t = StationaryVelocity(grid, stride=2, velocity=_smooth(grid.downsample(2), 1.0, batch=1))
    assert t.field().shape == (1, 3, 11, 10, 9)
    disp = t.displacement(grid)
    assert disp.shape == (1, 3, *grid.shape)
    x = _points(grid)
    torch.testing.assert_close(disp, (t(x) - x).movedim(-1, 1), atol=1e-5, rtol=0)


def test_bspline_velocity_is_the_spline_of_its_coefficients() -> None:
    grid = _grid(2)
    t = _make("svffd", grid)
    torch.testing.assert_close(t.velocity_field(), evaluate_bspline(t.coeffs, t.lattice, t.field_grid))
    assert t.bending_energy().shape == (2,) and float(t.bending_energy().min()) > 0


def test_symmetric_with_zero_moving_velocity_is_the_plain_svf() -> None:
    grid = _grid(2)
    v = _smooth(grid, 1.5)
    sym = SymmetricVelocity(grid, velocity_fixed=v)
    torch.testing.assert_close(sym.displacement(grid), integrate_velocity(v, grid, 7))


def test_symmetric_with_opposite_velocities_doubles_the_flow() -> None:
    grid = _grid(2)
    v = _smooth(grid, 1.0)
    sym = SymmetricVelocity(grid, velocity_fixed=v, velocity_moving=-v)  # exp(v) o exp(v) = exp(2v)
    inside = _interior(grid, 4)
    error = (sym.displacement(grid) - integrate_velocity(2 * v, grid, 8)).norm(dim=1)
    assert float(error[inside].max()) < 0.05


@pytest.mark.parametrize("ndim", [2, 3])
def test_symmetric_inverse_is_the_swap_and_is_inverse_consistent(ndim: int) -> None:
    grid = _grid(ndim)
    t = _make("syn", grid, amplitude=2.0)
    inv = t.inverse()
    assert inv.velocity_fixed is t.velocity_moving and inv.velocity_moving is t.velocity_fixed
    x = _points(grid, 2)
    residual = (inv(t(x)) - x).norm(dim=-1)
    assert float((t(x) - x).norm(dim=-1).median()) > 0.5  # a real deformation
    assert float(residual.median()) < 0.1  # the brief's bar; ~0.01 mm measured
    assert float(residual[_interior(grid, 3)].max()) < 0.3


def test_symmetric_halves_compose_to_the_transform() -> None:
    grid = _grid(2)
    t = _make("syn", grid)
    fixed_from_mid, moving_from_mid = t.halves()
    assert fixed_from_mid.velocity is t.velocity_fixed and moving_from_mid.velocity is t.velocity_moving
    x = _points(grid, 2)
    torch.testing.assert_close(Compose(fixed_from_mid.inverse(), moving_from_mid)(x), t(x), atol=0.05, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_composes_with_a_linear_pre_transform(kind: str) -> None:
    grid = _grid(2)
    t = _make(kind, grid, amplitude=1.0)
    c, s = math.cos(0.1), math.sin(0.1)
    linear = MatrixTransform(np.array([[c, -s, 1.5], [s, c, -0.5], [0, 0, 1]]))
    chain = Compose(linear, t)
    pts = torch.rand(1, 11, 2) * 16 - 8
    torch.testing.assert_close(chain(pts), t(linear(pts)))
    back = chain.inverse()(chain(pts))
    assert float((back - pts).norm(dim=-1).max()) < 0.05


@pytest.mark.parametrize("ndim", [2, 3])
def test_tied_symmetric_is_exp_of_twice_the_velocity_and_inverse_consistent(ndim: int) -> None:
    grid = _grid(ndim)
    v = _smooth(grid, 1.0)
    t = SymmetricVelocity(grid, velocity_fixed=v, tied=True)
    assert [n for n, _ in t.named_parameters()] == ["velocity_fixed"]
    v_f, v_m = t.velocities()
    torch.testing.assert_close(v_m, -v_f)
    inside = _interior(grid, 4)
    error = (t.displacement(grid) - integrate_velocity(2 * v, grid, 8)).norm(dim=1)
    assert float(error[inside].max()) < 0.05
    inv = t.inverse()
    assert inv.velocity_fixed is t.velocity_fixed and inv.tied  # shared, sign flipped
    torch.testing.assert_close(inv.velocities()[0], -v_f)
    x = _points(grid, 2)
    assert float((inv(t(x)) - x).norm(dim=-1).median()) < 0.05
    fixed_from_mid, moving_from_mid = t.halves()
    assert fixed_from_mid.velocity is t.velocity_fixed and moving_from_mid.velocity is t.velocity_fixed
    torch.testing.assert_close(Compose(fixed_from_mid.inverse(), moving_from_mid)(x), t(x), atol=0.05, rtol=0)


def test_tied_symmetric_refuses_a_moving_velocity() -> None:
    grid = _grid(2)
    with pytest.raises(InputError, match="tied"):
        SymmetricVelocity(grid, velocity_moving=torch.zeros(1, 2, *grid.shape), tied=True)


def test_symmetric_composes_on_the_requested_grid() -> None:
    """On a finer grid the first half is resampled onto it and the second read at the moved points."""
    grid = _grid(3)
    t = SymmetricVelocity(grid, stride=2, velocity_fixed=_smooth(strided_grid(grid, 2), 1.0), tied=True)
    half = integrate_velocity(t.velocity_fixed, t.field_grid, t.steps)
    expected = compose_fields(resample_field(half, t.field_grid, grid), half, grid, t.field_grid)
    torch.testing.assert_close(t.displacement(grid), expected)
    x = _points(grid, 2)
    torch.testing.assert_close(t.displacement(grid), (t(x) - x).movedim(-1, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("make", ["svf", "syn"])
def test_last_squaring_on_the_fine_grid_halves_the_inverse_consistency_error(make: str) -> None:
    """``T^-1 o T`` of a strided velocity model: the last squaring at the points beats interpolating
    the integrated field (what ``resample_field(field(), ...)`` gives)."""
    grid = _grid(3)
    v = _smooth(strided_grid(grid, 2), 3.0, batch=1)
    t = StationaryVelocity(grid, stride=2, steps=6, velocity=v) if make == "svf" else \
        SymmetricVelocity(grid, stride=2, steps=6, velocity_fixed=v / 2, tied=True)
    inv, x = t.inverse(), _points(grid)
    fine = (inv(t(x)) - x).norm(dim=-1)
    coarse_fwd, coarse_inv = (resample_field(m.field(), m.field_grid, grid) for m in (t, inv))
    coarse = compose_fields(coarse_fwd, coarse_inv, grid).norm(dim=1)
    interior = _interior(grid, 2)
    fine_mm, coarse_mm = float(fine[interior].median()), float(coarse[interior].median())
    assert fine_mm < 0.6 * coarse_mm, (fine_mm, coarse_mm)


def test_field_transform_reads_its_own_voxel_centres_and_samples_elsewhere() -> None:
    """A field read back at its voxel centres (fast path) equals linear sampling there; other points
    (float64, or needing a gradient) are sampled."""
    from torchalign.functional.flow import sample_field
    from torchalign.transforms.chain import FieldTransform

    grid = _grid(3)
    field = _smooth(grid, 2.0, batch=1)
    t = FieldTransform(field, grid)
    x = _points(grid).double()
    torch.testing.assert_close(t(x), x + sample_field(field.double(), grid, x), atol=1e-6, rtol=0)
    moved = (x + 0.3).requires_grad_()
    torch.testing.assert_close(t(moved), moved + sample_field(field.double(), grid, moved))
