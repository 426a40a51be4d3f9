"""``torchalign info`` and ``torchalign resample``: agreement with nibabel/SimpleITK, one-line errors on bad input."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import data_file, run_cli
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.io import read_image, write_image
from torchalign.resample import resample

sitk_orientation = sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines


run = run_cli


def info_fields(text: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in text.splitlines() if ":" in ln)}


@pytest.fixture
def ras_file(tmp_path: Path, rng: np.random.Generator) -> Path:
    """A small RAS image with anisotropic voxels and a slight rotation."""
    affine = np.eye(4)
    c, s = np.cos(0.1), np.sin(0.1)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.2, 0.9, 2.0])
    affine[:3, 3] = [-20.0, 15.0, 7.5]
    path = tmp_path / "ras.nii.gz"
    nib.save(nib.Nifti1Image(rng.normal(size=(12, 10, 8)).astype(np.float32), affine), path)
    return path


def psr_from(ras: Path, tmp_path: Path) -> Path:
    image = nib.load(ras)
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt("PSR"))
    path = tmp_path / "psr.nii.gz"
    nib.save(image.as_reoriented(ornt), path)
    return path


def test_simpleitk_orientation_letters_name_where_axes_point() -> None:
    """Pins how the oracle below speaks: SimpleITK 2.5 names the direction each axis points *to*
    (an identity LPS direction is 'LPS'), the same letters as nibabel's aff2axcodes, not ITK's old
    'from' codes (which would say 'RAI'). No letter conversion is needed."""
    assert sitk_orientation((1, 0, 0, 0, 1, 0, 0, 0, 1)) == "LPS"
    assert sitk_orientation((-1, 0, 0, 0, -1, 0, 0, 0, 1)) == "RAS"


@pytest.mark.parametrize("kind", ["RAS", "LAS", "PSR"])
def test_info_orientation_agrees_with_nibabel_and_simpleitk(kind: str, ras_file: Path, tmp_path: Path,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    path = {"RAS": lambda: ras_file, "LAS": lambda: data_file("templates/mni.nii.gz"),
            "PSR": lambda: psr_from(ras_file, tmp_path)}[kind]()
    code, out, err = run(["info", path], capfd)
    assert code == 0 and err == ""
    fields = info_fields(out)
    ref = sitk.ReadImage(str(path))
    assert fields["orientation"] == kind == "".join(nib.aff2axcodes(nib.load(path).affine))
    assert fields["orientation"] == sitk_orientation(ref.GetDirection())
    origin = np.array([float(v) for v in fields["origin"].split("mm")[0].strip("() ").split(",")])
    np.testing.assert_allclose(origin * [-1, -1, 1], ref.GetOrigin(), atol=1e-3)
    spacing = np.array([float(v) for v in fields["spacing"].split("mm")[0].strip("() ").split(",")])
    np.testing.assert_allclose(spacing, ref.GetSpacing(), rtol=1e-5)
    assert fields["shape"] == str(tuple(nib.load(path).shape))


def test_info_2d_png(capfd: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["info", data_file("slices2d/r16slice.jpg")], capfd)
    fields = info_fields(out)
    assert code == 0 and fields["dimension"].startswith("2-D") and fields["orientation"] == "LP"
    assert fields["dtype"] == "uint8"


@pytest.mark.parametrize("interp", ["linear", "nearest", "cubic", "label"])
def test_resample_command_matches_the_library(interp: str, tmp_path: Path, rng: np.random.Generator,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    moving = Image(torch.tensor(rng.integers(0, 6, size=(1, 14, 12, 10)), dtype=torch.int16),
                   Grid.from_geometry((14, 12, 10), spacing=(1.0, 1.5, 2.0), origin=(-7.0, -9.0, -10.0)))
    fixed = Image(torch.zeros(1, 9, 11, 8), Grid.from_geometry((9, 11, 8), spacing=(1.7, 1.3, 2.1),
                                                                origin=(-6.0, -8.0, -9.0)))
    write_image(moving, tmp_path / "moving.nii.gz")
    write_image(fixed, tmp_path / "fixed.mha")
    code, out, err = run(["resample", tmp_path / "moving.nii.gz", "--like", tmp_path / "fixed.mha",
                          "-o", tmp_path / "out.nii.gz", "--interp", interp, "--pad", "-1"], capfd)
    assert code == 0 and err == "" and out.strip() == f"wrote {tmp_path / 'out.nii.gz'}"
    result = read_image(tmp_path / "out.nii.gz")
    expected = resample(read_image(tmp_path / "moving.nii.gz"), read_image(tmp_path / "fixed.mha").grid,
                        interp=interp, padding=-1.0)
    assert result.grid.same_as(fixed.grid, atol=1e-5)
    assert result.data.dtype == (torch.int16 if interp in ("nearest", "label") else torch.float32)
    torch.testing.assert_close(result.data, expected.data)
    assert (result.data == -1).any() and (result.data != -1).any()


# ---- bad input: one line on stderr naming the file and the problem, non-zero exit, no traceback ------
def make_bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str, str]]:
    """Case name -> (arguments, file the message must name, words the message must contain)."""
    real = data_file("multimodal/hd_bet_IXI002-Guys-0828-T2.nii.gz")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    mha = tmp_path / "whole.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(6000, dtype=np.float32).reshape(10, 20, 30)), str(mha))
    truncated_mha = tmp_path / "truncated.mha"
    truncated_mha.write_bytes(mha.read_bytes()[: mha.stat().st_size // 2])
    (tmp_path / "scan.xyz").write_text("not an image")
    (tmp_path / "no_dicom").mkdir()
    (tmp_path / "no_dicom" / "notes.txt").write_text("no DICOM here")
    nan = np.ones((5, 6, 7), np.float32)
    nan[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 2, 3), np.float32), np.eye(4)), tmp_path / "five_d.nii.gz")
    np.save(tmp_path / "five_d.npy", np.ones((2, 3, 4, 5, 6)))
    np.save(tmp_path / "empty.npy", np.ones((0, 3, 4)))
    nib.save(nib.Nifti1Image(np.ones((4, 0, 3), np.float32), np.eye(4)), tmp_path / "empty.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((5, 6, 7), np.float32), np.eye(4)), tmp_path / "ok.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((5, 6), np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    (tmp_path / "blocker").write_text("a file where a folder should be")
    t = lambda name: str(tmp_path / name)  # noqa: E731
    return {
        "missing": (["info", t("missing.nii.gz")], "missing.nii.gz", "no such file"),
        "truncated nii.gz": (["info", t("truncated.nii.gz")], "truncated.nii.gz", "cannot read image"),
        "truncated mha": (["info", t("truncated.mha")], "truncated.mha", "data not read completely"),
        "unknown extension": (["info", t("scan.xyz")], "scan.xyz", "unknown image extension"),
        "no DICOM": (["info", t("no_dicom")], "no_dicom", "no DICOM series"),
        "NaN": (["info", t("nan.nii.gz")], "nan.nii.gz", "1 NaN/Inf values"),
        "5-D nifti": (["info", t("five_d.nii.gz")], "five_d.nii.gz", "expected a 2-D or 3-D image"),
        "5-D npy": (["info", t("five_d.npy")], "five_d.npy", "expected a 2-D or 3-D array"),
        "zero-size npy": (["info", t("empty.npy")], "empty.npy", "zero-size dimension"),
        "zero-size nifti": (["info", t("empty.nii.gz")], "empty.nii.gz", "zero-size dimension"),
        "overwrite input": (["resample", t("ok.nii.gz"), "--like", t("nan.nii.gz"), "-o", t("nan.nii.gz")],
                            "nan.nii.gz", "refusing to overwrite an input file"),
        "output extension": (["resample", t("ok.nii.gz"), "--like", t("ok.nii.gz"), "-o", t("out.xyz")],
                             "out.xyz", "unknown image extension"),
        "output folder is a file": (["resample", t("ok.nii.gz"), "--like", t("ok.nii.gz"), "-o",
                                     t("blocker/out.nii.gz")], "blocker/out.nii.gz", "cannot write image"),
        "2-D onto 3-D": (["resample", t("flat.nii.gz"), "--like", t("ok.nii.gz"), "-o", t("out.nii.gz")],
                         "flat.nii.gz", "is 2-D but"),
    }


CASES = ["missing", "truncated nii.gz", "truncated mha", "unknown extension", "no DICOM", "NaN", "5-D nifti",
         "5-D npy", "zero-size npy", "zero-size nifti", "overwrite input", "output extension",
         "output folder is a file", "2-D onto 3-D"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_error(case: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    args, name, words = make_bad_inputs(tmp_path)[case]
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir() if p.is_file()}
    code, out, err = run(args, capfd)
    assert code == 2, (code, err)
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("torchalign: error: "), err
    assert name in err and words in err, err
    assert "Traceback" not in err
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # inputs untouched, nothing written


def test_nan_to_accepts_the_image(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    make_bad_inputs(tmp_path)
    code, out, err = run(["info", tmp_path / "nan.nii.gz", "--nan-to", "0"], capfd)
    assert code == 0 and err == "" and info_fields(out)["range"] == "[0, 1]"
    code, _, err = run(["resample", tmp_path / "nan.nii.gz", "--like", tmp_path / "ok.nii.gz", "-o",
                        tmp_path / "out.nii.gz", "--nan-to", "0"], capfd)
    assert code == 0 and err == ""
    assert torch.isfinite(read_image(tmp_path / "out.nii.gz").data).all()


def test_installed_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    """The real process: exit status 2 and exactly one line, for a truncated file."""
    real = data_file("multimodal/hd_bet_IXI002-Guys-0828-T2.nii.gz")
    truncated = tmp_path / "half.nii.gz"
    truncated.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    proc = subprocess.run([sys.executable, "-c", "from torchalign.cli import main; main()", "info", str(truncated)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "TORCHALIGN_DEBUG": ""})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "half.nii.gz: cannot read image" in proc.stderr, proc.stderr
