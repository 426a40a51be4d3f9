"""Transform files against oracles nobody here wrote: SimpleITK and ANTsPy read, write and resample."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import data_file
from nibabel.affines import from_matvec
from nibabel.eulerangles import euler2mat

from torchalign.errors import InputError
from torchalign.functional.sampling import sample_world
from torchalign.grid import Grid, apply_matrix
from torchalign.image import Image
from torchalign.io.images import write_image
from torchalign.io.lps import flip_points
from torchalign.io.transforms import (
    Displacement,
    read_displacement,
    read_fsl,
    read_linear,
    read_transform_chain,
    write_displacement,
    write_linear,
)
from torchalign.resample import resample

ants = pytest.importorskip("ants", reason="ANTsPy (antspyx) is the reference oracle for these tests")

# known_rigid: reoriented_anat_moved.nii is anatomical.nii under this world map (make_moved_anat.py),
# i.e. moving_from_fixed for fixed = anatomical, moving = reoriented_anat_moved.
KNOWN_RIGID = from_matvec(euler2mat(0.1, 0.2, 0.3), [3, 4, 5])


def _load(path: Path) -> Image:
    """A NIfTI as float32 Image via nibabel (independent of torchalign's reader)."""
    img = nib.load(str(path))
    return Image(torch.from_numpy(img.get_fdata(dtype=np.float32))[None], Grid(img.shape, img.affine))


def _corr(a, b) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def _random_affine(rng: np.random.Generator, d: int) -> np.ndarray:
    m = np.eye(d + 1)
    m[:d, :d] += rng.normal(0, 0.15, (d, d))
    m[:d, d] = rng.uniform(-20, 20, d)
    return m


def _sitk_points(tx: sitk.Transform, points_lps: np.ndarray) -> np.ndarray:
    return np.array([tx.TransformPoint(p.tolist()) for p in points_lps])


# ---- linear files --------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("ext", [".txt", ".tfm", ".mat"])
def test_written_affine_is_read_by_simpleitk_and_ants(tmp_path, rng, d, ext):
    m = _random_affine(rng, d)
    center = rng.uniform(-50, 50, d)
    path = write_linear(m, tmp_path / f"a{ext}", center=center)
    points = rng.uniform(-100, 100, (20, d))
    expected_lps = flip_points(apply_matrix(m, torch.from_numpy(points)).numpy())

    tx = sitk.ReadTransform(str(path))
    assert tx.GetName() == "AffineTransform"
    assert np.allclose(tx.GetFixedParameters(), flip_points(center))
    assert np.abs(_sitk_points(tx, flip_points(points)) - expected_lps).max() < 1e-5

    atx = ants.read_transform(str(path), precision="double")
    got = np.array([atx.apply_to_point(tuple(p)) for p in flip_points(points)])
    assert np.abs(got - expected_lps).max() < 1e-5
    assert np.allclose(read_linear(path), m, atol=1e-9)


def test_ants_written_transforms_are_read(tmp_path, rng):
    a = np.eye(3) + rng.normal(0, 0.1, (3, 3))
    t, c = rng.uniform(-10, 10, 3), rng.uniform(-30, 30, 3)
    points_lps = rng.uniform(-100, 100, (20, 3))
    for kind, kwargs in (("AffineTransform", {"matrix": a, "translation": t, "center": c}),
                         ("Euler3DTransform", {"parameters": (0.3, -0.2, 0.5, *t), "fixed_parameters": (*c, 0)})):
        atx = ants.create_ants_transform(transform_type=kind, dimension=3, precision="double", **kwargs)
        path = str(tmp_path / f"{kind}.mat")
        ants.write_transform(atx, path)
        m = read_linear(path)
        expected = np.array([atx.apply_to_point(tuple(p)) for p in points_lps])
        got = flip_points(apply_matrix(m, torch.from_numpy(flip_points(points_lps))).numpy())
        assert np.abs(got - expected).max() < 1e-5, kind


def test_written_affine_resamples_like_ants_and_simpleitk(tmp_path):
    fixed_path = data_file("known_rigid/anatomical.nii")
    moving_path = data_file("known_rigid/reoriented_anat_moved.nii")
    fixed, moving = _load(fixed_path), _load(moving_path)
    m = KNOWN_RIGID @ from_matvec(np.array([[1.05, 0.04, 0], [0, 0.97, 0.03], [0.02, 0, 1.0]]), [1, -2, 0.5])
    ours = resample(moving, fixed.grid, transform=lambda p: apply_matrix(m, p)).data[0, 0].numpy()
    write_linear(m, tmp_path / "m.mat", center=fixed.grid.center())
    write_linear(m, tmp_path / "m.txt", center=fixed.grid.center())

    by_ants = ants.apply_transforms(ants.image_read(str(fixed_path)), ants.image_read(str(moving_path)),
                                    [str(tmp_path / "m.mat")]).numpy()
    sf = sitk.ReadImage(str(fixed_path), sitk.sitkFloat32)
    sm = sitk.ReadImage(str(moving_path), sitk.sitkFloat32)
    by_sitk = sitk.GetArrayFromImage(sitk.Resample(sm, sf, sitk.ReadTransform(str(tmp_path / "m.txt")),
                                                   sitk.sitkLinear, 0.0)).T
    assert _corr(ours, by_ants) > 0.999
    assert _corr(ours, by_sitk) > 0.999
    # The direction matters: the inverse matrix gives a clearly different image.
    inverse = resample(moving, fixed.grid, transform=lambda p: apply_matrix(np.linalg.inv(m), p)).data
    assert _corr(inverse, by_ants) < 0.9


def test_known_rigid_truth_is_moving_from_fixed():
    """The data set's own transform, read in our convention, reproduces SPM's reslicing."""
    fixed = _load(data_file("known_rigid/anatomical.nii"))
    moving = _load(data_file("known_rigid/reoriented_anat_moved.nii"))
    pulled = resample(fixed, moving.grid, transform=lambda p: apply_matrix(np.linalg.inv(KNOWN_RIGID), p)).data
    both = (pulled != 0) & (moving.data != 0)
    assert _corr(pulled[both], moving.data[both]) > 0.999


def test_ants_registration_output_is_read_in_its_direction(tmp_path):
    fixed_path = data_file("known_rigid/anatomical.nii")
    moving_path = data_file("known_rigid/reoriented_anat_moved.nii")
    af, am = ants.image_read(str(fixed_path)), ants.image_read(str(moving_path))
    reg = ants.registration(af, am, type_of_transform="Rigid")
    m = read_linear(reg["fwdtransforms"][0])
    ours = resample(_load(moving_path), _load(fixed_path).grid, transform=lambda p: apply_matrix(m, p)).data
    assert _corr(ours, ants.apply_transforms(af, am, reg["fwdtransforms"]).numpy()) > 0.999


# ---- FSL ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["anatomical.nii", "reoriented_anat_moved.nii"])
def test_fsl_matrix_direction(tmp_path, name):
    """Moving = fixed with its array shifted by 3 voxels along axis 0; the FLIRT matrix written from
    FSL's definition (moving scaled-mm -> reference scaled-mm; x flipped when det(affine) > 0)."""
    src = nib.load(str(data_file(f"known_rigid/{name}")))
    data = np.asarray(src.dataobj, dtype=np.float32)
    fixed_path, moving_path = tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz"
    nib.save(nib.Nifti1Image(data, src.affine), str(fixed_path))
    nib.save(nib.Nifti1Image(np.roll(data, 3, axis=0), src.affine), str(moving_path))
    pixdim = float(np.linalg.norm(src.affine[:3, 0]))
    radiological = np.linalg.det(src.affine) < 0  # FSL keeps voxel order; else it flips x
    shift = -3 * pixdim if radiological else 3 * pixdim  # x_ref = x_moving + shift (FSL coordinates)
    flirt = np.eye(4)
    flirt[0, 3] = shift
    np.savetxt(tmp_path / "flirt.mat", flirt, fmt="%.8f")

    m = read_fsl(tmp_path / "flirt.mat", fixed_path, moving_path)
    expected = np.eye(4)
    expected[:3, 3] = 3 * src.affine[:3, 0]  # fixed voxel v sits at moving voxel v + 3 e0
    assert np.allclose(m, expected, atol=1e-6)
    fixed, moving = _load(fixed_path), _load(moving_path)
    pulled = resample(moving, fixed.grid, transform=lambda p: apply_matrix(m, p)).data[0, 0]
    n = data.shape[0]
    error = (pulled[: n - 3] - fixed.data[0, 0, : n - 3]).abs().max()
    assert error < 1e-5 * fixed.data.abs().max()


# ---- displacement fields ----------------------------------------------------------------------
def _smooth_field(grid: Grid, rng: np.random.Generator, amplitude: float) -> torch.Tensor:
    """A smooth random RAS field ``(1, D, *S)`` in mm: a few low-frequency sines of world position."""
    x = grid.points(torch.float64)
    u = torch.zeros(*grid.shape, grid.ndim, dtype=torch.float64)
    for i in range(grid.ndim):
        k = torch.from_numpy(rng.normal(0, 0.04, grid.ndim))
        u[..., i] = amplitude * torch.sin(x @ k + float(rng.uniform(0, 6.28)))
    return u.movedim(-1, 0).unsqueeze(0).float()


def _pull_with_field(moving: Image, fixed_grid: Grid, field: torch.Tensor) -> np.ndarray:
    u = field[0].movedim(0, -1).unsqueeze(0).double()  # (1, *S, D), voxel order of the grid's points
    return resample(moving, fixed_grid, transform=lambda p: p + u.reshape(p.shape)).data[0, 0].numpy()


def _sitk_field_resample(fixed_path: Path, moving_path: Path, warp: Path) -> np.ndarray:
    sf = sitk.ReadImage(str(fixed_path), sitk.sitkFloat32)
    sm = sitk.ReadImage(str(moving_path), sitk.sitkFloat32)
    tx = sitk.DisplacementFieldTransform(sitk.ReadImage(str(warp), sitk.sitkVectorFloat64))
    return sitk.GetArrayFromImage(sitk.Resample(sm, sf, tx, sitk.sitkLinear, 0.0)).T


def test_displacement_3d_applied_by_ants_and_simpleitk(tmp_path, rng):
    fixed_path = data_file("known_rigid/anatomical.nii")  # LAS: exercises the x flip of the grid
    fixed = _load(fixed_path)
    field = _smooth_field(fixed.grid, rng, amplitude=4.0)
    warp = write_displacement(field, fixed.grid, tmp_path / "warp.nii.gz")

    header = nib.load(str(warp)).header
    assert header.get_data_shape() == (*fixed.grid.shape, 1, 3)
    assert int(header["dim"][0]) == 5 and int(header["intent_code"]) == 1007
    assert header.get_data_dtype() == np.float32
    assert np.allclose(nib.load(str(warp)).affine, fixed.grid.world_from_voxel)

    ours = _pull_with_field(fixed, fixed.grid, field)
    af = ants.image_read(str(fixed_path))
    by_ants = ants.apply_transforms(af, af, [str(warp)]).numpy()
    assert _corr(ours, by_ants) > 0.999
    assert _corr(ours, _sitk_field_resample(fixed_path, fixed_path, warp)) > 0.999
    assert _corr(fixed.data, by_ants) < 0.99  # the field really moves the image

    back = read_displacement(warp)
    assert back.grid.same_as(fixed.grid)
    assert torch.allclose(back.field, field, atol=1e-5)


def test_displacement_2d_applied_by_ants_and_simpleitk(tmp_path, rng):
    import SimpleITK as sitk_

    png = sitk_.ReadImage(str(data_file("slices2d/r16slice.jpg")), sitk_.sitkFloat32)
    array = sitk_.GetArrayFromImage(png).T[::3, ::3].copy()  # (x, y), 86 x 86
    grid = Grid.from_geometry(array.shape, spacing=(1.5, 2.0), origin=(30.0, -20.0),
                              direction=np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]]))
    image = Image(torch.from_numpy(array)[None], grid)
    image_path = write_image(image, tmp_path / "slice.nii.gz")
    field = _smooth_field(grid, rng, amplitude=5.0)
    warp = write_displacement(field, grid, tmp_path / "warp2d.nii.gz")
    assert nib.load(str(warp)).shape == (*grid.shape, 1, 1, 2)

    ours = _pull_with_field(image, grid, field)
    ai = ants.image_read(str(image_path))
    assert ai.dimension == 2
    by_ants = ants.apply_transforms(ai, ai, [str(warp)]).numpy()
    assert _corr(ours, by_ants) > 0.999
    assert _corr(ours, _sitk_field_resample(image_path, image_path, warp)) > 0.999
    back = read_displacement(warp)
    assert back.grid.same_as(grid) and torch.allclose(back.field, field, atol=1e-5)


