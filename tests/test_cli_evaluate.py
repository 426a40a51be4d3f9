"""``torchalign evaluate`` and ``torchalign report`` end to end: files in, JSON/CSV/HTML out, clear errors."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from torchalign import cli as cli_module
from torchalign.cli.evaluate import evaluate_cmd
from torchalign.cli.report import report_cmd
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.io import write_image
from torchalign.io.points import write_points
from torchalign.io.transforms import write_displacement
from torchalign.metrics import dice

GRID = Grid.from_geometry((20, 22, 18), spacing=(1.0, 1.5, 2.0), origin=(-10.0, -16.0, -18.0))
SHIFT = np.array([2.0, -1.5, 1.0])

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(monkeypatch, capsys) -> Run:
    """Run ``torchalign ARGS`` through the real entry point -> (exit code, stdout, stderr)."""
    monkeypatch.setitem(cli_module.cli.commands, "evaluate", evaluate_cmd)
    monkeypatch.setitem(cli_module.cli.commands, "report", report_cmd)

    def call(*args: str) -> tuple[int, str, str]:
        try:
            cli_module.main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Label maps (label 3 lost in the warped map), a translation warp and LPS landmark files."""
    fixed = np.zeros(GRID.shape, np.int16)
    fixed[3:12, 4:15, 3:10] = 1
    fixed[12:18, 6:12, 8:15] = 2
    fixed[2:5, 17:20, 12:15] = 3
    warped = np.roll(fixed, 1, axis=0)
    warped[warped == 3] = 0
    paths = {name: tmp_path / f"{name}.nii.gz" for name in ("fixed_labels", "warped_labels", "warp")}
    write_image(Image(torch.from_numpy(fixed)[None], GRID), paths["fixed_labels"])
    write_image(Image(torch.from_numpy(warped)[None], GRID), paths["warped_labels"])
    field = torch.from_numpy(SHIFT).float().view(1, 3, 1, 1, 1).expand(1, 3, *GRID.shape).contiguous()
    write_displacement(field, GRID, paths["warp"])
    fixed_points = np.array([[0.0, 0.0, 0.0], [-5.0, 8.0, 6.0], [4.0, -10.0, -8.0]])
    residual = np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])
    paths["fixed_points"] = write_points(fixed_points, tmp_path / "fixed.csv", space="lps")  # ANTs CSV
    paths["moving_points"] = write_points(fixed_points + SHIFT + residual, tmp_path / "moving.csv", space="lps")
    paths["fixed_array"], paths["warped_array"] = fixed, warped  # type: ignore[assignment]
    return paths


def test_evaluate_writes_the_documented_json_and_csv(run: Run, files, tmp_path: Path) -> None:
    out, table = tmp_path / "metrics.json", tmp_path / "table.csv"
    code, stdout, stderr = run("evaluate", "--fixed-labels", files["fixed_labels"], "--warped-labels",
                               files["warped_labels"], "--labels", "1,2,3", "--warp", files["warp"],
                               "--fixed-points", files["fixed_points"], "--moving-points", files["moving_points"],
                               "-o", out, "--csv", table)
    assert (code, stderr) == (0, "")
    assert "mean Dice" in stdout and "(1 missing)" in stdout and "mean TRE 2.000 mm (n=3)" in stdout
    doc = json.loads(out.read_text())
    assert set(doc) == {"inputs", "labels", "mean", "points", "jacobian", "field"}
    fixed, warped = files["fixed_array"], files["warped_array"]
    for label in (1, 2):
        entry = doc["labels"][str(label)]
        assert entry["status"] == "ok"
        assert entry["dice"] == pytest.approx(dice(fixed == label, warped == label))
        assert entry["hd"] == pytest.approx(1.0)  # a one-voxel shift along the 1 mm axis
        assert set(entry) >= {"dice", "jaccard", "hd95", "hd", "assd"}
    assert doc["labels"]["3"] == {**doc["labels"]["3"], "status": "missing in warped", "dice": 0.0, "hd95": None}
    assert doc["mean"]["n"] == 3 and doc["mean"]["n_missing"] == 1
    assert doc["mean"]["dice"] == pytest.approx((doc["labels"]["1"]["dice"] + doc["labels"]["2"]["dice"]) / 3)
    points = doc["points"]
    assert points["tre_mean"] == pytest.approx(2.0, abs=1e-4) and points["tre_max"] == pytest.approx(5.0, abs=1e-4)
    assert points["tre_median"] == pytest.approx(1.0, abs=1e-4) and points["n"] == 3
    assert points["initial"]["tre_mean"] > points["tre_mean"]
    assert doc["jacobian"]["fold_percent"] == 0.0 and doc["jacobian"]["min"] == pytest.approx(1.0)
    rows = table.read_text().splitlines()
    assert rows[0].startswith("label,status,dice,jaccard,hd,hd95,assd") and len(rows) == 5
    assert rows[3].startswith("3,missing in warped,0,0,,")


