"""Sampling and resampling against oracles nobody here wrote: scipy's spline code and SimpleITK's Resample."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import SimpleITK as sitk
import torch
from scipy.spatial.transform import Rotation
from torch import Tensor

from conftest import data_file
from torchalign.errors import InputError
from torchalign.functional.bspline_interp import bspline_coefficients, sample_cubic
from torchalign.functional.sampling import (
    normalized_from_voxel,
    sample_displaced,
    sample_displaced_inside,
    sample_world,
)
from torchalign.grid import Grid, apply_matrix
from torchalign.image import Image
from torchalign.io import read_image
from torchalign.resample import resample

LPS = {2: np.diag([-1.0, -1.0, 1.0]), 3: np.diag([-1.0, -1.0, 1.0, 1.0])}  # RAS <-> LPS, written out here
SITK_INTERP = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "cubic": sitk.sitkBSpline,
               "label": sitk.sitkLabelLinear}


def to_sitk(array: np.ndarray, grid: Grid) -> sitk.Image:
    """A SimpleITK image of a nibabel-ordered ``(x, y[, z])`` array on ``grid`` (RAS -> LPS here)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.T))
    lps = LPS[grid.ndim] @ grid.world_from_voxel
    d = grid.ndim
    spacing = np.linalg.norm(lps[:d, :d], axis=0)
    img.SetSpacing(spacing.tolist())
    img.SetOrigin(lps[:d, d].tolist())
    img.SetDirection((lps[:d, :d] / spacing).ravel().tolist())
    return img


def sitk_affine(matrix: np.ndarray) -> sitk.AffineTransform:
    """The RAS fixed->moving ``matrix`` as a SimpleITK transform (LPS)."""
    d = matrix.shape[0] - 1
    lps = LPS[d] @ matrix @ LPS[d]
    tx = sitk.AffineTransform(d)
    tx.SetMatrix(lps[:d, :d].ravel().tolist())
    tx.SetTranslation(lps[:d, d].tolist())
    return tx


