"""Image files: every format round-trips data and world geometry; geometry agrees with SimpleITK's reading."""
from __future__ import annotations

import locale
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import data_file
from torchalign.errors import InputError
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.io import read_image, write_image
from torchalign.resample import resample

T2 = "multimodal/hd_bet_IXI002-Guys-0828-T2.nii.gz"  # int16, oblique, anisotropic, left-handed
MNI = "templates/mni.nii.gz"  # float32, LAS, sform 1 / qform 2
FLIP = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS, written out here rather than taken from torchalign


def assert_same_image(back: Image, image: Image) -> None:
    assert back.data.dtype == image.data.dtype
    assert torch.equal(back.data, image.data)
    assert back.grid.shape == image.grid.shape
    np.testing.assert_allclose(back.grid.world_from_voxel, image.grid.world_from_voxel, atol=1e-6)


def assert_geometry_matches_simpleitk(image: Image, path: Path) -> None:
    """SimpleITK's LPS geometry is ours with x and y negated; its (z, y, x) array is ours transposed."""
    ref = sitk.ReadImage(str(path))
    d = image.ndim
    flip = FLIP[:d, :d] if d == 3 else np.diag([-1.0, -1.0])
    np.testing.assert_allclose(image.grid.spacing, ref.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(flip @ image.grid.origin, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(flip @ image.grid.direction, np.reshape(ref.GetDirection(), (d, d)), atol=1e-5)
    np.testing.assert_array_equal(image.data[0, 0].numpy(), sitk.GetArrayFromImage(ref).T)


@pytest.fixture(scope="module", params=[T2, MNI])
def real_image(request: pytest.FixtureRequest) -> tuple[Path, Image]:
    path = data_file(request.param)
    return path, read_image(path)


def test_nifti_geometry_agrees_with_simpleitk(real_image: tuple[Path, Image]) -> None:
    path, image = real_image
    assert_geometry_matches_simpleitk(image, path)
    np.testing.assert_allclose(image.grid.world_from_voxel, nib.load(path).affine, atol=1e-12)
    assert image.data.shape == (1, 1, *nib.load(path).shape)


def test_orientations_of_the_real_images(real_image: tuple[Path, Image]) -> None:
    path, image = real_image
    assert image.grid.orientation() == "LAS" == "".join(nib.aff2axcodes(nib.load(path).affine))
    assert sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(sitk.ReadImage(str(path)).GetDirection()) == "LAS"


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_header_codes_and_dtype(real_image: tuple[Path, Image], ext: str,
                                                       tmp_path: Path) -> None:
    path, image = real_image
    out = write_image(image, tmp_path / f"copy{ext}")
    back = read_image(out)
    assert_same_image(back, image)
    source, written = nib.load(path).header, nib.load(out).header
    assert written.get_data_dtype() == source.get_data_dtype()
    assert int(written["sform_code"]) == int(source["sform_code"])
    assert int(written["qform_code"]) == int(source["qform_code"])
    np.testing.assert_allclose(written.get_zooms(), source.get_zooms(), rtol=1e-6)


@pytest.mark.parametrize("ext", [".mha", ".nrrd", ".npz"])
def test_round_trip_through_other_formats(real_image: tuple[Path, Image], ext: str, tmp_path: Path) -> None:
    _, full = real_image
    start, size = (40, 50, 30), (64, 72, 48)  # an off-centre crop keeps the test fast and the origin non-trivial
    crop = tuple(slice(a, a + n) for a, n in zip(start, size))
    image = Image(full.data[(..., *crop)].contiguous(), full.grid.crop(start, size))
    out = write_image(image, tmp_path / f"copy{ext}")
    back = read_image(out)
    assert_same_image(back, image)
    if ext != ".npz":
        assert_geometry_matches_simpleitk(back, out)


def test_npy_keeps_data_and_takes_spacing(rng: np.random.Generator, tmp_path: Path) -> None:
    array = rng.integers(-100, 100, size=(6, 7, 5)).astype(np.int16)
    np.save(tmp_path / "a.npy", array)
    image = read_image(tmp_path / "a.npy", spacing=(1.5, 2.0, 0.5))
    assert image.data.dtype == torch.int16 and np.array_equal(image.data[0, 0].numpy(), array)
    np.testing.assert_allclose(image.grid.world_from_voxel, np.diag([1.5, 2.0, 0.5, 1.0]))
    back = read_image(write_image(image, tmp_path / "b.npy"), spacing=(1.5, 2.0, 0.5))
    assert_same_image(back, image)
    assert read_image(tmp_path / "a.npy").grid.same_as(Grid((6, 7, 5)))


def test_dicom_series_round_trip(tmp_path: Path) -> None:
    """A DICOM series written slice by slice from an oblique crop reads back with the same world geometry.

    DICOM volumes are right-handed (slice normal = row x column), so this left-handed volume comes
    back with its slices in reverse order: the comparison is made in world space.
    """
    path = data_file(T2)
    volume = sitk.ReadImage(str(path))[100:140, 90:130, 60:70]
    folder = tmp_path / "series"
    folder.mkdir()
    encoding = locale.getpreferredencoding(False)
    write_dicom_series(volume, folder)
    dicom = read_image(folder)
    full = read_image(path)
    crop = Image(full.data[:, :, 100:140, 90:130, 60:70], full.grid.crop((100, 90, 60), (40, 40, 10)))
    assert locale.getpreferredencoding(False) == encoding
    assert dicom.data.dtype == torch.int16 and dicom.grid.shape == crop.grid.shape
    np.testing.assert_allclose(np.sort(corners(dicom.grid), axis=0), np.sort(corners(crop.grid), axis=0), atol=1e-4)
    assert torch.equal(resample(crop, dicom.grid, interp="nearest").data, dicom.data)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    np.testing.assert_allclose(FLIP @ dicom.grid.origin, ref.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(FLIP @ dicom.grid.direction, np.reshape(ref.GetDirection(), (3, 3)), atol=1e-6)


def corners(grid: Grid) -> np.ndarray:
    index = np.array(np.meshgrid(*[[0, n - 1] for n in grid.shape], indexing="ij")).reshape(grid.ndim, -1).T
    return index @ grid.world_from_voxel[:3, :3].T + grid.origin


def write_dicom_series(volume: sitk.Image, folder: Path) -> None:
    """One MR slice per file with the geometry tags a series reader needs (SimpleITK's own recipe).

    GDCM's writer leaves the process locale at "C" (ASCII text I/O for the rest of the session), so
    the locale is restored afterwards.
    """
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_slices(volume, folder)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_slices(volume: sitk.Image, folder: Path) -> None:
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = volume.GetDirection()
    uid = "1.2.826.0.1.3680043.2.1125.1.42"
    ds = lambda values: "\\".join(f"{v:.10g}" for v in values)  # noqa: E731 - DICOM decimal strings
    for k in range(volume.GetDepth()):
        image = volume[:, :, k]
        tags = {"0008|0060": "MR", "0020|000d": f"{uid}.1", "0020|000e": f"{uid}.2", "0008|0018": f"{uid}.3.{k}",
                "0020|0037": ds([d[0], d[3], d[6], d[1], d[4], d[7]]),
                "0020|0032": ds(volume.TransformIndexToPhysicalPoint((0, 0, k))),
                "0020|0013": str(k + 1), "0018|0050": f"{volume.GetSpacing()[2]:.10g}",
                "0028|0030": ds(volume.GetSpacing()[1::-1])}
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(image)


def test_png_round_trip(tmp_path: Path) -> None:
    """Raster files hold no geometry; like SimpleITK we read them as LPS identity, i.e. RAS diag(-1, -1)."""
    image = read_image(data_file("slices2d/r16slice.jpg"))
    assert image.ndim == 2 and image.data.dtype == torch.uint8
    np.testing.assert_allclose(image.grid.world_from_voxel, np.diag([-1.0, -1.0, 1.0]))
    back = read_image(write_image(image, tmp_path / "r16.png"))
    assert_same_image(back, image)
    assert_geometry_matches_simpleitk(back, tmp_path / "r16.png")


def test_png_16_bit_and_colour_round_trip(rng: np.random.Generator, tmp_path: Path) -> None:
    grid = Grid((13, 9), np.diag([-1.0, -1.0, 1.0]))
    deep = Image(torch.tensor(rng.integers(0, 60000, size=(1, 13, 9)), dtype=torch.int32), grid)
    assert_same_image(read_image(write_image(deep, tmp_path / "deep.png")), deep)
    colour = Image(torch.tensor(rng.integers(0, 255, size=(3, 13, 9)), dtype=torch.uint8), grid)
    assert_same_image(read_image(write_image(colour, tmp_path / "rgb.png")), colour)


def test_2d_geometry_survives_nifti_and_mha(rng: np.random.Generator, tmp_path: Path) -> None:
    grid = Grid.from_geometry((11, 8), spacing=(0.7, 1.3), origin=(5.0, -2.0),
                              direction=np.array([[0.8, -0.6], [0.6, 0.8]]))
    image = Image(torch.tensor(rng.normal(size=(1, 11, 8)), dtype=torch.float32), grid)
    for name in ("flat.nii.gz", "flat.mha"):
        back = read_image(write_image(image, tmp_path / name))
        assert back.ndim == 2
        assert_same_image(back, image)
    assert_geometry_matches_simpleitk(read_image(tmp_path / "flat.mha"), tmp_path / "flat.mha")


@pytest.mark.parametrize("shape,layout", [((5, 4, 3, 2), "time"), ((5, 4, 3, 1, 3), "vector")])
def test_nifti_channels_round_trip(shape: tuple[int, ...], layout: str, rng: np.random.Generator,
                                   tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])),
             tmp_path / "multi.nii.gz")
    image = read_image(tmp_path / "multi.nii.gz")
    assert image.data.shape == (1, shape[-1], 5, 4, 3) and image.meta["channel_layout"] == layout
    write_image(image, tmp_path / "copy.nii.gz")
    assert nib.load(tmp_path / "copy.nii.gz").shape == shape
    assert_same_image(read_image(tmp_path / "copy.nii.gz"), image)


