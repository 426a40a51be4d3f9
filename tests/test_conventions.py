"""One executable check per rule of docs/conventions.md (the test names carry the rule numbers)."""
from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.spatial.transform import Rotation
from torch import Tensor

from conftest import REPO
from torchalign.functional.sampling import sample_world
from torchalign.grid import Grid, apply_matrix
from torchalign.image import Image
from torchalign.io import read_image, write_image
from torchalign.resample import resample
from torchalign.transforms import Compose, SpatialTransform

SRC = REPO / "src" / "torchalign"


def source_files() -> list[Path]:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 10
    return files


def code_lines(path: Path) -> list[str]:
    """Lines of ``path`` outside comments (docstrings may mention names; calls are what count)."""
    return [ln.split("#")[0] for ln in path.read_text(encoding="utf-8").splitlines()]


def oblique_grid(shape: tuple[int, ...]) -> Grid:
    d = len(shape)
    direction = Rotation.from_rotvec([0.2, -0.3, 0.25]).as_matrix()[:d, :d]
    direction = np.linalg.qr(direction)[0] @ np.diag([-1.0] + [1.0] * (d - 1))  # LAS-like: left-handed
    return Grid.from_geometry(shape, spacing=[1.5, 1.2, 0.8][:d], origin=[20.0, -30.0, 10.0][:d], direction=direction)


class Shift(SpatialTransform):
    """T(x) = x + t (world mm)."""

    def __init__(self, t: Tensor):
        super().__init__(len(t))
        self.register_buffer("t", t)

    def forward(self, points: Tensor) -> Tensor:
        return points + self.t.to(points.dtype)


class Scale(SpatialTransform):
    """T(x) = s x about the world origin."""

    def __init__(self, s: float, ndim: int):
        super().__init__(ndim)
        self.s = s

    def forward(self, points: Tensor) -> Tensor:
        return points * self.s


def test_rule_01_images_are_batched_in_nibabel_axis_order(tmp_path: Path, rng: np.random.Generator) -> None:
    for shape in [(5, 6, 7), (5, 6)]:
        array = rng.normal(size=shape).astype(np.float32)
        nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "a.nii.gz")
        image = read_image(tmp_path / "a.nii.gz")
        assert image.data.shape == (1, 1, *shape) and image.grid.ndim == len(shape) == image.ndim
        np.testing.assert_array_equal(image.data[0, 0].numpy(), np.asanyarray(nib.load(tmp_path / "a.nii.gz").dataobj))
    assert Image(torch.zeros(2, 5, 6), Grid((5, 6))).data.shape == (1, 2, 5, 6)  # (C, *S) gets B = 1
    offenders = [p.name for p in source_files() if "is_3d" in p.read_text(encoding="utf-8")]
    assert offenders == [], f"2-D vs 3-D must come from ndim, not a flag: {offenders}"


def test_rule_02_grid_is_shape_and_float64_matrix_with_kept_extent() -> None:
    grid = oblique_grid((10, 12, 9))
    m = grid.world_from_voxel
    assert m.shape == (4, 4) and m.dtype == np.float64 and not m.flags.writeable
    np.testing.assert_allclose(grid.direction * grid.spacing, m[:3, :3])
    np.testing.assert_allclose(grid.origin, m[:3, 3])
    for smaller in (grid.resize((4, 5, 3)), grid.downsample(3)):
        for corner in ([-0.5, -0.5, -0.5], [n - 0.5 for n in grid.shape]):
            small_corner = [-0.5, -0.5, -0.5] if corner[0] < 0 else [n - 0.5 for n in smaller.shape]
            np.testing.assert_allclose(nib.affines.apply_affine(smaller.world_from_voxel, small_corner),
                                       nib.affines.apply_affine(m, corner), atol=1e-9)


