"""Jacobian matrix, determinant and curl of world-mm displacement fields."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchalign.errors import InputError
from torchalign.functional.jacobian import curl, jacobian_det, jacobian_matrix
from torchalign.grid import Grid


def _rot3(a: float, b: float) -> np.ndarray:
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    return rz @ ry


def _linear_field(grid: Grid, a: np.ndarray, batch: int = 1) -> torch.Tensor:
    """``u(x) = A x`` (world mm) on ``grid``: ``(B, D, *S)`` float64."""
    u = grid.points(torch.float64) @ torch.as_tensor(a).T
    return u.movedim(-1, 0).unsqueeze(0).expand(batch, *u.movedim(-1, 0).shape).contiguous()


def _oblique3() -> Grid:
    return Grid.from_geometry((7, 6, 5), spacing=(1.0, 1.5, 2.5), origin=(4, -3, 2), direction=_rot3(0.5, -0.3))


@pytest.mark.parametrize("ndim", [2, 3])
def test_linear_field_has_a_constant_jacobian_on_an_oblique_anisotropic_grid(ndim: int) -> None:
    if ndim == 3:
        grid = _oblique3()
        a = np.array([[0.1, -0.2, 0.05], [0.3, 0.0, -0.1], [0.02, 0.04, -0.3]])
    else:
        c, s = math.cos(0.7), math.sin(0.7)
        grid = Grid.from_geometry((8, 6), spacing=(0.7, 1.9), direction=np.array([[c, -s], [s, c]]))
        a = np.array([[0.1, -0.2], [0.3, -0.4]])
    disp = _linear_field(grid, a, batch=2)
    jac = jacobian_matrix(disp, grid)
    assert jac.shape == (2, *grid.shape, ndim, ndim)
    expected = torch.as_tensor(np.eye(ndim) + a).expand_as(jac)
    torch.testing.assert_close(jac, expected)  # exact at the borders too (one-sided differences)
    det = jacobian_det(disp, grid)
    assert det.shape == (2, *grid.shape)
    torch.testing.assert_close(det, torch.full_like(det, float(np.linalg.det(np.eye(ndim) + a))))


def test_curl_of_a_rotation_generator_is_twice_the_angular_velocity() -> None:
    grid = _oblique3()
    w = np.array([0.3, -0.1, 0.2])
    skew = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])  # u = w x x
    out = curl(_linear_field(grid, skew), grid)
    assert out.shape == (1, 3, *grid.shape)
    torch.testing.assert_close(out, torch.as_tensor(2 * w).reshape(1, 3, 1, 1, 1).expand_as(out))
    grid2 = Grid.from_geometry((6, 5), spacing=(1.0, 2.0))
    out2 = curl(_linear_field(grid2, np.array([[0.0, -0.25], [0.25, 0.0]])), grid2)
    assert out2.shape == (1, 6, 5)
    torch.testing.assert_close(out2, torch.full_like(out2, 0.5))
    # a gradient field (symmetric A) has no curl
    torch.testing.assert_close(curl(_linear_field(grid, skew @ skew), grid), torch.zeros(1, 3, *grid.shape,
                                                                                       dtype=torch.float64))


def test_quadratic_field_jacobian_is_exact_inside() -> None:
    grid = Grid.from_geometry((9, 8), spacing=(1.0, 0.5))
    x = grid.points(torch.float64)
    disp = torch.stack([0.01 * x[..., 0] ** 2, 0.02 * x[..., 0] * x[..., 1]], 0)[None]
    det = jacobian_det(disp, grid)
    expected = (1 + 0.02 * x[..., 0]) * (1 + 0.02 * x[..., 0])  # J = [[1 + .02 x, 0], [.02 y, 1 + .02 x]]
    torch.testing.assert_close(det[0, 1:-1, 1:-1], expected[1:-1, 1:-1])


def test_a_folded_field_has_negative_determinant() -> None:
    grid = Grid((12, 12))
    disp = _linear_field(grid, np.array([[-1.5, 0.0], [0.0, 0.0]]))  # x -> -0.5 x: a reflection
    assert (jacobian_det(disp, grid) < 0).all()


def test_bad_input_names_disp() -> None:
    grid = Grid((6, 6))
    with pytest.raises(InputError, match="disp"):
        jacobian_det(torch.zeros(1, 3, 6, 6), grid)
    with pytest.raises(InputError, match="disp"):
        jacobian_matrix(torch.zeros(1, 2, 6, 5), grid)
    with pytest.raises(InputError, match="disp"):
        curl(torch.zeros(1, 2, 6, 6, dtype=torch.int64), grid)


def test_gradcheck_determinant_and_curl() -> None:
    grid = Grid.from_geometry((4, 3, 3), spacing=(1.0, 2.0, 1.5), direction=_rot3(0.2, 0.1))
    disp = (0.2 * torch.randn(1, 3, 4, 3, 3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda u: jacobian_det(u, grid), (disp,))
    assert torch.autograd.gradcheck(lambda u: curl(u, grid), (disp,))
