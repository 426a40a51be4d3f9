"""The training loop's validation, best checkpoint, schedules, early stopping, AMP, half-resolution
integration, network spacing and seeding, on tiny synthetic runs (seconds each)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from nn_synthetic import blobs, write_config, write_subjects

from torchalign.errors import InputError
from torchalign.grid import Grid
from torchalign.nn.checkpoint import load_checkpoint
from torchalign.nn.config import ModelConfig, load_train_config
from torchalign.nn.models import build_model
from torchalign.nn.train import train


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _config(tmp_path: Path, **overrides: object):
    write_subjects(tmp_path / "data", 6)
    settings = {"data": {"folder": "data", "validation": 0.34}, "max_steps": None, "epochs": 3, "batch_size": 2,
                "lr": 0.01, **overrides}
    return load_train_config(write_config(tmp_path / "train.yaml", **settings))  # type: ignore[arg-type]


def test_validation_curves_and_the_best_checkpoint(tmp_path: Path) -> None:
    """Catches validation that is skipped or run on training images, a best.pt that is not the epoch
    with the lowest validation loss, and Dice/folding columns that are not filled in."""
    config = _config(tmp_path)
    summary = train(config)
    rows = _rows(tmp_path / "run" / "validation.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    losses = [float(r["loss"]) for r in rows]
    assert summary.best_score == pytest.approx(min(losses), rel=1e-5) and summary.best == tmp_path / "run" / "best.pt"
    best = load_checkpoint(summary.best)
    assert best["epoch"] == 1 + losses.index(min(losses)) and best["optimizer"] is None
    assert [r["best"] for r in rows] == [str(int(v <= min(losses[:i + 1]) and (i == 0 or v < min(losses[:i]))))
                                         for i, v in enumerate(losses)]
    assert all(0 <= float(r["dice"]) <= 1 and float(r["folding_percent"]) >= 0 for r in rows)
    assert len(_rows(tmp_path / "run" / "log.csv")) == 3 * 2  # 4 training subjects -> 4 pairs, batch 2


def test_cosine_schedule_sets_the_rate_of_each_epoch(tmp_path: Path) -> None:
    """Catches a schedule that is not stepped once per epoch or anneals over the wrong length."""
    config = _config(tmp_path, epochs=4, schedule={"name": "cosine", "min_lr": 0.001})
    train(config)
    lrs = [float(r["lr"]) for r in _rows(tmp_path / "run" / "log.csv")[::2]]
    expected = [0.001 + (0.01 - 0.001) * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert lrs == pytest.approx(expected, rel=1e-4)


def test_early_stop_and_plateau_when_validation_stops_improving(tmp_path: Path) -> None:
    """A rate so small that the weights never change: the validation loss is constant, so the plateau
    schedule halves the rate after each epoch without improvement and early stopping ends the run
    `early_stop` epochs after the first. Catches a counter that never resets or never fires."""
    config = _config(tmp_path, lr=1e-30, epochs=10, early_stop=2,
                     schedule={"name": "plateau", "patience": 0, "factor": 0.5})
    summary = train(config)
    assert summary.stopped_early and summary.epochs == 3
    rows = _rows(tmp_path / "run" / "validation.csv")
    assert [r["best"] for r in rows] == ["1", "0", "0"]
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-30, 1e-30, 5e-31])  # rate at each validation
    progress = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["progress"]
    assert progress["stale"] == 2 and progress["scheduler"]["_last_lr"] == pytest.approx([2.5e-31])
    with pytest.raises(InputError, match="need validation pairs"):
        train(config.model_copy(update={"data": config.data.model_copy(update={"validation": 0.0})}))


def test_resume_restores_the_schedule_and_the_best_score(tmp_path: Path) -> None:
    """A run stopped after 2 of 4 epochs and resumed logs the rates and validation scores of one
    uninterrupted run. Catches a resumed run that restarts the schedule or forgets the best score."""
    config = _config(tmp_path / "split", epochs=4, schedule={"name": "cosine"})
    train(config.model_copy(update={"max_steps": 4}))
    resumed = train(config, resume=True)
    whole = train(_config(tmp_path / "whole", epochs=4, schedule={"name": "cosine"}))
    logs = [_rows(tmp_path / name / "run" / "log.csv") for name in ("split", "whole")]
    assert [r["lr"] for r in logs[0]] == [r["lr"] for r in logs[1]] and len(logs[0]) == 8
    vals = [_rows(tmp_path / name / "run" / "validation.csv") for name in ("split", "whole")]
    assert [(r["loss"], r["best"]) for r in vals[0]] == [(r["loss"], r["best"]) for r in vals[1]]
    assert resumed.best_score == whole.best_score


def test_training_is_reproducible_from_the_seed(tmp_path: Path) -> None:
    """Catches unseeded randomness (weights, pair draws, augmentation, data order)."""
    weights = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        config = _config(tmp_path / name, seed=seed, epochs=1,
                         data={"folder": "data", "validation": 0.34, "augment": {"rotate": 5, "flip": [0]}})
        weights.append(load_checkpoint(train(config).checkpoint)["state_dict"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_amp_on_the_cpu_runs_the_network_in_bfloat16_and_the_field_in_float32(tmp_path: Path) -> None:
    """Catches autocast that is not engaged (identical results) or that leaks into the field and
    integration (a bfloat16 velocity), and a training step that fails under AMP."""
    grid = Grid((20, 24))
    model = build_model(ModelConfig(ndim=2, features=[4, 8]))
    torch.nn.init.normal_(model.head.conv.weight, std=0.1)
    img = torch.from_numpy(blobs((20, 24), 0))[None, None]
    with torch.no_grad():
        plain = model(img, img.flip(2), grid).velocity
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(img, img.flip(2), grid).velocity
    assert mixed.dtype == torch.float32 and not torch.equal(plain, mixed)
    assert torch.allclose(plain, mixed, atol=0.05 * float(plain.abs().max()))
    summary = train(_config(tmp_path, amp=True, epochs=1))
    assert math.isfinite(summary.loss) and summary.steps == 2


def test_half_resolution_integration_and_network_spacing(tmp_path: Path) -> None:
    """``stride: 2`` keeps the velocity on the half grid (and fine-tuning keeps it there);
    ``spacing`` runs the network on a coarser grid than the input's. Catches a field that silently
    stays at full resolution, or a displacement not brought back to the input grid."""
    grid = Grid.from_geometry((20, 24), spacing=(1.0, 1.0))
    img = torch.from_numpy(blobs((20, 24), 0))[None, None]
    half = build_model(ModelConfig(ndim=2, features=[4, 8], stride=2))
    transform = half(img, img, grid)
    assert tuple(transform.velocity.shape) == (1, 2, 10, 12)
    assert tuple(transform.displacement(grid).shape) == (1, 2, 20, 24)
    assert tuple(transform.learnable_copy(grid).velocity.shape) == (1, 2, 10, 12)
    coarse = build_model(ModelConfig(ndim=2, features=[4, 8], spacing=2.0))
    transform = coarse(img, img, grid)
    assert transform.grid.spacing.tolist() == [2.0, 2.0] and tuple(transform.velocity.shape) == (1, 2, 10, 12)
    summary = train(_config(tmp_path, epochs=1, model={"ndim": 2, "features": [4, 8], "stride": 2}))
    assert math.isfinite(summary.loss)