def test_chain_order_matches_ants_points(tmp_path, rng):
    """``[warp, affine]``: a fixed point goes through the warp first, then the affine (ANTs order)."""
    fixed = _load(data_file("known_rigid/anatomical.nii"))
    field = _smooth_field(fixed.grid, rng, amplitude=5.0)
    m = KNOWN_RIGID @ from_matvec(np.diag([1.1, 0.9, 1.0]), [2, -3, 1])
    write_displacement(field, fixed.grid, tmp_path / "warp.nii.gz")
    write_linear(m, tmp_path / "affine.mat", center=fixed.grid.center())
    files = [str(tmp_path / "warp.nii.gz"), str(tmp_path / "affine.mat")]
    chain = read_transform_chain(files)
    assert isinstance(chain[0], Displacement) and isinstance(chain[1], np.ndarray)

    # Points well inside the field's grid, so ANTs' and our interpolation of u agree.
    lo, hi = 4, np.asarray(fixed.grid.shape) - 5
    points = fixed.grid.voxel_to_world(torch.from_numpy(rng.uniform(lo, hi, (30, 3)))).unsqueeze(0)
    ours = points
    for item in chain:
        if isinstance(item, np.ndarray):
            ours = apply_matrix(item, ours)
        else:
            ours = ours + sample_world(item.field.double(), item.grid, ours).movedim(1, -1)
    import pandas as pd

    frame = pd.DataFrame(flip_points(points[0].numpy()), columns=["x", "y", "z"])
    by_ants = flip_points(ants.apply_transforms_to_points(3, frame, files)[["x", "y", "z"]].to_numpy())
    assert np.abs(ours[0].numpy() - by_ants).max() < 1e-3
    inverse = read_transform_chain([(str(tmp_path / "affine.mat"), True)])[0]
    assert np.allclose(inverse @ m, np.eye(4), atol=1e-9)


