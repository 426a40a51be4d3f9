"""Linear registration recovers known transforms (synthetic, ITK 2-D guide pairs, known_rigid)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from nibabel.affines import from_matvec
from nibabel.eulerangles import euler2mat

from torchalign.config import Level, RegistrationConfig, Stage, resolve_config
from torchalign.errors import InputError
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.io import read_image
from torchalign.io.lps import flip_matrix
from torchalign.registration import register
from torchalign.resample import resample
from torchalign.transforms.linear import MatrixTransform

from conftest import data_file


def _blobs(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A smooth random image: a sum of anisotropic Gaussian blobs (no symmetry to confuse rotation)."""
    g = np.random.default_rng(seed)
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    img = np.zeros(shape)
    for _ in range(8):
        c = g.uniform(-0.5, 0.5, len(shape))
        s = g.uniform(0.08, 0.25, len(shape))
        img += g.uniform(0.5, 1.0) * np.exp(-sum(((a - ci) / si) ** 2 for a, ci, si in zip(axes, c, s)))
    return torch.as_tensor(img, dtype=torch.float32)[None, None]


def _rotation2d(deg: float, center: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    a = math.radians(deg)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    m = np.eye(3)
    m[:2, :2] = r
    m[:2, 2] = center - r @ center + np.asarray(shift)
    return m


def _angle_deg(m: np.ndarray) -> float:
    return math.degrees(math.atan2(m[1, 0], m[0, 0]))


def test_synthetic_2d_rigid_recovered() -> None:
    grid = Grid.from_geometry((96, 80), spacing=(1.0, 1.5), origin=(-40.0, -50.0))
    fixed = Image(_blobs(grid.shape), grid)
    truth = _rotation2d(12.0, grid.center(), (4.0, -3.0))
    moving = resample(fixed, grid, MatrixTransform(np.linalg.inv(truth)), padding="border")
    cfg = resolve_config("rigid", None, {"init": "geometry", "metric": "ncc"})
    result = register(fixed, moving, cfg)
    m = result.linear[0].numpy()
    assert abs(_angle_deg(m) - 12.0) < 0.5
    corners = np.array([[0, 0], [95, 79], [0, 79], [95, 0]], dtype=float) @ grid.world_from_voxel[:2, :2].T + grid.origin
    err = np.abs(corners @ m[:2, :2].T + m[:2, 2] - (corners @ truth[:2, :2].T + truth[:2, 2])).max()
    assert err < 0.5


ITK = "multimodal/itk2d/"


def _itk_case(fixed_name: str, moving_name: str, metric: str, preset: str = "rigid") -> np.ndarray:
    fixed = read_image(data_file(ITK + fixed_name))
    moving = read_image(data_file(ITK + moving_name))
    cfg = resolve_config(preset, None, {"init": "geometry", "metric": metric})
    return flip_matrix(register(fixed, moving, cfg).linear[0].numpy())  # LPS, as the ITK guide states it


def _translation_about(m_lps: np.ndarray, center: np.ndarray) -> np.ndarray:
    """ITK's (angle, translation) parametrisation about ``center``: y = R (x - c) + c + t."""
    return m_lps[:2, 2] - (center - m_lps[:2, :2] @ center)


BORDER20_CENTER = np.array([110.0, 128.0])  # (221 - 1) / 2, (257 - 1) / 2 in LPS pixels


def test_itk_t1_to_pd_shift_mi() -> None:
    m = _itk_case("BrainT1SliceBorder20.png", "BrainProtonDensitySliceShifted13x17y.png", "mi")
    assert np.abs(m[:2, 2] - [13.0, 17.0]).max() < 0.5, m
    assert abs(_angle_deg(m)) < 0.5


def _sitk_euler2d(fixed_name: str, moving_name: str) -> tuple[float, np.ndarray]:
    """SimpleITK's own MSE registration (Euler 2-D about the Border20 centre): the oracle."""
    import SimpleITK as sitk

    def read(name: str) -> "sitk.Image":
        img = sitk.ReadImage(str(data_file(ITK + name)))
        if img.GetNumberOfComponentsPerPixel() > 1:
            img = sitk.VectorIndexSelectionCast(img, 0)
        return sitk.Cast(img, sitk.sitkFloat32)

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-5, 500)
    reg.SetOptimizerScalesFromPhysicalShift()
    start = sitk.Euler2DTransform()
    start.SetCenter(BORDER20_CENTER.tolist())
    start.SetAngle(math.radians(8.0))
    start.SetTranslation((11.0, 15.0))
    reg.SetInitialTransform(start)
    reg.SetInterpolator(sitk.sitkLinear)
    out = sitk.Euler2DTransform(reg.Execute(read(fixed_name), read(moving_name)))
    return math.degrees(out.GetAngle()), np.asarray(out.GetTranslation())


