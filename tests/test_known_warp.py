"""Known-warp benchmark: its drawn maps (fast) and the recovery of one by the `syn` preset (slow)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, data_file

sys.path.insert(0, str(REPO / "benchmarks"))
import known_warp as kw  # noqa: E402


def _oblique_grid() -> np.ndarray:
    """A 3-D world-from-voxel matrix with a rotated, anisotropic (1.2, 0.9, 2.0 mm) and flipped voxel axis."""
    c, s = np.cos(0.4), np.sin(0.4)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, -1.0]]) @ np.diag([1.2, 0.9, 2.0])
    affine[:3, 3] = [5.0, -3.0, 7.0]
    return affine


def test_jacobian_is_taken_in_world_axes() -> None:
    """det J of u(x) = (A - I) x is det A on an oblique, anisotropic grid; catches a Jacobian that
    forgets the direction matrix or the spacing (it would read det A scaled by the voxel shape)."""
    affine = _oblique_grid()
    a = np.array([[1.1, 0.2, 0.0], [0.05, 0.9, 0.1], [0.0, -0.1, 1.3]])
    x = kw.voxel_points((6, 7, 5), affine)
    u = np.einsum("ij,j...->i...", a - np.eye(3), x)
    np.testing.assert_allclose(kw.jacobian_det(u, affine), np.linalg.det(a), rtol=1e-10)


def test_exponential_of_the_drawn_velocity_inverts_by_negation() -> None:
    """exp(v) o exp(-v) = id to interpolation accuracy, and a constant velocity integrates to itself;
    catches a composition that mixes world mm and voxel units or samples the wrong point."""
    affine = _oblique_grid()
    shape = (24, 26, 20)
    constant = np.broadcast_to(np.array([1.5, -0.7, 2.0]).reshape(3, 1, 1, 1), (3, *shape)).copy()
    np.testing.assert_allclose(kw.exponential(constant, affine), constant, atol=1e-9)
    v = 2.0 * kw.draw_velocity(shape, affine, seed=3, sigma_mm=8.0)
    roundtrip = kw.compose(kw.exponential(v, affine), kw.exponential(-v, affine), affine)
    inner = (slice(None),) + (slice(4, -4),) * 3  # away from the clamped edges
    assert np.abs(roundtrip[inner]).max() < 0.05 * np.abs(v).max()


@pytest.mark.slow
def test_syn_recovers_a_drawn_warp(tmp_path: Path) -> None:
    """The headline figure on one small case (a 2-D slice, 2 mm mean drawn warp): the `syn` preset's
    map is within 0.5 mm mean and 1.0 mm p95 of the truth inside the head (measured 0.31 / 0.69 mm;
    ANTsPy SyN 0.28 / 0.81 mm; 2.0 / 4.0 mm before registration), without folding. Catches a preset
    or engine change that loses accuracy on images it was not run on by `benchmarks/deformable.py`."""
    from torchalign.config import load_preset
    from torchalign.io import read_image
    from torchalign.registration import register

    data_file("slices2d/r16slice.jpg")
    case = kw.make_case("slice-r16", seed=0, magnitude=2.0, sigma=10.0, spacing=2.0, work=tmp_path)
    fixed = read_image(case.fixed)
    result = register(fixed, read_image(case.moving), load_preset("syn"))
    with torch.no_grad():
        field = result.transform.displacement(fixed.grid)[0].double().numpy()
    before, after = kw.score(np.zeros_like(case.truth), case), kw.score(field, case)
    assert before["mean"] == pytest.approx(2.0, rel=0.02)
    assert after["mean"] < 0.5 and after["p95"] < 1.0, after
    assert after["fold"] == 0.0


def test_field_sigma_reaches_every_view_of_a_velocity_model() -> None:
    """With ``field_sigma`` the inverse, the mid-space halves and a model carried onto a finer level
    all see the same smoothed velocity: T^-1(T(x)) = x, exp(-v_m) o exp(v_f) = T, and the carried
    model's map matches. Catches a view built without the option (it would integrate the raw,
    rough parameter) or a sigma in voxels (the finer level would smooth less)."""
    from torchalign.grid import Grid
    from torchalign.registration.deformable import build

    grid = Grid.from_geometry((24, 20, 16), spacing=(2.0, 2.0, 2.0))
    options = {"stride": 2, "steps": 7, "field_sigma": 4.0}
    model = build("syn", grid, options, None)
    with torch.no_grad():
        model.velocity_fixed.copy_(3.0 * torch.randn_like(model.velocity_fixed))
        x = grid.points()[4:-4, 4:-4, 4:-4].reshape(1, -1, 3).float()  # away from the clamped edges
        y = model(x)
        size = float((y - x).norm(dim=-1).mean())
        assert size > 0.3  # a real deformation
        assert float((model.inverse()(y) - x).norm(dim=-1).mean()) < 0.05 * size
        to_fixed, to_moving = model.halves()
        mid = to_fixed.inverse()(x)
        assert float((to_moving(mid) - y).norm(dim=-1).mean()) < 0.05 * size
        finer_grid = Grid.from_geometry((48, 40, 32), spacing=(1.0, 1.0, 1.0), origin=(-0.5, -0.5, -0.5))  # same extent
        finer = build("syn", finer_grid, options, model)
        assert float((finer(x) - y).norm(dim=-1).mean()) < 0.05 * size