def test_rule_03_world_is_ras_and_itk_files_are_lps(tmp_path: Path, rng: np.random.Generator) -> None:
    grid = oblique_grid((6, 7, 5))
    array = rng.normal(size=grid.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(array, grid.world_from_voxel), tmp_path / "ras.nii.gz")
    ours, theirs = read_image(tmp_path / "ras.nii.gz"), sitk.ReadImage(str(tmp_path / "ras.nii.gz"))
    np.testing.assert_allclose(ours.grid.origin * [-1, -1, 1], theirs.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(np.diag([-1, -1, 1]) @ ours.grid.direction, np.reshape(theirs.GetDirection(), (3, 3)),
                               atol=1e-5)
    np.testing.assert_array_equal(ours.data[0, 0].numpy(), sitk.GetArrayFromImage(theirs).transpose(2, 1, 0))
    # 2-D: the same two axes flip; a 2-D MetaImage written by SimpleITK reads with x, y negated.
    flat = sitk.GetImageFromArray(rng.normal(size=(4, 3)))
    flat.SetOrigin((3.0, 5.0))
    sitk.WriteImage(flat, str(tmp_path / "flat.mha"))
    np.testing.assert_allclose(read_image(tmp_path / "flat.mha").grid.world_from_voxel,
                               [[-1, 0, -3.0], [0, -1, -5.0], [0, 0, 1]])
    # Raster files carry no geometry: LPS identity, i.e. RAS diag(-1, -1) (the note to rule 3).
    write_image(Image(torch.zeros(1, 4, 3, dtype=torch.uint8), Grid((4, 3))), tmp_path / "r.png")
    np.testing.assert_allclose(read_image(tmp_path / "r.png").grid.world_from_voxel, np.diag([-1.0, -1.0, 1.0]))
    negations = [p.relative_to(SRC).as_posix() for p in source_files()
                 if any(re.search(r"diag\(\[\s*-1(\.0)?\s*,\s*-1", ln) for ln in code_lines(p))]
    assert negations == [], f"LPS<->RAS flips belong in io/lps.py only: {negations}"


def test_rule_04_points_are_coordinates_last() -> None:
    grid = oblique_grid((4, 5, 6))
    points = grid.points()
    assert points.shape == (4, 5, 6, 3)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
    np.testing.assert_allclose(points.numpy(), nib.affines.apply_affine(grid.world_from_voxel, index), atol=1e-4)
    batched = torch.stack([points, points + 1])  # (B, *Q, D)
    assert apply_matrix(np.eye(4), batched).shape == (2, 4, 5, 6, 3)


def test_rule_05_translation_pulls_content_back() -> None:
    """warped(x) = moving(x + t): a blob at world c in the moving image appears at c - t."""
    grid = oblique_grid((40, 40, 40))
    x = grid.points(torch.float64)
    c = torch.tensor(grid.center())
    moving = Image(torch.exp(-((x - c) ** 2).sum(-1) / (2 * 4.0**2))[None, None], grid)
    t = torch.tensor([3.0, -4.5, 2.0], dtype=torch.float64)
    warped = resample(moving, grid, Shift(t)).data[0, 0]
    centroid = (warped[..., None] * x).sum((0, 1, 2)) / warped.sum()
    torch.testing.assert_close(centroid, c - t, atol=0.05, rtol=0)


def test_rule_06_displacements_are_world_mm_channels_first() -> None:
    grid = oblique_grid((5, 6, 4))  # oblique and left-handed: world axes are not voxel axes
    t = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    u = Shift(t).displacement(grid)
    assert u.shape == (1, 3, 5, 6, 4)
    for i in range(3):
        torch.testing.assert_close(u[0, i], t[i].expand(5, 6, 4))
    u2 = Scale(2.0, 3).displacement(grid)  # T(x) = 2x  =>  u(x) = x in world mm, channel i = world axis i
    torch.testing.assert_close(u2[0], grid.points().movedim(-1, 0), atol=1e-4, rtol=0)


def test_rule_07_compose_applies_the_first_transform_first() -> None:
    x = torch.tensor([[[1.0, 2.0, 3.0]]])
    t = torch.tensor([10.0, 0.0, 0.0])
    composed = Compose(Scale(2.0, 3), Shift(t))
    torch.testing.assert_close(composed(x), 2 * x + t)  # Shift(Scale(x)), not Scale(Shift(x)) = 2x + 2t


def test_rule_08_normalised_coordinates_only_in_the_sampling_module(rng: np.random.Generator) -> None:
    allowed = {"functional/sampling.py", "functional/bspline_interp.py"}
    callers = {p.relative_to(SRC).as_posix() for p in source_files()
               if any(re.search(r"\b(grid_sample|affine_grid)\(", ln) for ln in code_lines(p))}
    assert callers and callers <= allowed, f"grid_sample/affine_grid called outside the sampling module: {callers - allowed}"
    # ... and its single flip is right: sampling at voxel (i, j, k) returns data[i, j, k] for any interpolation.
    data = torch.tensor(rng.normal(size=(1, 1, 4, 5, 6)))
    grid = oblique_grid((4, 5, 6))
    for interp in ("linear", "nearest", "cubic"):
        out = sample_world(data, grid, grid.points(torch.float64)[None], interp)
        torch.testing.assert_close(out, data, atol=1e-6, rtol=0)


def test_rule_09_matrices_compose_right_to_left() -> None:
    a, b = oblique_grid((4, 5, 6)), Grid.from_geometry((7, 3, 5), spacing=(2.0, 1.0, 0.5), origin=(1.0, 2.0, 3.0))
    np.testing.assert_allclose(a.voxel_from_world @ a.world_from_voxel, np.eye(4), atol=1e-12)
    a_voxel_from_b_voxel = a.voxel_from_world @ b.world_from_voxel
    v = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(apply_matrix(a_voxel_from_b_voxel, v), a.world_to_voxel(b.voxel_to_world(v)))


def test_rule_10_losses_are_minimised_per_pair(rng: np.random.Generator) -> None:
    from torchalign.losses import SIMILARITY

    shape = (2, 1, 24, 24, 24)
    z = torch.linspace(0, 6, 24)
    smooth = (torch.sin(z)[:, None, None] * torch.cos(z)[None, :, None] + 0.3 * z[None, None, :]).expand(shape)
    fixed = smooth + 0.05 * torch.tensor(rng.normal(size=shape), dtype=torch.float32)
    moved = torch.roll(fixed, shifts=3, dims=2)
    assert len(SIMILARITY) >= 5
    for name, cls in SIMILARITY.items():
        per_pair = cls(reduction="none")(fixed, fixed)
        assert per_pair.shape == (2,), name
        assert (per_pair < cls(reduction="none")(fixed, moved)).all(), f"{name} is not smaller when aligned"
        assert cls()(fixed, moved).shape == (), name  # modules reduce by "mean" by default


def test_rule_11_device_and_dtype_follow_the_inputs(rng: np.random.Generator) -> None:
    grid = oblique_grid((5, 6, 4))
    for dtype in (torch.float32, torch.float64):
        image = Image(torch.tensor(rng.normal(size=(1, 1, 5, 6, 4)), dtype=dtype), grid)
        for interp in ("linear", "cubic"):
            assert resample(image, grid.resize((3, 3, 3)), interp=interp).data.dtype == dtype
    hard_coded = [p.relative_to(SRC).as_posix() for p in source_files()
                  if any(re.search(r"\.cuda\(\)|\.to\([\"']cuda|device\s*=\s*[\"']cuda", ln) for ln in code_lines(p))]
    assert hard_coded == [], f"hard-coded CUDA in {hard_coded}"


@pytest.mark.parametrize("interp", ["linear", "nearest", "cubic"])
def test_rule_12_outside_follows_itk(interp: str) -> None:
    """Within half a voxel of the edge: the edge value (cubic: the spline mirrored about the edge voxel,
    as ITK's B-spline); beyond: the padding value. (Exactly n - 0.5 is outside, as in ITK, but a point
    that lands there after floating-point arithmetic may fall either side, so it is not tested.)"""
    data = torch.tensor([[[[1.0], [2.0], [4.0], [8.0]]]])  # (1, 1, 4, 1)
    grid = Grid((4, 1))
    index = torch.tensor([[[-0.6, 0.0], [-0.5, 0.0], [-0.3, 0.0], [3.3, 0.0], [3.4999, 0.0], [3.5001, 0.0], [4.2, 0.0]]],
                         dtype=torch.float64)
    out = sample_world(data, grid, index, interp, padding=-9.0).ravel().tolist()
    assert out[0] == -9.0 and out[5] == -9.0 and out[6] == -9.0
    if interp == "cubic":
        mirrored = sample_world(data, grid, index.abs() * torch.tensor([1.0, 0.0], dtype=torch.float64), "cubic")
        assert out[2] == pytest.approx(mirrored.ravel()[2].item())
        assert out[2] != pytest.approx(1.0)
    else:
        assert out[1:5] == [1.0, 1.0, 8.0, 8.0]
