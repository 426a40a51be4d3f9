"""Pair datasets: folders and CSVs, pairing modes, lazy loading, normalisation, augmentation, collation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from nn_synthetic import blobs, labels_of, write_subjects

import torchalign.nn.data as data_module
from torchalign.errors import InputError
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.io import write_image
from torchalign.nn.config import AugmentConfig, DataConfig
from torchalign.nn.data import (
    PairDataset,
    Subject,
    augment,
    collate,
    datasets_from_config,
    normalize,
    read_pairs_csv,
    subjects_from_folder,
)


def test_folder_pairs_images_with_their_label_maps(tmp_path: Path) -> None:
    write_subjects(tmp_path, 3)
    (tmp_path / "notes.txt").write_text("not an image")
    subjects = subjects_from_folder(tmp_path)
    assert [Path(s.image).name for s in subjects] == ["img0.nii.gz", "img1.nii.gz", "img2.nii.gz"]
    assert [Path(s.labels).name for s in subjects] == ["img0_seg.nii.gz", "img1_seg.nii.gz", "img2_seg.nii.gz"]
    with pytest.raises(InputError, match="no such data folder"):
        subjects_from_folder(tmp_path / "missing")


def test_random_pairs_are_never_self_redrawn_per_epoch_and_reproducible() -> None:
    subjects = [Subject(Image(torch.rand(1, 4, 4), Grid((4, 4)))) for _ in range(6)]
    ds = PairDataset(subjects, "random", seed=3)
    first = list(ds.pairs)
    assert all(f != m for f, m in first) and sorted(m for _, m in first) == list(range(6))
    ds.set_epoch(1)
    assert ds.pairs != first
    ds.set_epoch(0)
    assert ds.pairs == first
    assert len(PairDataset(subjects, "all")) == 30


def test_files_are_read_only_when_an_item_is_requested(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_subjects(tmp_path, 3)
    calls: list[str] = []
    original = data_module.read_image
    monkeypatch.setattr(data_module, "read_image", lambda p: calls.append(Path(p).name) or original(p))
    ds = datasets_from_config(DataConfig(folder=tmp_path))[0]
    assert calls == []
    item = ds[0]
    assert len(calls) == 4  # two images and two label maps
    assert item["fixed"].shape == (1, 20, 24) and item["fixed_labels"].dtype == torch.int64
    assert float(item["fixed"].min()) == 0.0 and float(item["fixed"].max()) == 1.0


def test_csv_of_subjects_and_of_explicit_pairs(tmp_path: Path) -> None:
    write_subjects(tmp_path / "d", 3)
    (tmp_path / "subjects.csv").write_text("image,labels\nd/img0.nii.gz,d/img0_seg.nii.gz\n"
                                           "d/img1.nii.gz,d/img1_seg.nii.gz\n")
    subjects, pairs = read_pairs_csv(tmp_path / "subjects.csv")
    assert pairs is None and len(subjects) == 2 and Path(subjects[1].labels).name == "img1_seg.nii.gz"
    (tmp_path / "pairs.csv").write_text("fixed,moving\nd/img0.nii.gz,d/img1.nii.gz\nd/img0.nii.gz,d/img2.nii.gz\n")
    subjects, pairs = read_pairs_csv(tmp_path / "pairs.csv")
    assert pairs == [(0, 1), (0, 2)] and len(subjects) == 3
    ds = datasets_from_config(DataConfig(csv=tmp_path / "pairs.csv"))[0]
    assert len(ds) == 2 and "fixed_labels" not in ds[1]
    (tmp_path / "bad.csv").write_text("fixed,moving\nd/img0.nii.gz,d/nothere.nii.gz\n")
    with pytest.raises(InputError, match=r"bad.csv: row 2: no such file .*nothere"):
        read_pairs_csv(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="needs a header"):
        read_pairs_csv(tmp_path / "cols.csv")


def test_atlas_mode_pairs_the_atlas_with_every_subject(tmp_path: Path) -> None:
    write_subjects(tmp_path / "subjects", 3)
    atlas = write_subjects(tmp_path / "atlas", 1)[0]
    ds = datasets_from_config(DataConfig(folder=tmp_path / "subjects", pairs="atlas", atlas=atlas))[0]
    assert ds.pairs == [(0, 1), (0, 2), (0, 3)] and ds.subjects[0].image == atlas
    assert "fixed_labels" not in ds[0]  # no atlas labels: the subjects' labels are dropped too


def test_validation_holds_out_whole_subjects(tmp_path: Path) -> None:
    """Catches a validation split that reuses training images (pairs split instead of subjects), one
    that changes between runs of the same seed, and a split too small to form validation pairs."""
    write_subjects(tmp_path / "subjects", 6)
    config = DataConfig(folder=tmp_path / "subjects", validation=0.34)
    train, val = datasets_from_config(config, seed=3)
    train_images = {s.image for s in train.subjects}
    val_images = {s.image for s in val.subjects}
    assert len(val_images) == 2 and len(train_images) == 4 and not train_images & val_images
    assert val.pairs == [(0, 1), (1, 0)] and val.augment is None  # every ordered pair, never augmented
    again = datasets_from_config(config, seed=3)[1]
    assert [s.image for s in again.subjects] == [s.image for s in val.subjects]
    atlas = write_subjects(tmp_path / "atlas", 1)[0]
    train, val = datasets_from_config(DataConfig(folder=tmp_path / "subjects", pairs="atlas", atlas=atlas,
                                                 validation=0.2))
    assert len(val) == 1 and val.subjects[0].image == atlas and len(train) == 5
    with pytest.raises(InputError, match="data.validation 0.9 leaves fewer than 2 subjects"):
        datasets_from_config(DataConfig(folder=tmp_path / "subjects", validation=0.9))


def test_moving_image_on_another_grid_is_resampled_onto_the_fixed_grid(tmp_path: Path) -> None:
    fixed_grid = Grid.from_geometry((20, 24), spacing=(1.0, 1.0))
    coarse = fixed_grid.downsample(2)
    img = torch.from_numpy(blobs((20, 24), 0))[None]
    moving = Image(torch.nn.functional.avg_pool2d(img[None], 2)[0], coarse)
    ds = PairDataset([Subject(Image(img, fixed_grid)), Subject(moving)], [(0, 1)], normalize="none")
    item = ds[0]
    assert item["moving"].shape == (1, 20, 24)
    assert float((item["moving"] - img).abs().mean()) < 0.05


def test_normalize_modes() -> None:
    x = torch.linspace(-3, 5, 100).reshape(1, 1, 10, 10)
    assert torch.allclose(normalize(x, "minmax").flatten()[[0, -1]], torch.tensor([0.0, 1.0]))
    assert normalize(x, "none") is x
    with pytest.raises(InputError, match="constant"):
        normalize(torch.ones(1, 1, 4, 4), "minmax")


def test_augmentation_moves_images_and_labels_together() -> None:
    grid = Grid((24, 24))
    img = torch.from_numpy(blobs((24, 24), 4))[None]
    item = {"fixed": img, "moving": img.clone(), "fixed_labels": torch.from_numpy(labels_of(img[0].numpy())).long()[None],
            "moving_labels": torch.from_numpy(labels_of(img[0].numpy())).long()[None]}
    cfg = AugmentConfig(rotate=20, scale=0.1, translate=2, flip=[0, 1])
    out = augment(item, grid, cfg, np.random.default_rng(0))
    assert torch.equal(out["fixed"], out["moving"]) and torch.equal(out["fixed_labels"], out["moving_labels"])
    assert not torch.equal(out["fixed"], img)
    # the labels still describe the image: thresholds of the warped image agree almost everywhere
    agree = (torch.from_numpy(labels_of(out["fixed"][0].numpy())).long() == out["fixed_labels"][0]).float().mean()
    assert agree > 0.95
    independent = augment(item, grid, AugmentConfig(rotate=20, independent=True), np.random.default_rng(1))
    assert not torch.equal(independent["fixed"], independent["moving"])
    with pytest.raises(InputError, match="flip axes"):
        augment(item, grid, AugmentConfig(flip=[2]), np.random.default_rng(0))


def test_collate_requires_one_grid(tmp_path: Path) -> None:
    a = Subject(Image(torch.rand(1, 6, 6), Grid((6, 6))))
    b = Subject(Image(torch.rand(1, 6, 6), Grid.from_geometry((6, 6), spacing=(2.0, 2.0))))
    ds = PairDataset([a, a, b, b], [(0, 1), (2, 3)])
    batch = collate([ds[0], ds[0]])
    assert batch.fixed.shape == (2, 1, 6, 6) and batch.grid.same_as(Grid((6, 6)))
    with pytest.raises(InputError, match="one grid"):
        collate([ds[0], ds[1]])


def test_label_maps_must_be_integer(tmp_path: Path) -> None:
    grid = Grid((6, 6))
    write_image(Image(torch.rand(1, 6, 6), grid), tmp_path / "soft.nii.gz")
    s = Subject(Image(torch.rand(1, 6, 6), grid), tmp_path / "soft.nii.gz")
    with pytest.raises(InputError, match="soft.nii.gz: a label map must hold one channel of integers"):
        PairDataset([s, s], [(0, 1)])[0]
