"""Initialisers: analytic centres, recovered rotations (synthetic, MNIST) and the known_rigid pair."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import data_file
from nibabel.affines import from_matvec
from nibabel.eulerangles import euler2mat
from scipy.spatial.transform import Rotation

from torchalign.errors import InputError
from torchalign.functional.sampling import sample_affine
from torchalign.grid import Grid, apply_matrix
from torchalign.image import Image
from torchalign.registration.initialise import (
    init_center_of_mass,
    init_geometry,
    init_identity,
    init_moments,
    negative_ncc,
    rotation_matrices,
    rotation_search,
)
from torchalign.registration.initialise import _scores, _search_level
from torchalign.resample import resample


def _rigid(rotation: np.ndarray, center: np.ndarray, shift) -> np.ndarray:
    """``x -> R (x - c) + c + shift`` as a homogeneous matrix."""
    d = len(center)
    m = np.eye(d + 1)
    m[:d, :d] = rotation
    m[:d, d] = center - rotation @ center + np.asarray(shift, dtype=float)
    return m


def _moved(fixed: Image, truth: np.ndarray) -> Image:
    """The moving image for which ``truth`` is moving_from_fixed: ``moving(truth x) = fixed(x)``."""
    return resample(fixed, fixed.grid, transform=lambda p: apply_matrix(np.linalg.inv(truth), p))


def _residual(m: np.ndarray, truth: np.ndarray, points: torch.Tensor) -> float:
    """Mean distance (mm) between the two maps over ``points (N, D)``."""
    return float((apply_matrix(m, points) - apply_matrix(truth, points)).norm(dim=-1).mean())


def _angle_deg(m: np.ndarray) -> float:
    return float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))


@pytest.fixture
def ellipsoid() -> Image:
    """An ellipsoid (semi-axes 25, 15, 9 mm) with an off-centre bright blob: no symmetry left."""
    grid = Grid.from_geometry((40, 44, 36), spacing=(2.0, 2.0, 2.5), origin=(-40.0, -44.0, -45.0))
    x = grid.points(torch.float64)
    c = torch.tensor(grid.center())
    body = ((((x - c) / torch.tensor([25.0, 15.0, 9.0])) ** 2).sum(-1) < 1).double()
    blob = torch.exp(-(((x - c - torch.tensor([12.0, 4.0, 0.0])) / 5.0) ** 2).sum(-1))
    return Image((body + 1.5 * blob).float()[None], grid)


def _digit(label: int) -> Image:
    z = np.load(data_file("digits/mnist_t10k.npz"))
    index = int(np.nonzero(z["labels"] == label)[0][0])
    canvas = np.zeros((44, 44), np.float32)  # room to rotate without cropping
    canvas[8:36, 8:36] = z["images"][index]
    return Image(torch.from_numpy(canvas)[None], Grid.from_geometry((44, 44), spacing=(0.5, 0.5), origin=(-5.0, 7.0)))


# ---- centres -------------------------------------------------------------------------------
def test_identity_and_geometry():
    fixed = Image(torch.zeros(1, 10, 20), Grid.from_geometry((10, 20), spacing=(2.0, 1.0), origin=(5.0, 0.0)))
    moving = Image(torch.zeros(1, 6, 6, 6), Grid((6, 6, 6)))
    with pytest.raises(InputError, match="fixed image is 2-D but moving image is 3-D"):
        init_identity(fixed, moving)
    moving = Image(torch.zeros(1, 4, 4), Grid.from_geometry((4, 4), origin=(-3.0, 2.0), direction=-np.eye(2)))
    assert np.array_equal(init_identity(fixed, moving), np.eye(3))
    m = init_geometry(fixed, moving)  # centres: fixed (14, 9.5), moving (-4.5, 0.5)
    assert np.allclose(m, [[1, 0, -18.5], [0, 1, -9], [0, 0, 1]])
    assert np.allclose(apply_matrix(m, torch.tensor(fixed.grid.center())).numpy(), moving.grid.center())


def test_center_of_mass_is_the_intensity_centroid_in_world_mm():
    grid = Grid.from_geometry((8, 8, 8), spacing=(2.0, 1.0, 1.0), origin=(10.0, 0.0, 0.0), direction=np.diag([-1.0, 1, 1]))
    data = torch.full((1, 8, 8, 8), -100.0)  # a constant background weighs nothing
    data[0, 1, 2, 3] = 0.0  # weight 100
    data[0, 5, 2, 3] = 200.0  # weight 300: centroid at voxel (4, 2, 3) -> world (2, 2, 3)
    fixed = Image(data, grid)
    moving = Image(torch.ones(1, 5, 5, 5), Grid((5, 5, 5)))
    moving.data[0, 0, 1, 1, 1] = 3.0  # the only voxel above the minimum
    assert np.allclose(init_center_of_mass(fixed, moving)[:3, 3], [1 - 2, 1 - 2, 1 - 3])
    mask = Image(torch.zeros(1, 8, 8, 8), grid)
    mask.data[0, 0, :3] = 1  # only the first voxel counts: world (10 - 2, 2, 3)
    assert np.allclose(init_center_of_mass(fixed, moving, fixed_mask=mask)[:3, 3], [1 - 8, 1 - 2, 1 - 3])
    coarse_mask = resample(mask, grid.downsample(2), interp="nearest")  # another grid: resampled
    assert np.allclose(init_center_of_mass(fixed, moving, fixed_mask=coarse_mask)[:3, 3], [1 - 8, 1 - 2, 1 - 3])


def test_center_of_mass_errors():
    grid = Grid((6, 6))
    flat = Image(torch.zeros(1, 6, 6), grid)
    ok = Image(torch.rand(1, 6, 6), grid)
    with pytest.raises(InputError, match="fixed image is constant"):
        init_center_of_mass(flat, ok)
    with pytest.raises(InputError, match="moving mask is empty"):
        init_center_of_mass(ok, ok, moving_mask=flat)
    with pytest.raises(InputError, match="batch of 2"):
        init_center_of_mass(Image(torch.rand(2, 1, 6, 6), grid), ok)


def test_center_of_mass_of_a_dark_object_on_a_bright_background():
    """A slide's white background weighs nothing: catches weights ``image - min``, which put the
    centroid of a dark object on a white canvas near the canvas centre."""
    grid = Grid.from_geometry((60, 40), spacing=(0.5, 0.5))
    data = torch.full((1, 60, 40), 250.0)
    data[0, 5:15, 8:20] = 40.0  # dark tissue, centre at voxel (9.5, 13.5)
    fixed = Image(data, grid)
    moving = Image(torch.zeros(1, 60, 40), grid)
    moving.data[0, 0, 30, 20] = 1.0  # a dark background: the bright voxel is the object
    assert np.allclose(init_center_of_mass(fixed, moving)[:2, 2], [(30 - 9.5) * 0.5, (20 - 13.5) * 0.5])


# ---- moments ---------------------------------------------------------------------------------
def test_moments_recover_a_3d_rotation(ellipsoid):
    truth = _rigid(Rotation.from_euler("ZYX", [40, -25, 70], degrees=True).as_matrix(),
                   ellipsoid.grid.center(), [4, -3, 2])
    moving = _moved(ellipsoid, truth)
    points = ellipsoid.grid.points(torch.float64)[ellipsoid.data[0, 0] > 0.5]
    assert _residual(init_center_of_mass(ellipsoid, moving), truth, points) > 10
    assert _residual(init_moments(ellipsoid, moving), truth, points) < 0.5  # third moments pick the signs
    assert _residual(init_moments(ellipsoid, moving, loss=negative_ncc), truth, points) < 0.5  # the loss does


def test_moments_recover_a_2d_rotation_beyond_90_degrees():
    digit = _digit(4)
    truth = _rigid(Rotation.from_euler("z", 150, degrees=True).as_matrix()[:2, :2], digit.grid.center(), [1, -1])
    m = init_moments(digit, _moved(digit, truth))
    assert abs(_angle_deg(m) - 150) < 5


# ---- rotation search ----------------------------------------------------------------------------
def test_rotation_grid():
    r2 = rotation_matrices(2, [0, 90])
    assert np.allclose(r2[1], [[0, -1], [1, 0]])
    r3 = rotation_matrices(3)
    assert np.allclose(r3 @ r3.transpose(0, 2, 1), np.eye(3), atol=1e-12) and np.allclose(np.linalg.det(r3), 1)
    assert len(r3) == len(np.unique(np.round(r3, 6).reshape(len(r3), -1), axis=0))  # no duplicates
    worst = max(min(np.linalg.norm(Rotation.from_matrix(r3 @ q.T).as_rotvec(), axis=1))
                for q in Rotation.random(50, random_state=0).as_matrix())
    assert np.degrees(worst) < 45  # every rotation lies within 45 degrees of a 45-degree grid point
    with pytest.raises(InputError, match="angles_deg"):
        rotation_matrices(2, [])


@pytest.mark.parametrize("label", [2, 7])
def test_rotation_search_finds_a_digit_rotated_by_120_degrees(label):
    digit = _digit(label)
    truth = _rigid(Rotation.from_euler("z", 127, degrees=True).as_matrix()[:2, :2], digit.grid.center(), [1, -0.5])
    moving = _moved(digit, truth)
    assert abs(_angle_deg(rotation_search(digit, moving)) - 127) <= 15  # within one 15-degree step
    refined = rotation_search(digit, moving, refine_steps=6)
    points = digit.grid.points(torch.float64)[digit.data[0, 0] > 0]
    assert abs(_angle_deg(refined) - 127) < 2 and _residual(refined, truth, points) < 0.3


def test_rotation_search_scores_candidates_as_batches(ellipsoid):
    """Catches a search that scores candidates one by one, skips the fine level or loses the basin."""
    batches = []

    def loss(fixed, warped, mask):
        batches.append(warped.shape[0])
        assert fixed.shape == warped.shape and mask.shape == (warped.shape[0], 1, *warped.shape[2:])
        return negative_ncc(fixed, warped, mask)

    truth = _rigid(Rotation.from_euler("ZYX", [90, 0, 180], degrees=True).as_matrix(), ellipsoid.grid.center(), [3, 0, -2])
    moving = _moved(ellipsoid, truth)
    angles = [-90, 0, 90, 180]
    m = rotation_search(ellipsoid, moving, loss, angles_deg=angles, size=16, fine_size=24, batch_size=16,
                        refine_steps=3)
    grid_size, moves = len(rotation_matrices(3, angles)), 4 * 12  # top_k = 4 refined, 6 + 6 moves each
    # coarse: the grid, then 3 refinement steps; fine: the 4 kept re-scored, then 3 steps
    assert sum(batches) == grid_size + 3 * moves + 4 + 3 * moves and max(batches) == 16
    assert len(batches) == -(-grid_size // 16) + 3 * -(-moves // 16) + 1 + 3 * -(-moves // 16)
    points = ellipsoid.grid.points(torch.float64)[ellipsoid.data[0, 0] > 0.5]
    assert _residual(m, truth, points) < 1.0


def test_search_does_not_favour_candidates_that_push_the_image_out_of_view():
    """Stripes of period 8 voxels fill both grids, so a shift by two periods matches them wherever the
    images still overlap (75 % of the fixed grid): scored over the overlap alone it ties with the
    truth. The search extends the moving image by its background and compares every candidate over
    the same fixed voxels, so the shifted candidate must score clearly worse."""
    grid = Grid.from_geometry((64, 64), spacing=(1.0, 1.0))
    x = grid.points(torch.float32)[..., 0]
    stripes = Image((torch.sin(2 * np.pi * x / 8) + 1)[None], grid)
    level = _search_level(stripes, stripes, None, None, 64, (grid.center(), 64.0))
    shifted = np.eye(3)
    shifted[0, 2] = 16.0
    truth_score, shifted_score = _scores(level, negative_ncc, np.stack([np.eye(3), shifted]), 0.25, 2)
    assert truth_score < -0.99 and shifted_score > truth_score + 0.1  # sqrt(0.75) = 0.87
    sampled = sample_affine(stripes.data, grid, torch.tensor(shifted)[None], grid)
    overlap = (x < 48).float()[None, None]  # fixed voxels whose shifted position lies inside the moving grid
    assert negative_ncc(stripes.data, sampled, overlap) < -0.99  # the tie that overlap-only scoring gives


def test_rotation_search_with_flips_recovers_a_mirrored_digit():
    """``flips=True`` adds mirrored candidates: catches a search that can only return proper rotations
    (det > 0) when the moving image is the fixed one mirrored and rotated."""
    digit = _digit(7)
    mirror = np.diag([-1.0, 1.0])
    truth = _rigid(Rotation.from_euler("z", 70, degrees=True).as_matrix()[:2, :2] @ mirror, digit.grid.center(),
                   [0.5, -1])
    moving = _moved(digit, truth)
    points = digit.grid.points(torch.float64)[digit.data[0, 0] > 0]
    found = rotation_search(digit, moving, flips=True, refine_steps=4)
    assert np.linalg.det(found[:2, :2]) < 0 and _residual(found, truth, points) < 0.5
    assert np.linalg.det(rotation_search(digit, moving, refine_steps=4)[:2, :2]) > 0  # without flips: none


def test_rotation_search_errors(ellipsoid):
    far = Image(ellipsoid.data, Grid.from_geometry(ellipsoid.grid.shape, spacing=ellipsoid.grid.spacing,
                                                   origin=ellipsoid.grid.origin + 1000))
    with pytest.raises(InputError, match="no rotation keeps 25%"):
        rotation_search(ellipsoid, far, base=np.eye(4), angles_deg=[0], size=8)
    with pytest.raises(InputError, match=r"base must be a \(4, 4\)"):
        rotation_search(ellipsoid, ellipsoid, base=np.eye(3))
    with pytest.raises(InputError, match="refine_steps >= 0"):
        rotation_search(ellipsoid, ellipsoid, refine_steps=-1)


# ---- real data --------------------------------------------------------------------------------
def test_known_rigid_initialisations():
    """known_rigid: anatomical.nii (fixed) and reoriented_anat_moved.nii (moving, resliced at 4 mm).

    Mean residual to the true map over the fixed grid, measured: identity 11.7 mm, geometry 9.6 mm,
    centre of mass 9.4 mm (translation only; the truth rotates by about 21 degrees), moments
    0.12 mm, rotation search (+-30 degrees every 15, 4 refinement steps) 0.38 mm.
    """
    def load(name: str) -> Image:
        img = nib.load(str(data_file(f"known_rigid/{name}")))
        return Image(torch.from_numpy(img.get_fdata(dtype=np.float32))[None], Grid(img.shape, img.affine))

    fixed, moving = load("anatomical.nii"), load("reoriented_anat_moved.nii")
    truth = from_matvec(euler2mat(0.1, 0.2, 0.3), [3, 4, 5])  # make_moved_anat.py: moving_from_fixed
    points = fixed.grid.points(torch.float64).reshape(-1, 3)
    identity = _residual(init_identity(fixed, moving), truth, points)
    geometry = _residual(init_geometry(fixed, moving), truth, points)
    com = _residual(init_center_of_mass(fixed, moving), truth, points)
    assert com < geometry < identity and com < 10
    assert _residual(init_moments(fixed, moving), truth, points) < 1.0
    searched = rotation_search(fixed, moving, angles_deg=[-30, -15, 0, 15, 30], refine_steps=4, size=24)
    assert _residual(searched, truth, points) < 1.5


@pytest.mark.parametrize("metric", ["mi", "ncc"])
def test_register_with_init_search_recovers_a_127_degree_rotation(metric):
    """``init: search`` through the driver: candidates scored one by one with the first stage's metric."""
    from torchalign.config import resolve_config
    from torchalign.registration import register

    digit = _digit(2)
    truth = _rigid(Rotation.from_euler("z", 127, degrees=True).as_matrix()[:2, :2], digit.grid.center(), [1, -0.5])
    moving = _moved(digit, truth)
    config = resolve_config("rigid", overrides={"init": "search", "metric": metric})
    result = register(digit, moving, config)
    assert abs(_angle_deg(result.init) - 127) <= 15  # the search found the basin
    points = digit.grid.points(torch.float64)[digit.data[0, 0] > 0]
    assert abs(_angle_deg(result.linear[0].numpy()) - 127) < 2
    assert _residual(result.linear[0].numpy(), truth, points) < 0.5