def test_interpolated_integer_image_is_stored_as_float(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(5, 4, 3), np.eye(4)), tmp_path / "int.nii.gz")
    image = read_image(tmp_path / "int.nii.gz")
    shifted = resample(image, image.grid, lambda p: p + 0.25)
    out = write_image(shifted, tmp_path / "shifted.nii.gz")
    assert nib.load(out).get_data_dtype() == np.float32
    assert torch.equal(read_image(out).data, shifted.data)
    assert nib.load(write_image(image, tmp_path / "copy.nii.gz")).get_data_dtype() == np.int16
    assert nib.load(write_image(image, tmp_path / "u8.nii.gz", dtype="uint8")).get_data_dtype() == np.uint8


def test_nan_is_refused_unless_replaced(tmp_path: Path) -> None:
    data = np.ones((4, 4, 4), np.float32)
    data[1, 2, 3], data[0, 0, 0] = np.nan, np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(InputError, match=r"nan.nii.gz: image contains 2 NaN/Inf values"):
        read_image(tmp_path / "nan.nii.gz")
    fixed = read_image(tmp_path / "nan.nii.gz", nan_to=0.0)
    assert fixed.data.sum() == 62


def test_write_refuses_inputs_batches_and_bad_targets(rng: np.random.Generator, tmp_path: Path) -> None:
    image = Image(torch.zeros(1, 4, 5, 6), Grid((4, 5, 6)))
    src = write_image(image, tmp_path / "in.nii.gz")
    with pytest.raises(InputError, match="refusing to overwrite an input file"):
        write_image(image, tmp_path / "in.nii.gz", inputs=[src])
    with pytest.raises(InputError, match="one image per file"):
        write_image(Image(torch.zeros(2, 1, 4, 5, 6), Grid((4, 5, 6))), tmp_path / "b.nii.gz")
    with pytest.raises(InputError, match="b.png: PNG/JPEG/TIFF/BMP files hold 2-D images only"):
        write_image(image, tmp_path / "b.png")
    with pytest.raises(InputError, match=r"c.png: intensities in \[-3, 3\] do not fit"):
        write_image(Image(torch.full((1, 3, 3), 3.0) * torch.tensor([-1.0, 0.0, 1.0]), Grid((3, 3))), tmp_path / "c.png")
    with pytest.raises(InputError, match="unknown image extension"):
        write_image(image, tmp_path / "c.txt")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(InputError, match="blocker/x.nii.gz"):
        write_image(image, tmp_path / "blocker" / "x.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "in.nii.gz"]  # no temporary left behind


def test_big_endian_nifti(tmp_path: Path) -> None:
    """SPM writes big-endian files; torch only takes native byte order."""
    path = data_file("known_rigid/anatomical.nii")
    assert nib.load(path).header.endianness == ">"
    image = read_image(path)
    assert image.data.dtype == torch.int16
    np.testing.assert_array_equal(image.data[0, 0].numpy(), np.asanyarray(nib.load(path).dataobj))
    assert_same_image(read_image(write_image(image, tmp_path / "native.nii")), image)


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    """Atomic writes go through a private temporary file; the result must still be readable by others."""
    out = write_image(Image(torch.zeros(1, 3, 3), Grid((3, 3))), tmp_path / "x.nii.gz")
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask
