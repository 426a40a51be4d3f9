"""Deformable registration: accuracy on real 2-D slices, inverse consistency, and warp files that
ANTs and SimpleITK apply exactly as torchalign does."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import data_file

from torchalign.cli import main
from torchalign.config import RegistrationConfig, load_preset
from torchalign.functional.jacobian import jacobian_det
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.io import read_image, write_image
from torchalign.registration import register
from torchalign.resample import resample


def _quick(transform: str, **options) -> RegistrationConfig:
    """The preset's deformable stage alone, with few iterations (the slices are pre-aligned)."""
    stage = next(s for s in load_preset(transform).stages if s.transform == transform)
    stage.levels = stage.levels[:1] + [lv.model_copy(update={"iterations": min(lv.iterations, 30)})
                                       for lv in stage.levels[1:]]
    stage.transform_options.update(options)
    return RegistrationConfig(init="none", stages=[stage])


@pytest.fixture(scope="module")
def slices() -> tuple[Image, Image, np.ndarray, Image]:
    z = np.load(data_file("brain2d/brain2d_slice_z100_pairs.npz"))
    grid = Grid.from_geometry((160, 192), spacing=(1.0, 1.0))
    fixed = Image(torch.as_tensor(z["vxm_test_vol"])[None], grid)
    moving = Image(torch.as_tensor(z["l2r_subj1_vol"])[None], grid)
    return fixed, moving, z["vxm_test_seg"], Image(torch.as_tensor(z["l2r_subj1_seg"])[None], grid)


@pytest.fixture(scope="module")
def registered(slices):
    """One quick registration per transform, shared by the tests of this module."""
    cache: dict[str, object] = {}

    def get(transform: str):
        if transform not in cache:
            fixed, moving = slices[0], slices[1]
            cache[transform] = register(fixed, moving, _quick(transform), init=np.eye(3))
        return cache[transform]

    return get


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    labels = sorted(set(np.unique(a)) & set(np.unique(b)) - {0})
    return float(np.mean([2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k)) for k in labels]))


@pytest.mark.parametrize("transform", ["syn", "svf", "dense", "ffd"])
def test_deformable_improves_dice_without_folding(slices, registered, transform: str) -> None:
    fixed, moving, fixed_seg, moving_seg = slices
    result = registered(transform)
    warped = resample(moving_seg, fixed.grid, result.transform, interp="nearest").data[0, 0].numpy()
    before, after = _dice(fixed_seg, moving_seg.data[0, 0].numpy()), _dice(fixed_seg, warped)
    with torch.no_grad():
        det = jacobian_det(result.transform.displacement(fixed.grid), fixed.grid)
    assert after > before + 0.15, (before, after)
    assert float((det <= 0).float().mean()) < 0.01


@pytest.mark.parametrize("transform", ["syn", "svf"])
def test_inverse_consistency(slices, registered, transform: str) -> None:
    fixed, moving, fixed_seg, _ = slices
    result = registered(transform)
    with torch.no_grad():
        x = fixed.grid.points(torch.float32)[torch.as_tensor(fixed_seg > 0)].unsqueeze(0)
        back = result.inverse(result.transform(x))
    error = (back - x).norm(dim=-1)
    assert float(error.median()) < 0.1, float(error.median())


def _small_brain(tmp_path, name: str, subject: str, spacing: float = 4.0) -> tuple[str, str]:
    """A brain3d subject resampled to ``spacing`` mm on an oblique, LAS grid (exercises world space)."""
    img = read_image(data_file(f"brain3d/subject_{subject}_t1.nii.gz"))
    seg = read_image(data_file(f"brain3d/subject_{subject}_aseg.nii.gz"))
    grid = img.grid.downsample(spacing)
    tilt = np.eye(4)
    c, s = np.cos(0.1), np.sin(0.1)
    tilt[:3, :3] = [[-c, -s, 0], [-s, c, 0], [0, 0, 1]]  # x flipped (LAS) and 0.1 rad about z
    oblique = Grid(grid.shape, tilt @ grid.world_from_voxel)
    paths = (str(tmp_path / f"{name}.nii.gz"), str(tmp_path / f"{name}_seg.nii.gz"))
    write_image(Image(resample(img, grid).data, oblique), paths[0])
    write_image(Image(resample(seg, grid, interp="nearest").data, oblique), paths[1])
    return paths


def test_warp_file_reproduced_by_ants_and_simpleitk(tmp_path) -> None:
    ants = pytest.importorskip("ants")
    import SimpleITK as sitk

    fixed, fixed_seg = _small_brain(tmp_path, "fixed", "a")
    moving, moving_seg = _small_brain(tmp_path, "moving", "b")
    cfg = tmp_path / "cfg.yaml"
    syn = load_preset("syn").stages[-1].model_dump()
    syn["levels"] = [{"shrink": 2, "sigma": 1, "iterations": 15}, {"shrink": 1, "sigma": 0, "iterations": 8}]
    cfg.write_text(yaml.safe_dump({"init": "none", "stages": [syn]}))
    out = tmp_path / "out"
    main(["register", fixed, moving, "-o", str(out), "--config", str(cfg), "--no-progress",
          "--fixed-labels", fixed_seg, "--moving-labels", moving_seg, "--write-inverse", "--write-jacobian"])
    doc = json.loads((out / "result.json").read_text())
    assert {"warp", "inverse_warp", "jacobian"} <= set(doc["outputs"])
    ours = nib.load(out / "warped.nii.gz").get_fdata()
    warp_img = nib.load(out / "warp.nii.gz")
    assert warp_img.shape[3:] == (1, 3) and warp_img.header.get_intent()[0] == "vector"

    # ANTs: the warp alone reproduces warped.nii.gz and the warped labels
    f_ants, m_ants = ants.image_read(fixed), ants.image_read(moving)
    theirs = ants.apply_transforms(f_ants, m_ants, [str(out / "warp.nii.gz")]).numpy()
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.999
    seg_ants = ants.apply_transforms(f_ants, ants.image_read(moving_seg), [str(out / "warp.nii.gz")],
                                     interpolator="genericLabel").numpy()
    ours_seg = nib.load(out / "warped_labels.nii.gz").get_fdata()
    for label in np.unique(ours_seg)[1:]:
        a, b = ours_seg == label, seg_ants == label
        if a.sum() > 20:
            assert 2 * np.sum(a & b) / (a.sum() + b.sum()) > 0.99, label

    # SimpleITK: a DisplacementFieldTransform built from the same file
    field = sitk.ReadImage(str(out / "warp.nii.gz"), sitk.sitkVectorFloat64)
    tx = sitk.DisplacementFieldTransform(field)
    resampled = sitk.Resample(sitk.ReadImage(moving, sitk.sitkFloat32), sitk.ReadImage(fixed), tx,
                              sitk.sitkLinear, 0.0)
    theirs = sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.999

    # registration helped, and the metrics/Jacobian outputs exist
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["jacobian"]["fold_percent"] < 0.5
    assert nib.load(out / "jacobian.nii.gz").shape == nib.load(fixed).shape


def test_midspace_objective_is_symmetric_in_the_two_images(slices) -> None:
    """SyN's objective compares both images on the mid space: swapping fixed and moving and negating
    the velocity gives the same value, and at zero velocity it is the plain objective."""
    from torchalign.losses import make_similarity
    from torchalign.registration import build_problem, objective, prepare
    from torchalign.transforms.base import Compose
    from torchalign.transforms.linear import MatrixTransform
    from torchalign.transforms.velocity import StationaryVelocity, SymmetricVelocity

    def evaluate(problem, model, similarity, matrix):
        return objective(problem, Compose(model, MatrixTransform(matrix)), similarity)

    fixed, moving = (prepare(im, name, True) for im, name in ((slices[0], "fixed"), (slices[1], "moving")))
    forward, backward = (build_problem(a, b, None, None, 2.0, 1.0, "vox") for a, b in ((fixed, moving), (moving, fixed)))
    similarity, eye = make_similarity("lncc", radius=2), torch.eye(3, dtype=torch.float64)[None]
    gen = torch.Generator().manual_seed(0)
    model = SymmetricVelocity(forward.grid, stride=2, tied=True)
    with torch.no_grad():
        model.velocity_fixed.copy_(3.0 * torch.nn.functional.avg_pool2d(
            torch.randn(model.velocity_fixed.shape, generator=gen), 5, 1, 2))
        one, other = evaluate(forward, model, similarity, eye), evaluate(backward, model.inverse(), similarity, eye)
        torch.testing.assert_close(one, other, rtol=1e-5, atol=1e-6)
        model.velocity_fixed.zero_()
        plain = evaluate(forward, StationaryVelocity(forward.grid), similarity, eye)
        torch.testing.assert_close(evaluate(forward, model, similarity, eye), plain)