def test_chain_expands_an_itk_composite(tmp_path, rng):
    """A SimpleITK composite [affine, field] (.h5, like ANTs' Composite.h5): the field acts first."""
    grid = Grid.from_geometry((12, 14, 10), spacing=(3.0, 2.5, 4.0), origin=(20.0, -10.0, 5.0),
                              direction=np.diag([-1.0, 1.0, 1.0]))
    field = _smooth_field(grid, rng, amplitude=3.0)
    path = write_displacement(field, grid, tmp_path / "w.nii.gz")
    affine = sitk.AffineTransform(3)
    affine.SetMatrix((np.eye(3) + rng.normal(0, 0.1, (3, 3))).ravel().tolist())
    affine.SetTranslation(rng.uniform(-5, 5, 3).tolist())
    composite = sitk.CompositeTransform([affine, sitk.DisplacementFieldTransform(
        sitk.ReadImage(str(path), sitk.sitkVectorFloat64))])
    sitk.WriteTransform(composite, str(tmp_path / "composite.h5"))

    chain = read_transform_chain([tmp_path / "composite.h5"])
    assert isinstance(chain[0], Displacement) and isinstance(chain[1], np.ndarray)
    assert chain[0].grid.same_as(grid) and torch.allclose(chain[0].field, field, atol=1e-5)
    points = grid.voxel_to_world(torch.from_numpy(rng.uniform(1, 8, (20, 3))))[None]
    ours = apply_matrix(chain[1], points + sample_world(chain[0].field.double(), grid, points).movedim(1, -1))
    by_sitk = _sitk_points(sitk.ReadTransform(str(tmp_path / "composite.h5")), flip_points(points[0].numpy()))
    assert np.abs(flip_points(ours[0].numpy()) - by_sitk).max() < 1e-4
    with pytest.raises(InputError, match="only a linear transform can be inverted"):
        read_transform_chain([(tmp_path / "composite.h5", True)])


