"""Issue #16: no stale or half-written output folders, every user mistake a one-line exit-2 error
caught before any work, log-friendly progress, and a command line that starts without torch.

Each test names what it catches. They use a tiny 2-D pair and the ``rigid`` preset (seconds).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import torchalign
from conftest import run_cli

from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.io import write_image

SRC = Path(torchalign.__file__).resolve().parents[1]  # the sources under test, wherever they are


def _blob(shape: tuple[int, ...], shift: float = 0.0) -> torch.Tensor:
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    value = np.exp(-((axes[0] - shift) ** 2 + axes[1] ** 2) / 0.16) + 0.1 * axes[0]
    return torch.as_tensor(value, dtype=torch.float32)[None]


@pytest.fixture
def pair(tmp_path: Path) -> dict[str, Path]:
    """A 24 x 20 fixed/moving pair, 1 mm voxels, plus label maps and landmarks on it."""
    grid = Grid((24, 20))
    paths = {"fixed": tmp_path / "fixed.nii.gz", "moving": tmp_path / "moving.nii.gz",
             "labels": tmp_path / "labels.nii.gz"}
    write_image(Image(_blob((24, 20)), grid), paths["fixed"])
    write_image(Image(_blob((24, 20), 0.1), grid), paths["moving"])
    labels = torch.zeros(1, 24, 20, dtype=torch.int16)
    labels[0, 8:16, 6:14] = 1
    write_image(Image(labels, grid), paths["labels"])
    inside, outside = tmp_path / "inside.txt", tmp_path / "outside.txt"  # elastix files of voxel indices
    inside.write_text("index\n2\n5 4\n10 8\n")
    outside.write_text("index\n2\n5 4\n100 8\n")
    paths.update(inside=inside, outside=outside)
    return paths


_run = run_cli


def _one_line_exit_2(code: int, err: str) -> str:
    assert code == 2, (code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def _register(pair: dict[str, Path], out: Path, *extra: object) -> list:
    return ["register", pair["fixed"], pair["moving"], "-o", out, "--preset", "rigid", "--no-progress", *extra]


def test_a_folder_holding_outputs_is_refused_unless_overwrite_which_replaces_it_whole(
        pair: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Catches a rigid run written into a folder of an earlier syn run leaving the old warp.nii.gz and
    jacobian.nii.gz in place (the report then shows the old deformation)."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("warp.nii.gz", "jacobian.nii.gz", "result.json", "warped.nii.gz"):
        (out / name).write_text("from an earlier syn run")
    code, _, err = _run(_register(pair, out), capfd)
    message = _one_line_exit_2(code, err)
    assert "--overwrite" in message and str(out) in message
    assert (out / "warp.nii.gz").read_text() == "from an earlier syn run"  # refused: nothing touched
    code, _, err = _run(_register(pair, out, "--overwrite"), capfd)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"warped.nii.gz", "transform.txt", "result.json"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_a_failed_run_leaves_the_previous_folder_untouched(pair: dict[str, Path], tmp_path: Path,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    """Catches --overwrite deleting the old outputs before the new run has succeeded."""
    out = tmp_path / "out"
    assert _run(_register(pair, out), capfd)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = _run(["register", pair["fixed"], pair["moving"], "-o", out, "--preset", "rigdi", "--overwrite"],
                        capfd)
    _one_line_exit_2(code, err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_input_inside_the_output_folder_is_never_deleted(pair: dict[str, Path], capfd) -> None:
    """Catches --overwrite swapping away the folder that holds the inputs themselves."""
    folder = pair["fixed"].parent
    code, _, err = _run(_register(pair, folder, "--overwrite"), capfd)
    assert "delete" in _one_line_exit_2(code, err)
    assert pair["fixed"].is_file() and pair["moving"].is_file()


def test_overwrite_never_deletes_files_the_command_does_not_write(pair: dict[str, Path], tmp_path: Path,
                                                                  capfd) -> None:
    """Catches `-o ~/data --overwrite` (a folder that is not an earlier output folder) being wiped."""
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    code, _, err = _run(_register(pair, out, "--overwrite"), capfd)
    assert "thesis.tex" in _one_line_exit_2(code, err)
    assert (out / "thesis.tex").read_text() == "mine"


def test_fixed_points_outside_the_fixed_image_fail_before_anything_is_written(
        pair: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Catches the error arriving after warped.nii.gz, transform.txt and result.json were written."""
    out = tmp_path / "out"
    code, _, err = _run(_register(pair, out, "--fixed-points", pair["outside"], "--moving-points", pair["inside"]),
                        capfd)
    message = _one_line_exit_2(code, err)
    assert "outside.txt" in message and "outside" in message.replace("outside.txt", "")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_label_map_holding_fractions_fails_before_the_registration(
        pair: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Catches a non-integer label map being found only at evaluation, after the registration ran."""
    out = tmp_path / "out"
    code, _, err = _run(_register(pair, out, "--fixed-labels", pair["moving"], "--moving-labels", pair["labels"]),
                        capfd)
    assert "moving.nii.gz" in _one_line_exit_2(code, err) and "registered" not in err
    assert not out.exists()


@pytest.mark.parametrize("device, expected", [("cuda", "available"), ("cuda:7", ""), ("gpu0", "not a torch device"),
                                              ("mps", "available")])
def test_an_unavailable_or_unknown_device_is_one_line_exit_2(pair: dict[str, Path], tmp_path: Path, device: str,
                                                             expected: str, capfd) -> None:
    """Catches --device cuda on a machine without CUDA ending in exit 1 and 'internal error'."""
    backend = getattr(torch, device.split(":")[0], None)
    if backend is not None and backend.is_available() and device != "cuda:7":
        pytest.skip(f"{device} is available here")
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 CUDA devices")
    out = tmp_path / "out"
    code, _, err = _run(_register(pair, out, "--device", device), capfd)
    message = _one_line_exit_2(code, err)
    assert "--device" in message and expected in message
    assert not out.exists()


def test_report_works_from_any_working_directory(pair: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    """Catches result.json recording input paths as typed (relative), so that `torchalign report OUTDIR`
    fails from another folder."""
    monkeypatch.chdir(pair["fixed"].parent)
    assert _run(["register", "fixed.nii.gz", "moving.nii.gz", "-o", "out", "--preset", "rigid", "--no-progress"],
                capfd)[0] == 0
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["fixed"] == str(pair["fixed"].resolve()) and doc["moving"] == str(pair["moving"].resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = _run(["report", tmp_path / "out"], capfd)
    assert code == 0, err
    assert (tmp_path / "out" / "report.html").is_file()


def test_fixed_points_inside_are_evaluated(pair: dict[str, Path], tmp_path: Path, capfd) -> None:
    """The positive case of the check above: points inside the image give a TRE in metrics.json."""
    out = tmp_path / "out"
    code, _, err = _run(_register(pair, out, "--fixed-points", pair["inside"], "--moving-points", pair["inside"]),
                        capfd)
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["points"]["n"] == 2


def test_quiet_prints_nothing(pair: dict[str, Path], tmp_path: Path, capfd) -> None:
    """Catches --quiet still printing the summary line or progress."""
    code, out, err = _run(["register", pair["fixed"], pair["moving"], "-o", tmp_path / "out", "--preset", "rigid",
                           "--quiet"], capfd)
    assert (code, out, err) == (0, "", "")


def test_progress_to_a_log_file_is_a_few_lines(pair: dict[str, Path], tmp_path: Path, capfd) -> None:
    """Catches tqdm writing one line per update when stderr is a file (8.5 kB for one 2-D syn run)."""
    code, _, err = _run(["register", pair["fixed"], pair["moving"], "-o", tmp_path / "out", "--preset", "rigid"],
                        capfd)
    assert code == 0
    levels = sum(len(s["levels"]) for s in json.loads((tmp_path / "out" / "result.json").read_text())["stages"])
    assert len(err.splitlines()) <= levels and "\r" not in err, err


@pytest.mark.parametrize("config", [
    "preset: syn\nstages:\n  - transform: svf\n    levels: [{shrink: 2, iterations: 2}]\n"
    "    regularisers: [{name: diffusion, weight: 1, options: {sigma: 2}}]\n",
    "preset: rigid\nstages:\n  - transform: rigid\n    levels: [{shrink: 2, iterations: 2}]\n"
    "    optimizer_options: {momentum: 0.9}\n"])
def test_unknown_regulariser_or_optimiser_option_is_exit_2(pair: dict[str, Path], tmp_path: Path, config: str,
                                                           capfd) -> None:
    """Catches an unknown option of a regulariser or an optimiser raising TypeError (exit 1)."""
    path = tmp_path / "cfg.yaml"
    path.write_text(config)
    code, _, err = _run(["register", pair["fixed"], pair["moving"], "-o", tmp_path / "out", "--config", path,
                         "--no-progress"], capfd)
    assert ("sigma" in err or "momentum" in err) and "unknown option" in _one_line_exit_2(code, err)
    assert not (tmp_path / "out").exists()


def test_factories_construct_turns_bad_options_into_input_errors() -> None:
    """The helper the construction sites call: an unknown option or a refused value is one InputError
    naming the component; catches TypeError/ValueError escaping as an internal error."""
    from torchalign.errors import InputError
    from torchalign.factories import construct
    from torchalign.losses import REGULARISERS

    with pytest.raises(InputError, match=r"regulariser 'diffusion': unknown option sigma; it takes weight"):
        construct(REGULARISERS["diffusion"], "regulariser 'diffusion'", weight=1.0, reduction="none", sigma=2)
    params = [torch.zeros(1, requires_grad=True)]
    with pytest.raises(InputError, match=r"optimizer 'Adam': unknown option momentum; it takes lr, betas"):
        construct(torch.optim.Adam, "optimizer 'Adam'", params, lr=0.1, momentum=0.9)
    with pytest.raises(InputError, match=r"optimizer 'Adam': Invalid beta"):
        construct(torch.optim.Adam, "optimizer 'Adam'", params, lr=0.1, betas=(2.0, 0.9))
    assert construct(torch.optim.SGD, "optimizer 'SGD'", params, lr=0.1, momentum=0.9).defaults["momentum"] == 0.9


@pytest.mark.parametrize("args", [["--help"], ["register"], ["register", "--help"], ["resample", "a.nii"],
                                  ["info", "--bogus"], ["batch", "--help"], ["evaluate", "--help"]])
def test_help_and_argument_errors_do_not_import_torch(args: list[str]) -> None:
    """Catches a subcommand import pulling torch (seconds) into `torchalign --help` and usage errors."""
    code = ("import sys\nfrom torchalign.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)" % (args,))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)},
                          timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout + done.stderr


def test_help_summaries_match_the_commands() -> None:
    """Catches the lazy group's one-line summaries drifting from the commands' own help."""
    from torchalign.cli import COMMANDS, load_command

    for name, (_, _, summary) in COMMANDS.items():
        command = load_command(name)
        assert command.name == name
        assert command.get_short_help_str(limit=1000).startswith(summary.rstrip(".")), name