def test_labels_file_and_default_labels(run: Run, files, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("# evaluate two labels\n2\n1\n")
    out = tmp_path / "m.json"
    assert run("evaluate", "--fixed-labels", files["fixed_labels"], "--warped-labels", files["warped_labels"],
               "--labels-file", labels, "-o", out)[0] == 0
    assert list(json.loads(out.read_text())["labels"]) == ["2", "1"]
    assert run("evaluate", "--fixed-labels", files["fixed_labels"], "--warped-labels", files["warped_labels"],
               "-o", out)[0] == 0
    assert list(json.loads(out.read_text())["labels"]) == ["1", "2", "3"]


def _one_line_error(result: tuple[int, str, str], *fragments: str, usage: bool = False) -> None:
    """Exit code 2 and one ``torchalign: error:`` line; a usage error (``usage``) names the command and its help."""
    code, _, stderr = result
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.startswith("torchalign: error: ") and stderr.count("\n") == 1, stderr
    if usage:
        assert "torchalign evaluate: " in stderr and "--help" in stderr, stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


def test_label_maps_on_different_grids_need_resample(run: Run, files, tmp_path: Path) -> None:
    other = Grid.from_geometry((10, 11, 9), spacing=(2.0, 3.0, 4.0), origin=(-9.5, -15.25, -17.0))
    coarse = np.zeros(other.shape, np.int16)
    coarse[2:6, 2:7, 1:5] = 1
    path = tmp_path / "coarse.nii.gz"
    write_image(Image(torch.from_numpy(coarse)[None], other), path)
    out = tmp_path / "m.json"
    args = ("evaluate", "--fixed-labels", files["fixed_labels"], "--warped-labels", path, "-o", out)
    _one_line_error(run(*args), "coarse.nii.gz lies on", "--resample")
    assert not out.exists()
    assert run(*args, "--resample")[0] == 0
    assert json.loads(out.read_text())["labels"]["1"]["status"] == "ok"


def test_bad_inputs_give_one_line_errors(run: Run, files, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    floats = np.where(files["fixed_array"] == 1, 1.5, 0.0).astype(np.float32)
    float_path = tmp_path / "float_labels.nii.gz"
    write_image(Image(torch.from_numpy(floats)[None], GRID), float_path)
    _one_line_error(run("evaluate", "--fixed-labels", files["fixed_labels"], "--warped-labels", float_path,
                        "-o", out), "float_labels.nii.gz: a label map must hold integers", "non-integer")

    three = np.zeros((2, 3))
    short = write_points(three, tmp_path / "two.csv", space="lps")
    _one_line_error(run("evaluate", "--fixed-points", files["fixed_points"], "--moving-points", short, "-o", out),
                    "holds 3", "holds 2", "correspond")

    far = write_points(np.array([[0.0, 0.0, 0.0], [500.0, 0.0, 0.0]]), tmp_path / "far.csv", space="lps")
    near = write_points(np.zeros((2, 3)), tmp_path / "near.csv", space="lps")
    _one_line_error(run("evaluate", "--warp", files["warp"], "--fixed-points", far, "--moving-points", near,
                        "-o", out), "far.csv: 1 of 2 points lie outside", "indices 1")
    _one_line_error(run("evaluate", "--fixed-labels", files["fixed_labels"], "--warped-labels",
                        files["warped_labels"], "--fixed-points", far, "--moving-points", near, "-o", out),
                    "outside the fixed label map's grid")

    _one_line_error(run("evaluate", "-o", out), "nothing to evaluate", usage=True)
    _one_line_error(run("evaluate", "--fixed-points", far, "-o", out), "both --fixed-points", usage=True)
    _one_line_error(run("evaluate", "--fixed-labels", files["fixed_labels"], "--warped-labels",
                        files["warped_labels"], "-o", files["warped_labels"]), "refusing to overwrite an input")
    _one_line_error(run("evaluate", "--fixed-labels", files["fixed_labels"], "--warped-labels",
                        files["warped_labels"], "--labels", "1,b", "-o", out), "--labels: expected integer")
    assert not out.exists()


def test_report_command(run: Run, tmp_path: Path) -> None:
    from test_report import make_outdir

    _one_line_error(run("report", tmp_path / "missing"), "missing: not a folder")
    outdir = make_outdir(tmp_path, full=False)
    code, stdout, stderr = run("report", outdir)
    assert (code, stderr) == (0, "") and stdout.strip().endswith("report.html")
    assert (outdir / "report.html").read_text().startswith("<!DOCTYPE html>")
