"""Training: the objective's analytic values, a tiny run, logs, checkpoints, resume, restarts, torchrun."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from nn_synthetic import blobs, write_config, write_subjects

from torchalign.errors import InputError
from torchalign.grid import Grid
from torchalign.io import read_image
from torchalign.io.transforms import read_displacement
from torchalign.nn.checkpoint import load_checkpoint, model_from_checkpoint
from torchalign.nn.config import LossConfig, load_train_config
from torchalign.nn.inference import predict_pair
from torchalign.nn.train import Objective, finetune, one_hot, soft_dice, train
from torchalign.transforms.linear import LinearTransform, MatrixTransform
from torchalign.transforms.velocity import StationaryVelocity

REPO = Path(__file__).resolve().parents[1]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_soft_dice_and_one_hot_analytic() -> None:
    labels = torch.tensor([[[[0, 1], [2, 2]]]])
    oh = one_hot(labels, [2, 1, 7])
    assert oh.shape == (1, 3, 2, 2) and oh[0, 0].sum() == 2 and oh[0, 2].sum() == 0
    assert torch.allclose(soft_dice(oh, oh), torch.ones(1))  # label 7 is absent on both sides: counts as 1
    half = oh.clone()
    half[0, 0, 1, 1] = 0  # label 2 loses one of its two pixels: Dice 2*1/(2+1)
    assert torch.allclose(soft_dice(half, oh), torch.tensor([(2 / 3 + 1 + 1) / 3]), atol=1e-5)


def test_objective_of_the_identity_on_identical_images_is_zero() -> None:
    grid = Grid((16, 18))
    img = torch.from_numpy(blobs((16, 18), 1))[None, None]
    labels = (img > 0.5).long()
    objective = Objective(LossConfig.model_validate(
        {"regularisers": [{"name": "diffusion", "weight": 1.0}], "dice": 1.0, "labels": [0, 1]}))
    with torch.no_grad():
        terms = objective(StationaryVelocity(grid), img, img, grid, labels, labels)
    assert float(terms.loss.detach()) < 1e-10 and float(terms.dice) < 1e-6
    shifted = MatrixTransform(torch.tensor([[1.0, 0, 2.0], [0, 1, 0], [0, 0, 1]]))
    terms = objective(shifted, img, img, grid, labels, labels)
    assert float(terms.similarity) > 1e-3 and float(terms.dice) > 1e-3 and float(terms.regulariser) < 1e-12
    with pytest.raises(InputError, match="Dice term needs label maps"):
        objective(shifted, img, img, grid)


def test_finetune_lowers_the_loss_and_keeps_the_best() -> None:
    grid = Grid((24, 24))
    fixed = torch.from_numpy(blobs((24, 24), 2))[None, None]
    moving = torch.roll(fixed, 2, dims=2)
    objective = Objective(LossConfig())
    tuned, losses = finetune(MatrixTransform(torch.eye(3, dtype=torch.float64)), fixed, moving, grid, objective,
                             20, 0.3)
    assert isinstance(tuned, LinearTransform) and len(losses) == 20
    final = float(objective(tuned, fixed, moving, grid).loss.detach())
    assert final < 0.2 * losses[0] and final <= min(losses) + 1e-9
    with pytest.raises(InputError, match="lr > 0"):
        finetune(tuned, fixed, moving, grid, objective, 3, 0.0)


def test_train_logs_checkpoints_and_resumes(tmp_path: Path) -> None:
    write_subjects(tmp_path / "data", 4)
    cfg_path = write_config(tmp_path / "train.yaml", {"folder": "data"},
                            loss={"similarity": "mse", "dice": 0.5, "labels": [1, 2]}, max_steps=None,
                            tensorboard=True)
    config = load_train_config(cfg_path)
    assert config.output == tmp_path / "run" and config.data.folder == tmp_path / "data"
    summary = train(config)
    assert (summary.steps, summary.epochs) == (2, 1)  # 4 pairs, batch 2
    rows = _rows(tmp_path / "run" / "log.csv")
    assert [r["step"] for r in rows] == ["1", "2"] and float(rows[0]["dice"]) > 0
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 2)
    longer = config.model_copy(update={"epochs": 2})
    summary = train(longer, resume=True)
    assert (summary.steps, summary.epochs) == (4, 2)
    assert [r["step"] for r in _rows(tmp_path / "run" / "log.csv")] == ["1", "2", "3", "4"]
    other = longer.model_copy(update={"model": longer.model.model_copy(update={"features": [4, 4]})})
    with pytest.raises(InputError, match="cannot resume: it holds a different model"):
        train(other, resume=True)
    with pytest.raises(InputError, match="no such checkpoint"):
        train(longer.model_copy(update={"output": tmp_path / "elsewhere"}), resume=True)


def test_prediction_is_identical_after_a_restart(tmp_path: Path) -> None:
    paths = write_subjects(tmp_path / "data", 3)
    config = load_train_config(write_config(tmp_path / "train.yaml", {"folder": "data"}, lr=0.01))
    ckpt = train(config).checkpoint
    model, cfg = model_from_checkpoint(ckpt)
    here = predict_pair(model, cfg, read_image(paths[0]), read_image(paths[1])).displacement
    assert here is not None and here.abs().max() > 1e-3  # training moved it away from the identity
    out = tmp_path / "pred"
    code = ("import sys; from torchalign.cli.predict import predict_cmd; "
            "predict_cmd(sys.argv[1:], standalone_mode=False)")
    subprocess.run([sys.executable, "-c", code, "--model", str(ckpt), str(paths[0]), str(paths[1]), "-o", str(out)],
                   check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    there = read_displacement(out / "warp.nii.gz").field
    assert torch.equal(there, here.float())  # bit for bit


TORCHRUN_SCRIPT = "import sys\nfrom torchalign.cli.train import train_cmd\ntrain_cmd(sys.argv[1:])\n"


def test_training_under_torchrun_with_two_cpu_processes(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    write_subjects(tmp_path / "data", 4)
    cfg = write_config(tmp_path / "train.yaml", {"folder": "data"}, batch_size=1, max_steps=None)
    script = tmp_path / "run_train.py"
    script.write_text(TORCHRUN_SCRIPT)
    start = time.perf_counter()
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(cfg), "--no-progress"],
                          check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 2 steps (1 epochs)") == 1, done.stdout  # rank 0 speaks once
    rows = _rows(tmp_path / "run" / "log.csv")
    assert [r["step"] for r in rows] == ["1", "2"]  # 4 pairs over 2 ranks at batch 1
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2
    print(f"torchrun 2 x CPU: {seconds:.1f} s")