def normalized_points(voxels: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """``(N, D)`` voxel indices as ``(1, N, 1[, 1], D)`` normalised points for ``sample_cubic``."""
    m = normalized_from_voxel(shape)
    d = len(shape)
    u = voxels @ m[:d, :d].T + m[:d, d]
    return torch.tensor(u).reshape(1, len(voxels), *([1] * (d - 1)), d)


# ---- cubic B-spline against scipy ------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 7, 18, 19, 40])
def test_prefilter_matches_scipy_mirror(n: int, rng: np.random.Generator) -> None:
    # scipy's "mirror" is ITK's whole-sample symmetric boundary; lengths around ITK's horizon (18).
    data = rng.normal(size=(2, 3, n, 5))
    ours = bspline_coefficients(torch.tensor(data)).numpy()
    ref = ndi.spline_filter1d(ndi.spline_filter1d(data, 3, axis=2, mode="mirror"), 3, axis=3, mode="mirror")
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_prefilter_keeps_length_one_axes(rng: np.random.Generator) -> None:
    data = torch.tensor(rng.normal(size=(1, 1, 1, 6)))
    coeffs = bspline_coefficients(data)
    ref = ndi.spline_filter1d(data.numpy(), 3, axis=3, mode="mirror")
    np.testing.assert_allclose(coeffs.numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("shape", [(9, 12), (9, 12, 7), (1, 6, 5)])
def test_cubic_matches_scipy_map_coordinates(shape: tuple[int, ...], rng: np.random.Generator) -> None:
    data = rng.normal(size=shape)
    voxels = np.stack([rng.uniform(-0.5, n - 0.5 - 1e-9, size=300) if n > 1 else np.zeros(300) for n in shape], -1)
    ours = sample_cubic(torch.tensor(data)[None, None], normalized_points(voxels, shape)).numpy().ravel()
    ref = ndi.map_coordinates(data, voxels.T, order=3, mode="mirror")
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_cubic_interpolates_the_samples(rng: np.random.Generator) -> None:
    data = torch.tensor(rng.normal(size=(2, 3, 8, 6, 5)), dtype=torch.float32)
    voxels = np.stack(np.meshgrid(*[np.arange(n) for n in (8, 6, 5)], indexing="ij"), -1).astype(np.float64)
    norm = apply_matrix(normalized_from_voxel((8, 6, 5)), torch.tensor(voxels))[None].expand(2, -1, -1, -1, -1)
    out = sample_cubic(data, norm)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, data, atol=2e-5, rtol=0)


def test_cubic_padding_modes(rng: np.random.Generator) -> None:
    data = torch.tensor(rng.normal(size=(1, 1, 6, 7)))
    shape = (6, 7)
    voxels = np.array([[-0.6, 3.0], [5.5, 3.0], [2.0, -3.0], [8.0, 9.0], [2.3, 4.1]])
    out = sample_cubic(data, normalized_points(voxels, shape), padding=-5.0).ravel()
    assert out[:4].tolist() == [-5.0] * 4
    assert sample_cubic(data, normalized_points(voxels, shape)).ravel()[:4].tolist() == [0.0] * 4
    border = sample_cubic(data, normalized_points(voxels, shape), padding="border").ravel()
    clamped = np.clip(voxels, 0, np.array(shape) - 1)
    ref = sample_cubic(data, normalized_points(clamped, shape)).ravel()
    torch.testing.assert_close(border, ref)


def test_cubic_integer_data_gives_float32() -> None:
    data = torch.arange(30, dtype=torch.int16).reshape(1, 1, 5, 6)
    out = sample_cubic(data, normalized_points(np.array([[1.0, 2.0], [2.5, 3.5]]), (5, 6)))
    assert out.dtype == torch.float32
    assert out.ravel()[0].item() == pytest.approx(8.0, abs=1e-5)


def test_cubic_gradients(rng: np.random.Generator) -> None:
    data = torch.tensor(rng.normal(size=(1, 2, 5, 6)), requires_grad=True)
    voxels = np.array([[1.3, 2.2], [2.7, 0.4], [0.2, 4.6]])  # away from cell boundaries
    points = normalized_points(voxels, (5, 6)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d, p: sample_cubic(d, p), (data, points))


def test_cubic_gradient_is_the_spline_derivative(rng: np.random.Generator) -> None:
    data = rng.normal(size=(7, 8))
    voxels = np.array([[2.3, 3.6], [4.1, 1.2]])
    points = normalized_points(voxels, data.shape).requires_grad_(True)
    sample_cubic(torch.tensor(data)[None, None], points).sum().backward()
    grad_voxel = points.grad.reshape(2, 2).numpy() * np.diag(normalized_from_voxel(data.shape))[:2]
    h = 1e-6
    for axis in range(2):
        step = np.zeros(2)
        step[axis] = h
        fd = (ndi.map_coordinates(data, (voxels + step).T, order=3, mode="mirror")
              - ndi.map_coordinates(data, (voxels - step).T, order=3, mode="mirror")) / (2 * h)
        np.testing.assert_allclose(grad_voxel[:, axis], fd, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("interp", ["linear", "nearest", "cubic", "label"])
def test_cuda_matches_cpu(interp: str, rng: np.random.Generator) -> None:
    data = torch.tensor(rng.integers(0, 5, size=(1, 1, 12, 10, 9)), dtype=torch.float32)
    grid = Grid.from_geometry((12, 10, 9), spacing=(1.0, 1.2, 0.8))
    points = torch.tensor(rng.uniform(-2, 12, size=(1, 500, 3)))
    cpu = sample_world(data, grid, points, interp)
    gpu = sample_world(data.cuda(), grid, points.cuda(), interp)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)


# ---- small synthetic images against SimpleITK -------------------------------------------------------
@pytest.mark.parametrize("interp", ["linear", "nearest", "cubic"])
def test_matches_simpleitk_at_edges_and_outside(interp: str, rng: np.random.Generator) -> None:
    """Off-grid samples that reach past every edge: inside values, edge zones and padding all agree."""
    array = rng.normal(size=(9, 7))
    image = Image(torch.tensor(array)[None], Grid.from_geometry((9, 7), spacing=(1.0, 1.0)))
    onto = Grid.from_geometry((31, 27), spacing=(0.37, 0.34), origin=(-1.3, -1.45))
    ours = resample(image, onto, interp=interp, padding=-7.0).data[0, 0].numpy()
    ref_grid = to_sitk(np.zeros(onto.shape), onto)
    ref = sitk.GetArrayFromImage(sitk.Resample(to_sitk(array, image.grid), ref_grid, sitk.Transform(),
                                               SITK_INTERP[interp], -7.0, sitk.sitkFloat64)).T
    assert (ref == -7.0).sum() > 100 and (ref != -7.0).sum() > 400  # both regions are exercised
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_nearest_rounds_half_up_and_keeps_dtype() -> None:
    data = torch.arange(5, dtype=torch.int16).reshape(1, 1, 5, 1)
    grid = Grid((5, 1))
    points = torch.tensor([[[1.5, 0.0], [-0.5, 0.0], [4.4999, 0.0], [4.5, 0.0]]], dtype=torch.float64)
    out = sample_world(data, grid, points, "nearest", padding=-1)
    assert out.dtype == torch.int16
    assert out.ravel().tolist() == [2, 0, 4, -1]


def test_resample_chunks_and_dtype(rng: np.random.Generator) -> None:
    image = Image(torch.tensor(rng.normal(size=(1, 2, 8, 9, 7))), Grid.from_geometry((8, 9, 7), spacing=(1, 2, 1.5)))
    onto = image.grid.resize((5, 6, 4))
    shift = torch.tensor([0.3, -0.8, 1.1], dtype=torch.float64)
    whole = resample(image, onto, lambda p: p + shift, interp="cubic")
    chunked = resample(image, onto, lambda p: p + shift, interp="cubic", chunk=17)
    assert whole.data.shape == (1, 2, 5, 6, 4) and whole.data.dtype == torch.float64
    torch.testing.assert_close(whole.data, chunked.data)
    with pytest.raises(InputError, match="chunk"):
        resample(image, onto, chunk=0)
    with pytest.raises(InputError, match="3-D image onto a 2-D grid"):
        resample(image, Grid((4, 4)))


def test_bad_arguments_are_input_errors() -> None:
    data, grid, points = torch.zeros(1, 1, 4, 4), Grid((4, 4)), torch.zeros(1, 3, 2)
    with pytest.raises(InputError, match="unknown interpolation 'spline'"):
        sample_world(data, grid, points, "spline")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="padding must be 'zeros', 'border' or a number, got 'reflect'"):
        sample_world(data, grid, points, "linear", "reflect")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"points must be \(B, ..., 2\)"):
        sample_world(data, grid, torch.zeros(1, 3, 3))
    with pytest.raises(InputError, match="batch sizes differ"):
        sample_world(torch.zeros(2, 1, 4, 4), grid, torch.zeros(3, 5, 2))