# ---- bad input ---------------------------------------------------------------------------------
def test_bad_linear_files(tmp_path):
    with pytest.raises(InputError, match="no such transform file"):
        read_linear(tmp_path / "missing.mat")
    (tmp_path / "junk.txt").write_text("hello\n")
    with pytest.raises(InputError, match="junk.txt: not an ITK/ANTs transform"):
        read_linear(tmp_path / "junk.txt")
    np.savetxt(tmp_path / "flirt.mat", np.eye(4))
    with pytest.raises(InputError, match="read_fsl"):
        read_linear(tmp_path / "flirt.mat")
    with pytest.raises(InputError, match=r"\(D\+1, D\+1\)"):
        write_linear(np.eye(3, 4), tmp_path / "x.mat")
    with pytest.raises(InputError, match="last row"):
        write_linear(np.ones((4, 4)), tmp_path / "x.mat")
    with pytest.raises(InputError, match="center must be 3"):
        write_linear(np.eye(4), tmp_path / "x.mat", center=[1, 2])
    with pytest.raises(InputError, match="written as"):
        write_linear(np.eye(4), tmp_path / "x.nii.gz")
    written = write_linear(np.eye(4), tmp_path / "in.mat")
    with pytest.raises(InputError, match="overwrite an input"):
        write_linear(np.eye(4), written, inputs=[written])
    with pytest.raises(InputError, match="not an FSL FLIRT matrix"):
        (tmp_path / "bad_flirt.mat").write_text("1 2 3\nfoo\n")
        ref = tmp_path / "ref.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(ref))
        read_fsl(tmp_path / "bad_flirt.mat", ref, ref)


