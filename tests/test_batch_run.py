"""The per-pair job and the sequential runner: outputs as `torchalign register`, the completion marker,
reruns that skip only finished pairs, per-pair failures, retries, summary.csv/index.html and the CLI."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import run_cli
from test_batch_data import corrupt, fast_settings, make_pairs, matrices, mtimes

from torchalign.batch import Execution, read_pairs, run_batch
from torchalign.batch import run as run_module
from torchalign.batch.local import run_sequential
from torchalign.batch.marker import MARKER, finished
from torchalign.batch.run import run_pair
from torchalign.errors import InputError

N = 4


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four pairs (two with landmarks, two with labels) and a finished sequential run in ``out``."""
    folder = tmp_path_factory.mktemp("study")
    make_pairs(folder / "in", N)
    results = run_batch(read_pairs(folder / "in" / "pairs.csv"), folder / "out", fast_settings(folder / "in"))
    assert [r.status for r in results] == ["ok"] * N, [r.error for r in results]
    return folder


cli_run = run_cli


def test_outputs_are_those_of_the_register_command(study: Path, capfd: pytest.CaptureFixture[str]) -> None:
    pair = read_pairs(study / "in" / "pairs.csv")[1]  # labels
    code, _, err = cli_run(["register", pair.fixed, pair.moving, "-o", study / "single", "--config",
                            study / "in" / "fast.yaml", "--fixed-labels", pair.fixed_labels, "--moving-labels",
                            pair.moving_labels, "--no-progress"], capfd)
    assert code == 0, err
    ours, theirs = study / "out" / pair.id, study / "single"
    assert sorted(p.name for p in ours.iterdir()) == sorted([p.name for p in theirs.iterdir()] + [MARKER])
    np.testing.assert_allclose(matrices(study / "out", [pair.id])[0], matrices(study, ["single"])[0], atol=1e-6)
    dice = [json.loads((d / "metrics.json").read_text())["mean"]["dice"] for d in (ours, theirs)]
    assert dice[0] == pytest.approx(dice[1], abs=1e-6)
    warped = [np.asarray(nib.load(d / "warped.nii.gz").dataobj) for d in (ours, theirs)]
    np.testing.assert_allclose(warped[0], warped[1], atol=1e-4)
    result = json.loads((ours / "result.json").read_text())
    assert result["fixed"] == pair.fixed and result["labels"]["fixed_labels"] == pair.fixed_labels


def test_summary_rows_metrics_and_index(study: Path) -> None:
    rows = list(csv.DictReader((study / "out" / "summary.csv").read_text().splitlines()))
    assert list(rows[0]) == ["id", "status", "seconds", "attempts", "error", "dice_mean", "tre_mean", "fixed", "moving"]
    assert [r["id"] for r in rows] == [f"p{i:02d}" for i in range(N)]
    assert all(r["status"] == "ok" and r["attempts"] == "1" and float(r["seconds"]) > 0 for r in rows)
    # Even pairs are a slice under a known rigid header change: landmarks come back to well under a voxel.
    assert all(float(r["tre_mean"]) < 1.0 and r["dice_mean"] == "" for r in rows[0::2])
    assert all(0.3 < float(r["dice_mean"]) < 1.0 and r["tre_mean"] == "" for r in rows[1::2])
    index = (study / "out" / "index.html").read_text()
    assert all(f"<td>p{i:02d}</td>" in index for i in range(N)) and "report.html" not in index
    assert not list((study / "out").glob(".*")), "staging folders left behind"


def test_marker_records_inputs_outputs_and_settings(study: Path) -> None:
    pair = read_pairs(study / "in" / "pairs.csv")[0]
    doc = json.loads((study / "out" / pair.id / MARKER).read_text())
    assert set(doc["inputs"]) == {"fixed", "moving", "fixed_points", "moving_points"}
    assert {"result.json", "warped.nii.gz", "transform.txt", "metrics.json"} <= set(doc["outputs"])
    assert doc["settings"] == fast_settings(study / "in").fingerprint()
    assert doc["summary"]["tre_mean"] < 1.0
    assert finished(study / "out" / pair.id, pair, fast_settings(study / "in")) is not None


def test_rerun_does_no_work_for_finished_pairs(study: Path) -> None:
    before = mtimes(study / "out")
    results = run_batch(read_pairs(study / "in" / "pairs.csv"), study / "out", fast_settings(study / "in"))
    assert [r.status for r in results] == ["skipped"] * N
    assert mtimes(study / "out") == before
    rows = list(csv.DictReader((study / "out" / "summary.csv").read_text().splitlines()))
    assert rows[1]["dice_mean"] != "" and rows[0]["tre_mean"] != ""  # carried over from the markers


def test_rerun_redoes_pairs_whose_inputs_outputs_or_settings_changed(tmp_path: Path) -> None:
    make_pairs(tmp_path / "in", 3)
    pairs, settings = read_pairs(tmp_path / "in" / "pairs.csv"), fast_settings(tmp_path / "in")
    out = tmp_path / "out"
    run_sequential(pairs, out, settings)
    os.utime(pairs[0].moving, ns=(1, 1))  # touched: a new mtime, the same content (checksums decide)
    corrupt(out / pairs[1].id / "warped.nii.gz")  # an output damaged after the run
    (out / pairs[2].id / MARKER).unlink()  # a run killed before its marker
    assert [r.status for r in run_sequential(pairs, out, settings)] == ["skipped", "ok", "ok"]
    image = nib.load(pairs[0].moving)
    shifted = image.affine.copy()
    shifted[0, 3] += 1.0
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), shifted), pairs[0].moving)  # new content
    assert [r.status for r in run_sequential(pairs, out, settings)] == ["ok", "skipped", "skipped"]
    other = fast_settings(tmp_path / "in", labels=(2, 3))
    assert [r.status for r in run_sequential(pairs, out, other)] == ["ok"] * 3


