"""Grid geometry: conversions, points, resizing and pyramids, checked against nibabel and SimpleITK."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nibabel.affines import apply_affine
from scipy.spatial.transform import Rotation

from torchalign.errors import InputError
from torchalign.grid import Grid, apply_matrix


def oblique_grid(shape: tuple[int, ...], rng: np.random.Generator) -> Grid:
    """A grid with anisotropic spacing, a rotated (LAS-like, reflected) direction and an offset origin."""
    d = len(shape)
    rotation = Rotation.from_rotvec(rng.normal(scale=0.3, size=3)).as_matrix()[:d, :d]
    direction = np.linalg.qr(rotation)[0] @ np.diag([-1.0] + [1.0] * (d - 1))
    return Grid.from_geometry(shape, spacing=rng.uniform(0.5, 2.5, size=d), origin=rng.normal(scale=50, size=d),
                              direction=direction)


def extent_corners(grid: Grid) -> np.ndarray:
    """World coordinates of the 2^D corners of the extent ``[-0.5, n - 0.5]`` (voxel units)."""
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in grid.shape], indexing="ij")).reshape(grid.ndim, -1).T
    return apply_affine(grid.world_from_voxel, corners)


@pytest.mark.parametrize("shape", [(7, 9), (5, 6, 4)])
def test_world_voxel_round_trip(shape: tuple[int, ...], rng: np.random.Generator) -> None:
    grid = oblique_grid(shape, rng)
    voxels = torch.tensor(rng.uniform(-3, 12, size=(2, 11, len(shape))))
    world = grid.voxel_to_world(voxels)
    assert world.shape == voxels.shape
    torch.testing.assert_close(grid.world_to_voxel(world), voxels, atol=1e-10, rtol=0)
    np.testing.assert_allclose(grid.voxel_from_world @ grid.world_from_voxel, np.eye(len(shape) + 1), atol=1e-12)


@pytest.mark.parametrize("shape", [(7, 9), (5, 6, 4)])
def test_points_agree_with_nibabel(shape: tuple[int, ...], rng: np.random.Generator) -> None:
    grid = oblique_grid(shape, rng)
    points = grid.points(dtype=torch.float64)
    assert points.shape == (*shape, len(shape))
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    np.testing.assert_allclose(points.numpy(), apply_affine(grid.world_from_voxel, index), atol=1e-10)
    assert grid.points().dtype == torch.float32
    torch.testing.assert_close(grid.voxel_points(torch.float64), torch.tensor(index, dtype=torch.float64))


def test_geometry_is_derived_from_the_matrix(rng: np.random.Generator) -> None:
    spacing, origin = np.array([1.2, 0.9, 2.5]), np.array([10.0, -20.0, 5.0])
    direction = Rotation.from_rotvec([0.2, -0.1, 0.3]).as_matrix()
    grid = Grid.from_geometry((4, 5, 6), spacing, origin, direction)
    assert grid.world_from_voxel.dtype == np.float64 and grid.world_from_voxel.shape == (4, 4)
    np.testing.assert_allclose(grid.spacing, spacing)
    np.testing.assert_allclose(grid.origin, origin)
    np.testing.assert_allclose(grid.direction, direction, atol=1e-12)
    np.testing.assert_allclose(grid.center(), apply_affine(grid.world_from_voxel, [1.5, 2.0, 2.5]))
    with pytest.raises(ValueError):
        grid.world_from_voxel[0, 0] = 2.0  # read-only: a Grid never changes


@pytest.mark.parametrize("shape,new", [((7, 9), (3, 5)), ((5, 6, 4), (10, 3, 4)), ((64, 48, 40), (17, 48, 9))])
def test_resize_keeps_world_extent(shape: tuple[int, ...], new: tuple[int, ...], rng: np.random.Generator) -> None:
    grid = oblique_grid(shape, rng)
    resized = grid.resize(new)
    assert resized.shape == new
    np.testing.assert_allclose(extent_corners(resized), extent_corners(grid), atol=1e-9)
    np.testing.assert_allclose(resized.spacing, grid.spacing * np.array(shape) / np.array(new))
    np.testing.assert_allclose(resized.direction, grid.direction, atol=1e-12)


def test_downsample_matches_simpleitk_shrink() -> None:
    """For sizes divisible by the factors, ITK's ShrinkImageFilter keeps the extent too: same grid."""
    grid = Grid.from_geometry((40, 32, 24), spacing=(1.2, 0.9, 2.0), origin=(10.0, -5.0, 3.0),
                              direction=Rotation.from_rotvec([0.1, 0.2, -0.3]).as_matrix())
    factors = (2, 4, 3)
    ours = grid.downsample(factors)
    image = sitk.Image(list(grid.shape), sitk.sitkUInt8)
    flip = np.diag([-1.0, -1.0, 1.0])  # RAS -> LPS, written out
    image.SetSpacing(grid.spacing.tolist())
    image.SetOrigin((flip @ grid.origin).tolist())
    image.SetDirection((flip @ grid.direction).ravel().tolist())
    shrunk = sitk.Shrink(image, factors)
    assert ours.shape == shrunk.GetSize()
    np.testing.assert_allclose(ours.spacing, shrunk.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(flip @ ours.origin, shrunk.GetOrigin(), atol=1e-9)


def test_downsample_sizes_and_validation() -> None:
    grid = Grid((75, 73, 1))
    assert grid.downsample(2).shape == (38, 37, 1)  # rounded half up, never below 1
    assert grid.downsample((1, 3, 4)).shape == (75, 24, 1)
    with pytest.raises(InputError, match="shrink factors must be >= 1"):
        grid.downsample(0.5)
    with pytest.raises(InputError, match="resize needs 3 sizes"):
        grid.resize((4, 4))


def test_pyramid_sizes() -> None:
    grid3 = Grid.from_geometry((160, 192, 224), spacing=(1.0, 1.0, 1.0))
    assert [g.shape for g in grid3.pyramid(4)] == [(20, 24, 28), (40, 48, 56), (80, 96, 112), (160, 192, 224)]
    levels = grid3.pyramid([8, 4, 2, 1])
    np.testing.assert_allclose([g.spacing[0] for g in levels], [8.0, 4.0, 2.0, 1.0])
    for g in levels:
        np.testing.assert_allclose(extent_corners(g), extent_corners(grid3), atol=1e-9)
    grid2 = Grid((217, 181))
    assert [g.shape for g in grid2.pyramid(3)] == [(54, 45), (109, 91), (217, 181)]
    assert [g.shape for g in grid2.pyramid([(4, 1), 1])] == [(54, 181), (217, 181)]
    with pytest.raises(InputError, match="at least one level"):
        grid2.pyramid(0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_smooth_and_shrink_one_axis_at_a_time_equals_smoothing_then_resampling(ndim: int) -> None:
    """The pyramid's separable shortcut against the plain route: Gaussian on the whole image, then
    linear resampling at the level grid's world points (anisotropic voxels, oblique grid)."""
    from torchalign.functional.filters import gaussian_smooth
    from torchalign.image import Image
    from torchalign.registration.pyramid import level_grid, smooth_and_shrink
    from torchalign.resample import resample

    rng = np.random.default_rng(ndim)
    direction = Rotation.from_rotvec([0.2, -0.1, 0.3]).as_matrix()[:ndim, :ndim] if ndim == 3 else None
    grid = Grid.from_geometry((37, 30, 26)[:ndim], spacing=(1.0, 1.5, 0.8)[:ndim], origin=(4.0, -3.0, 2.0)[:ndim],
                              direction=direction)
    image = Image(torch.tensor(rng.random((1, 1, *grid.shape)), dtype=torch.float64), grid)
    for spacing_mm, sigma_mm in ((3.0, 2.0), (4.5, (1.0, 3.0, 0.0)[:ndim]), (1.2, 0.0)):
        target = level_grid(grid, np.full(ndim, spacing_mm))
        fast = smooth_and_shrink(image, target, sigma_mm)
        sigma_vox = np.broadcast_to(np.asarray(sigma_mm, dtype=np.float64), (ndim,)) / grid.spacing
        plain = resample(image.with_data(gaussian_smooth(image.data, sigma_vox.tolist())), target, padding="border")
        assert fast.grid.same_as(target, atol=1e-12)
        torch.testing.assert_close(fast.data, plain.data, atol=1e-10, rtol=0)


def test_crop_agrees_with_nibabel_slicer(rng: np.random.Generator) -> None:
    grid = oblique_grid((20, 18, 16), rng)
    image = nib.Nifti1Image(np.zeros(grid.shape, np.float32), grid.world_from_voxel)
    cropped = grid.crop((3, 5, 2), (10, 6, 7))
    np.testing.assert_allclose(cropped.world_from_voxel, image.slicer[3:13, 5:11, 2:9].affine, atol=1e-12)
    assert cropped.shape == (10, 6, 7)


def test_orientation_codes(rng: np.random.Generator) -> None:
    assert Grid((3, 4, 5)).orientation() == "RAS"
    assert Grid((3, 4)).orientation() == "RA"
    psr = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=float)
    assert Grid((3, 4, 5), psr).orientation() == "PSR" == "".join(nib.aff2axcodes(psr))


def test_apply_matrix_batched(rng: np.random.Generator) -> None:
    matrices = torch.tensor(np.stack([oblique_grid((2, 2, 2), rng).world_from_voxel for _ in range(3)]))
    points = torch.tensor(rng.normal(size=(3, 4, 5, 3)))
    out = apply_matrix(matrices, points)
    for b in range(3):
        np.testing.assert_allclose(out[b].numpy(), apply_affine(matrices[b].numpy(), points[b].numpy()), atol=1e-12)


@pytest.mark.parametrize("shape,matrix,message", [
    ((4, 0, 3), None, "zero-size dimension"),
    ((4, 4, 4, 4), None, "2-D or 3-D"),
    ((4,), None, "2-D or 3-D"),
    ((4, 4), np.eye(4), r"must be \(3, 3\)"),
    ((4, 4), np.diag([1.0, 0.0, 1.0]), "singular"),
    ((4, 4), np.array([[1.0, 0, 0], [0, 1, 0], [0.1, 0, 1]]), "last row"),
    ((4, 4), np.diag([1.0, np.nan, 1.0]), "NaN"),
])
def test_bad_grids_raise_input_error(shape: tuple[int, ...], matrix: np.ndarray | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Grid(shape, matrix)


def test_from_geometry_validates() -> None:
    with pytest.raises(InputError, match="spacing must be positive"):
        Grid.from_geometry((3, 3), spacing=(1.0, -1.0))
    with pytest.raises(InputError, match="do not match a 3-D grid"):
        Grid.from_geometry((3, 3, 3), spacing=(1.0, 1.0))