def test_bad_displacement_files(tmp_path):
    grid = Grid((5, 6, 7))
    with pytest.raises(InputError, match=r"field must be \(1, 3, 5, 6, 7\)"):
        write_displacement(torch.zeros(1, 2, 5, 6, 7), grid, tmp_path / "w.nii.gz")
    with pytest.raises(InputError, match="NaN"):
        write_displacement(torch.full((1, 3, 5, 6, 7), float("nan")), grid, tmp_path / "w.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), np.eye(4)), str(tmp_path / "scalar.nii.gz"))
    with pytest.raises(InputError, match="not a displacement field"):
        read_displacement(tmp_path / "scalar.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7, 1, 4), np.float32), np.eye(4)), str(tmp_path / "four.nii.gz"))
    with pytest.raises(InputError, match="needs 3 components.*got 4"):
        read_displacement(tmp_path / "four.nii.gz")
    img = nib.Nifti1Image(np.zeros((5, 6, 7, 1, 3), np.float32), np.eye(4))
    img.header.set_intent("label")
    nib.save(img, str(tmp_path / "label.nii.gz"))
    with pytest.raises(InputError, match="intent code"):
        read_displacement(tmp_path / "label.nii.gz")
    sitk.WriteImage(sitk.Image([5, 6, 7], sitk.sitkFloat32), str(tmp_path / "scalar.mha"))
    with pytest.raises(InputError, match="scalar image, not a 3-D displacement field"):
        read_displacement(tmp_path / "scalar.mha")
    with pytest.raises(InputError, match="different dimensions"):
        write_displacement(torch.zeros(1, 3, 5, 6, 7), grid, tmp_path / "w3.nii.gz")
        read_transform_chain([tmp_path / "w3.nii.gz", write_linear(np.eye(3), tmp_path / "a2.txt")])
    with pytest.raises(InputError, match="only a linear transform can be inverted"):
        read_transform_chain([(tmp_path / "w3.nii.gz", True)])
    with pytest.raises(InputError, match="empty transform list"):
        read_transform_chain([])