def test_corrupt_input_fails_its_pair_only(tmp_path: Path) -> None:
    make_pairs(tmp_path / "in", 3)
    pairs = read_pairs(tmp_path / "in" / "pairs.csv")
    corrupt(Path(pairs[1].moving))
    results = run_batch(pairs, tmp_path / "out", fast_settings(tmp_path / "in"))
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert pairs[1].moving in results[1].error and "cannot read image" in results[1].error
    assert not results[1].transient and results[1].attempts == 1
    assert not (tmp_path / "out" / pairs[1].id).exists()
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").read_text().splitlines()))
    assert rows[1]["status"] == "failed" and pairs[1].moving in rows[1]["error"]
    assert 'class="bad">failed' in (tmp_path / "out" / "index.html").read_text()


def test_transient_failures_are_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_pairs(tmp_path / "in", 2)
    pairs, settings = read_pairs(tmp_path / "in" / "pairs.csv"), fast_settings(tmp_path / "in")
    real, calls = run_module.register, []

    def flaky(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("node lost its scratch disk")
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "register", flaky)
    first = run_sequential(pairs, tmp_path / "no_retry", settings, retry=0)
    assert first[0].status == "failed" and first[0].error == "RuntimeError: node lost its scratch disk"
    assert first[0].transient and first[1].status == "ok"
    calls.clear()
    second = run_sequential(pairs, tmp_path / "retry", settings, retry=2)
    assert [(r.status, r.attempts) for r in second] == [("ok", 2), ("ok", 1)]

    def bad_input(*args: object, **kwargs: object) -> object:
        raise InputError("moving image: zero intensity variance")

    monkeypatch.setattr(run_module, "register", bad_input)
    third = run_sequential(pairs[:1], tmp_path / "bad", settings, retry=3)
    assert (third[0].status, third[0].attempts) == ("failed", 1)  # bad input is not retried


def test_report_and_index_links(tmp_path: Path) -> None:
    make_pairs(tmp_path / "in", 1)
    pairs = read_pairs(tmp_path / "in" / "pairs.csv")
    result = run_pair(pairs[0], tmp_path / "out", fast_settings(tmp_path / "in", report=True))
    assert result.status == "ok", result.error
    assert (tmp_path / "out" / "p00" / "report.html").is_file()
    doc = json.loads((tmp_path / "out" / "p00" / MARKER).read_text())
    assert "report.html" in doc["outputs"]  # the marker comes after the report
    run_batch(pairs, tmp_path / "out", fast_settings(tmp_path / "in", report=True))
    assert 'href="p00/report.html"' in (tmp_path / "out" / "index.html").read_text()


def test_cli_csv_glob_exit_codes_and_usage(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    make_pairs(tmp_path / "in", 2)
    fast = tmp_path / "in" / "fast.yaml"
    code, out, err = cli_run(["batch", tmp_path / "in" / "pairs.csv", "-o", tmp_path / "out", "--config", fast,
                              "--threads", 1], capfd)
    assert code == 0, err
    assert "[2/2]" in out and "2 pairs: 2 registered, 0 already finished, 0 failed" in out
    code, out, _ = cli_run(["batch", tmp_path / "in" / "pairs.csv", "-o", tmp_path / "out", "--config", fast,
                            "--mode", "gpu-batch", "--device", "cpu"], capfd)
    assert code == 0 and "0 registered, 2 already finished" in out  # the mode does not change what is written
    corrupt(tmp_path / "in" / "moving01.nii.gz")
    code, out, _ = cli_run(["batch", "--fixed", tmp_path / "in" / "atlas2d.nii.gz", "--moving",
                            str(tmp_path / "in" / "moving0?.nii.gz"), "-o", tmp_path / "glob", "--config", fast,
                            "--threads", 1], capfd)
    assert code == 1 and "moving01: failed" in out and "1 registered, 0 already finished, 1 failed" in out
    assert (tmp_path / "glob" / "moving00" / MARKER).is_file()
    code, _, err = cli_run(["batch", tmp_path / "in" / "pairs.csv", "--fixed", fast, "--moving", "x", "-o",
                            tmp_path / "o"], capfd)
    assert code == 2 and "not both" in err
    code, _, err = cli_run(["batch", tmp_path / "absent.csv", "-o", tmp_path / "o"], capfd)
    assert code == 2 and err.strip() == f"torchalign: error: {tmp_path / 'absent.csv'}: no such pairs file"
    code, _, err = cli_run(["batch", tmp_path / "in" / "pairs.csv", "-o", tmp_path / "o", "--scheduler",
                            "tcp://127.0.0.1:1", "--mode", "pool"], capfd)
    assert code == 2 and "--scheduler needs --mode dask" in err


def test_unknown_mode_and_bad_retry() -> None:
    with pytest.raises(InputError, match="unknown mode 'cloud'"):
        run_batch([], "unused", None, Execution(mode="cloud"))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="--retry must be >= 0"):
        run_batch([], "unused", None, Execution(retry=-1))  # type: ignore[arg-type]