def test_itk_pd_rotated10() -> None:
    m = _itk_case("BrainProtonDensitySliceBorder20.png", "BrainProtonDensitySliceRotated10.png", "mi")
    assert abs(_angle_deg(m) - 10.0) < 0.5, m
    assert np.abs(_translation_about(m, BORDER20_CENTER)).max() < 0.5, m


def test_itk_pd_r10x13y17_matches_simpleitk() -> None:
    """10 deg plus a shift. The guide's nominal (13, 17) is not about the Border20 centre: SimpleITK's own
    registration finds (13.09, 15.92) there (MSE 44 vs 283 at the nominal values), so it is the oracle."""
    fixed, moving = "BrainProtonDensitySliceBorder20.png", "BrainProtonDensitySliceR10X13Y17.png"
    m = _itk_case(fixed, moving, "mi")
    angle, shift = _sitk_euler2d(fixed, moving)
    assert abs(angle - 10.0) < 0.1
    assert abs(_angle_deg(m) - 10.0) < 0.5, m
    assert np.abs(_translation_about(m, BORDER20_CENTER) - shift).max() < 0.5, (m, shift)


def test_known_rigid_different_grids() -> None:
    fixed = read_image(data_file("known_rigid/anatomical.nii"))
    moving = read_image(data_file("known_rigid/reoriented_anat_moved.nii"))
    truth = from_matvec(euler2mat(0.1, 0.2, 0.3), [3, 4, 5])  # fixed world -> moving world
    cfg = resolve_config("rigid", None, {"init": "geometry", "metric": "ncc"})
    m = register(fixed, moving, cfg).linear[0].numpy()
    rot_err = math.degrees(np.arccos(np.clip((np.trace(m[:3, :3] @ truth[:3, :3].T) - 1) / 2, -1, 1)))
    pts = fixed.grid.points(torch.float64).reshape(-1, 3).numpy()
    disp_err = np.linalg.norm(pts @ (m[:3, :3] - truth[:3, :3]).T + m[:3, 3] - truth[:3, 3], axis=1)
    assert rot_err < 1.0 and disp_err.mean() < 1.0, (rot_err, disp_err.mean())


def test_mismatched_dimensions_rejected() -> None:
    a = Image(_blobs((16, 16)), Grid((16, 16)))
    b = Image(_blobs((8, 8, 8)), Grid((8, 8, 8)))
    with pytest.raises(InputError, match="2-D.*3-D"):
        register(a, b, resolve_config("rigid"))


def test_constant_image_and_empty_mask_rejected() -> None:
    grid = Grid((32, 32))
    img = Image(_blobs(grid.shape), grid)
    flat = Image(torch.ones(1, 1, 32, 32), grid)
    with pytest.raises(InputError, match="moving image.*variance"):
        register(img, flat, resolve_config("rigid", None, {"init": "none"}))
    with pytest.raises(InputError, match="fixed mask is empty"):
        register(img, img, resolve_config("rigid", None, {"init": "none"}),
                 fixed_mask=Image(torch.zeros(1, 1, 32, 32), grid))


def test_frozen_groups_stay_fixed() -> None:
    grid = Grid.from_geometry((64, 64))
    fixed = Image(_blobs(grid.shape, seed=3), grid)
    moving = resample(fixed, grid, MatrixTransform(np.linalg.inv(_rotation2d(8.0, grid.center(), (3.0, 2.0)))),
                      padding="border")
    stage = Stage(transform="affine", metric="ncc", freeze=["rotation", "shear"],
                  levels=[Level(shrink=2, sigma=1, iterations=40)])
    result = register(fixed, moving, RegistrationConfig(init="none", stages=[stage]))
    m = result.linear[0].numpy()
    assert abs(m[0, 1]) < 1e-9 and abs(m[1, 0]) < 1e-9  # no rotation or shear: a diagonal linear part
