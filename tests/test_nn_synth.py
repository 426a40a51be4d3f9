"""SynthMorph-style synthetic pairs: reproducible, varied, and with a true displacement that is right."""
from __future__ import annotations

import pytest
import torch

from torchalign.errors import InputError
from torchalign.functional.sampling import sample_world
from torchalign.grid import Grid
from torchalign.nn.config import SynthConfig, TrainConfig, validate_train_config
from torchalign.nn.data import collate
from torchalign.nn.synth import SynthDataset, synth_pair

CONFIG = SynthConfig(shape=[48, 40], spacing=2.0, labels=8, label_scale=(4, 8), deform=6.0, deform_scale=8,
                     rotate=5, translate=2, scale=0.05)


def test_pairs_are_reproducible_per_seed_epoch_and_index() -> None:
    """Catches unseeded draws, epochs that repeat the same pairs, and a validation stream that
    changes with the epoch or equals the training stream."""
    train = SynthDataset(CONFIG, 4, seed=1)
    a, b = train[2], SynthDataset(CONFIG, 4, seed=1)[2]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(train[2]["fixed"], train[3]["fixed"])
    train.set_epoch(1)
    assert not torch.equal(train[2]["fixed"], a["fixed"])
    val = SynthDataset(CONFIG, 4, seed=1, validation=True)
    first = val[0]["fixed"]
    val.set_epoch(5)
    assert torch.equal(val[0]["fixed"], first) and not torch.equal(first, a["fixed"])


def test_images_labels_and_contrasts() -> None:
    """Images in [0, 1] on the configured grid, labels among 0 .. labels-1, and the two images of a
    pair in different contrasts: catches a fixed intensity per label (not contrast-agnostic)."""
    item = SynthDataset(CONFIG, 1, seed=0)[0]
    assert item["fixed"].shape == (1, 48, 40) and item["displacement"].shape == (2, 48, 40)
    for side in ("fixed", "moving"):
        assert 0 <= float(item[side].min()) and float(item[side].max()) <= 1
        assert set(item[f"{side}_labels"].unique().tolist()) <= set(range(8))
    same = item["fixed_labels"] == item["moving_labels"]
    means = [[float(item[s][item[f"{s}_labels"] == k].mean()) for k in range(8)
              if bool(((item[f"{s}_labels"] == k) & same).any())] for s in ("fixed", "moving")]
    assert abs(torch.corrcoef(torch.tensor(means))[0, 1]) < 0.9


def test_the_true_displacement_maps_the_moving_labels_onto_the_fixed_ones() -> None:
    """Warping the moving label map by the returned displacement must reproduce the fixed label map
    (up to nearest-neighbour sampling at boundaries) far better than the identity does. Catches a
    displacement of the wrong direction (moving -> fixed) or a wrong composition order."""
    items = [SynthDataset(CONFIG, 4, seed=3)[i] for i in range(4)]
    batch = collate(items)
    points = batch.grid.points().unsqueeze(0) + batch.displacement.movedim(1, -1)
    warped = sample_world(batch.moving_labels.float(), batch.grid, points, "nearest", "border").long()
    agree = float((warped == batch.fixed_labels).float().mean())
    before = float((batch.moving_labels == batch.fixed_labels).float().mean())
    assert agree > 0.85 and agree > before + 0.2
    backwards = batch.grid.points().unsqueeze(0) - batch.displacement.movedim(1, -1)
    wrong = sample_world(batch.moving_labels.float(), batch.grid, backwards, "nearest", "border").long()
    assert float((wrong == batch.fixed_labels).float().mean()) < agree - 0.2


def test_synthesis_runs_on_the_device_of_the_caller() -> None:
    """The draw is made on the CPU generator and computed on the requested device: same numbers."""
    grid = Grid.from_geometry(CONFIG.shape, spacing=[2.0, 2.0])
    here = synth_pair(grid, CONFIG, torch.Generator().manual_seed(0), "cpu")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    there = synth_pair(grid, CONFIG, torch.Generator().manual_seed(0), device)
    assert all(there[k].device.type == device for k in there)
    assert torch.allclose(here["fixed"], there["fixed"].cpu(), atol=1e-4)


def test_config_errors_name_the_key() -> None:
    """A synthetic grid of the wrong dimension, or Dice labels the synthesis never draws, are config errors."""
    base = {"model": {"ndim": 3}, "data": {"synth": {"shape": [32, 32]}}}
    with pytest.raises(ValueError, match="2 sizes but the model is 3-D"):
        TrainConfig.model_validate(base)
    with pytest.raises(ValueError, match=r"synthetic label ids 0 \.\. 15"):
        TrainConfig.model_validate({"model": {"ndim": 2}, "data": {"synth": {"shape": [32, 32]}},
                                    "loss": {"dice": 1.0, "labels": [16]}})
    with pytest.raises(InputError, match="x.yaml: invalid training configuration: data.synth.shape"):
        validate_train_config({"model": {"ndim": 2}, "data": {"synth": {"shape": [4, 4]}}}, "x.yaml")