# ---- real images against SimpleITK ------------------------------------------------------------------
IXI = "multimodal/hd_bet_IXI002-Guys-0828-{}.nii.gz"


@pytest.fixture(scope="module")
def ixi_t2() -> tuple[Image, sitk.Image]:
    path = data_file(IXI.format("T2"))
    return read_image(path), sitk.ReadImage(str(path), sitk.sitkFloat32)


def near_identity_affine(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(rng.normal(scale=0.05, size=3)).as_matrix() @ (np.eye(3) + rng.normal(scale=0.02, size=(3, 3)))
    m[:3, 3] = rng.normal(scale=3.0, size=3)
    return m


@pytest.mark.parametrize("shrink", [2, pytest.param(1, marks=pytest.mark.slow)])
def test_resample_t2_onto_t1_grid_matches_simpleitk(shrink: int, ixi_t2: tuple[Image, sitk.Image]) -> None:
    """IXI002 T2 (256x256x130, oblique) onto the T1 grid (150x256x256, another obliquity) under an affine.

    Measured at shrink 2 (75x128x128 points): linear 1.3e-5, cubic 2.6e-5 of the intensity range;
    nearest exact outside 730 points (0.06 %) within 1e-4 voxel of a .5 tie, where it also agrees.
    Full resolution (-m slow): linear 1.7e-5, cubic 2.9e-5; nearest differs at 4 of 5903 tie points.
    """
    moving, moving_sitk = ixi_t2
    t1_path = data_file(IXI.format("T1"))
    fixed_sitk = sitk.ReadImage(str(t1_path))
    if shrink > 1:
        fixed_sitk = sitk.Shrink(fixed_sitk, [shrink] * 3)
    onto = read_image(t1_path).grid.downsample(shrink)
    assert onto.shape == fixed_sitk.GetSize()
    matrix = near_identity_affine(7)
    transform = torch.tensor(matrix)
    value_range = float(moving.data.max() - moving.data.min())

    index = apply_matrix(moving.grid.voxel_from_world @ matrix @ onto.world_from_voxel,
                         onto.voxel_points(torch.float64)).numpy()
    ties = (np.abs(index - np.floor(index) - 0.5) < 1e-4).any(-1)
    assert ties.mean() < 1e-3

    for interp, tolerance in (("linear", 1e-4), ("nearest", 0.0), ("cubic", 1e-4)):
        ours = resample(moving, onto, lambda p: apply_matrix(transform, p), interp=interp).data[0, 0].numpy()
        ref = sitk.GetArrayFromImage(sitk.Resample(moving_sitk, fixed_sitk, sitk_affine(matrix),
                                                   SITK_INTERP[interp], 0.0, sitk.sitkFloat32)).T
        diff = np.abs(ours.astype(np.float64) - ref)
        assert (ref != 0).mean() > 0.1  # the (skull-stripped) brain overlaps the grid
        if interp == "nearest":
            assert ours.dtype == np.int16
            assert np.all(diff[~ties] == 0), f"nearest differs at {(diff[~ties] > 0).sum()} non-tie points"
        else:
            assert diff.max() <= tolerance * value_range, f"{interp}: max diff {diff.max() / value_range:.2e} of range"


@pytest.mark.parametrize("interp", ["nearest", "label"])
def test_label_resampling_keeps_labels_and_matches_simpleitk(interp: str) -> None:
    labels = read_image(data_file("brain3d/subject_a_aseg.nii.gz"))
    start, size = (50, 70, 90), (40, 40, 40)
    crop = Image(labels.data[:, :, 50:90, 70:110, 90:130].contiguous(), labels.grid.crop(start, size))
    assert crop.data.dtype == torch.int16 and torch.unique(crop.data).numel() > 20
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_rotvec([0.1, -0.2, 0.15]).as_matrix()
    c = crop.grid.center()
    matrix[:3, 3] = c - matrix[:3, :3] @ c + [1.3, -0.7, 2.1]
    onto = Grid.from_geometry((30, 34, 36), spacing=(1.3, 1.1, 0.9), origin=crop.grid.origin + 2)
    out = resample(crop, onto, lambda p: apply_matrix(torch.tensor(matrix), p), interp=interp).data[0, 0]
    assert out.dtype == torch.int16
    assert set(torch.unique(out).tolist()) <= set(torch.unique(crop.data).tolist())
    ref = sitk.Resample(to_sitk(crop.data[0, 0].numpy(), crop.grid), to_sitk(np.zeros(onto.shape), onto),
                        sitk_affine(matrix), SITK_INTERP[interp], 0)
    np.testing.assert_array_equal(out.numpy(), sitk.GetArrayFromImage(ref).T)



@pytest.mark.parametrize("shape", [(11, 9), (9, 8, 7)])
def test_sample_affine_equals_mapping_every_point(shape: tuple[int, ...], rng: np.random.Generator) -> None:
    """The folded normalised-matrix path gives what mapping each world point through the matrix gives."""
    from torchalign.functional.sampling import sample_affine

    d = len(shape)
    grid = Grid.from_geometry(shape, spacing=rng.uniform(0.8, 1.5, d), origin=rng.normal(size=d),
                              direction=Rotation.from_rotvec([0.1, -0.2, 0.3]).as_matrix()[:d, :d] if d == 3 else None)
    onto = grid.resize(tuple(n + 3 for n in shape))
    matrix = np.eye(d + 1)
    matrix[:d, :d] += rng.normal(scale=0.05, size=(d, d))
    matrix[:d, d] = rng.normal(scale=1.0, size=d)
    data = torch.tensor(rng.normal(size=(2, 2, *shape)))
    folded = sample_affine(data, grid, torch.tensor(matrix)[None], onto, padding=-3.0)
    points = apply_matrix(torch.tensor(matrix), onto.points(torch.float64))[None]
    mapped = sample_world(data, grid, points, "linear", padding=-3.0)
    torch.testing.assert_close(folded, mapped, atol=1e-9, rtol=0)


def _displaced_case(ndim: int, matrix: str) -> tuple[Grid, Grid, Tensor, Tensor, Tensor | None]:
    """Data on an oblique grid, a displacement on another grid, and no/one/per-pair world matrices."""
    gen = torch.Generator().manual_seed(ndim)
    d_grid = Grid.from_geometry((9, 7, 6)[:ndim], spacing=(1.5, 1.0, 2.0)[:ndim], origin=(3.0, -2.0, 1.0)[:ndim],
                                direction=Rotation.from_rotvec([0.1, -0.2, 0.3]).as_matrix() if ndim == 3 else
                                Rotation.from_rotvec([0, 0, 0.3]).as_matrix()[:2, :2])
    u_grid = Grid.from_geometry((5, 8, 4)[:ndim], spacing=(2.0, 1.2, 2.5)[:ndim], origin=(1.0, -1.0, 2.0)[:ndim])
    data = torch.rand(2, 2, *d_grid.shape, generator=gen, dtype=torch.float64)
    disp = 3.0 * torch.randn(2, ndim, *u_grid.shape, generator=gen, dtype=torch.float64)
    mats = torch.eye(ndim + 1, dtype=torch.float64).repeat(2, 1, 1)
    mats[:, :ndim] += 0.1 * torch.randn(2, ndim, ndim + 1, generator=gen, dtype=torch.float64)
    return d_grid, u_grid, data, disp, {"none": None, "shared": mats[:1], "per-pair": mats}[matrix]


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("matrix", ["none", "shared", "per-pair"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_sample_displaced_equals_sampling_the_mapped_points(ndim: int, matrix: str, padding: str) -> None:
    """``A (x + u(x))`` folded into grid_sample coordinates gives sample_world's values and gradients."""
    d_grid, u_grid, data, disp, mats = _displaced_case(ndim, matrix)
    disp_a, disp_b = disp.clone().requires_grad_(), disp.clone().requires_grad_()
    folded = sample_displaced(data, d_grid, disp_a, u_grid, mats, padding)
    points = u_grid.points(torch.float64).unsqueeze(0) + disp_b.movedim(1, -1)
    mapped = sample_world(data, d_grid, points if mats is None else apply_matrix(mats.expand(2, -1, -1), points),
                          padding=padding)
    torch.testing.assert_close(folded, mapped, atol=1e-10, rtol=0)
    weights = torch.rand(folded.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (folded * weights).sum().backward()
    (mapped * weights).sum().backward()
    torch.testing.assert_close(disp_a.grad, disp_b.grad, atol=1e-9, rtol=0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_sample_displaced_inside_equals_sampling_a_channel_of_ones(ndim: int) -> None:
    d_grid, u_grid, data, disp, mats = _displaced_case(ndim, "per-pair")
    values, inside = sample_displaced_inside(data, d_grid, disp, u_grid, mats)
    with_ones = sample_displaced(torch.cat([data, torch.ones_like(data[:, :1])], 1), d_grid, disp, u_grid, mats)
    torch.testing.assert_close(values, with_ones[:, :2])
    torch.testing.assert_close(inside, with_ones[:, 2:])
    assert 0 < float(inside.mean()) < 1  # some points fell outside


def test_sample_displaced_refuses_a_displacement_off_its_grid() -> None:
    d_grid, u_grid, data, disp, _ = _displaced_case(3, "none")
    with pytest.raises(InputError, match="displacement must be"):
        sample_displaced(data, d_grid, disp[:, :2], u_grid)
    with pytest.raises(InputError, match="does not lie on a grid"):
        sample_displaced(data[..., :-1], d_grid, disp, u_grid)


@pytest.mark.parametrize("channels", [1, 3])
def test_volume_sampled_in_point_chunks_equals_one_grid_sample(channels: int) -> None:
    """With several threads one volume's points are split across the batch: same values and gradients."""
    from torchalign.functional.sampling import _linear, _point_chunks

    gen = torch.Generator().manual_seed(0)
    data = torch.rand(1, channels, 20, 18, 16, generator=gen)
    coords = (2.4 * torch.rand(1, 40, 30, 60, 3, generator=gen) - 1.2).requires_grad_()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert _point_chunks(data, coords) == 4
        chunked = _linear(data, coords)
    finally:
        torch.set_num_threads(threads)
    (grad,) = torch.autograd.grad(chunked.square().sum(), coords)
    whole = torch.nn.functional.grid_sample(data, coords, mode="bilinear", padding_mode="border", align_corners=True)
    (expected,) = torch.autograd.grad(whole.square().sum(), coords)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(grad, expected)
