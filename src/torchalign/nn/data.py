"""Training pairs: subjects from a folder or a CSV (or in memory), lazy loading, normalisation, augmentation.

A :class:`PairDataset` item is a dict of ``fixed``/``moving`` ``(1, *S)`` float32 tensors (and
``fixed_labels``/``moving_labels`` ``(1, *S)`` int64 when label maps are given) on the fixed image's
grid, plus ``world_from_voxel`` of that grid. Files are read when an item is requested, never
held. A moving image on another grid is resampled onto the fixed grid (the identity in world
space, so transforms predicted on that grid apply to the original moving image).
"""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import InputError
from ..functional.sampling import sample_world
from ..grid import Grid, apply_matrix
from ..image import Image, normalize_intensity
from ..io.images import SUPPORTED, read_image
from ..resample import resample
from .config import AugmentConfig, DataConfig

Source = str | os.PathLike | Image
Normalize = Literal["percentile", "minmax", "none"]


@dataclass(frozen=True)
class Subject:
    """One image and (optionally) its label map: file paths (read lazily) or in-memory Images."""

    image: Source
    labels: Source | None = None


@dataclass
class Batch:
    """A collated batch: ``fixed``/``moving`` ``(B, 1, *S)``, labels ``(B, 1, *S)`` or None, one grid, and
    the true displacement ``(B, D, *S)`` mm when known (synthetic pairs)."""

    fixed: Tensor
    moving: Tensor
    grid: Grid
    fixed_labels: Tensor | None = None
    moving_labels: Tensor | None = None
    displacement: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        def move(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.to(device)

        return Batch(self.fixed.to(device), self.moving.to(device), self.grid, move(self.fixed_labels),
                     move(self.moving_labels), move(self.displacement))


def load(source: Source) -> Image:
    """The Image of a path (read now) or the Image itself."""
    return source if isinstance(source, Image) else read_image(source)


def normalize(data: Tensor, mode: Normalize) -> Tensor:
    """Intensity normalisation of ``(B, C, *S)`` float data: robust percentiles (0.5, 99.5) or min/max to [0, 1]."""
    if mode == "percentile":
        return normalize_intensity(data)
    if mode == "minmax":
        keep = (*data.shape[:2], *[1] * (data.ndim - 2))
        lo, hi = data.flatten(2).amin(-1).reshape(keep), data.flatten(2).amax(-1).reshape(keep)
        if bool((hi - lo <= 0).any()):
            raise InputError("image has zero intensity variance (constant image): cannot normalise it")
        return (data - lo) / (hi - lo)
    if mode != "none":
        raise InputError(f"unknown normalisation {mode!r}; expected percentile, minmax or none")
    return data


def prepare_image(image: Image, mode: Normalize) -> Image:
    """Float32, one channel (the mean of channels), finite, normalised: the network's input convention."""
    data = image.check_finite().data.float()
    if data.shape[1] > 1:
        data = data.mean(1, keepdim=True)
    return image.with_data(normalize(data, mode))


def random_affine(grid: Grid, rng: np.random.Generator, rotate: float, scale: float, translate: float) -> np.ndarray:
    """A random world matrix ``(D+1, D+1)`` about the grid centre (rotation in degrees, relative scale, mm)."""
    d = grid.ndim
    if d == 2:
        a = np.deg2rad(rng.uniform(-rotate, rotate))
        r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    else:
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        a = np.deg2rad(rng.uniform(-rotate, rotate))
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        r = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k
    linear = r * (1 + rng.uniform(-scale, scale, size=d))[None, :]
    c = grid.center()
    m = np.eye(d + 1)
    m[:d, :d] = linear
    m[:d, d] = c - linear @ c + rng.uniform(-translate, translate, size=d)
    return m


def _resample_through(data: Tensor, grid: Grid, matrix: np.ndarray, labels: bool) -> Tensor:
    points = apply_matrix(matrix, grid.points(dtype=torch.float64)).unsqueeze(0)
    return sample_world(data[None], grid, points, "nearest" if labels else "linear", "zeros")[0]


def augment(item: dict[str, Tensor], grid: Grid, config: AugmentConfig, rng: np.random.Generator) -> dict[str, Tensor]:
    """Random flips and affine (shared by both images), and optionally another affine for the moving image.

    ``item`` holds ``(1, *S)`` tensors keyed ``fixed``, ``moving`` and optionally ``*_labels``;
    labels are resampled with nearest neighbour. Returns a new dict.
    """
    if any(a < 0 or a >= grid.ndim for a in config.flip):
        raise InputError(f"augment.flip axes must be in 0..{grid.ndim - 1}, got {config.flip}")
    out = dict(item)
    axes = [a for a in config.flip if rng.random() < 0.5]
    if axes:
        out = {k: v.flip([1 + a for a in axes]) for k, v in out.items()}
    shared = random_affine(grid, rng, config.rotate, config.scale, config.translate)
    own = random_affine(grid, rng, config.rotate, config.scale, config.translate) if config.independent else None
    for key, value in out.items():
        matrix = shared if own is None or not key.startswith("moving") else shared @ own
        out[key] = _resample_through(value, grid, matrix, key.endswith("labels"))
    return out


class PairDataset(Dataset):
    """Registration pairs of ``subjects``.

    ``pairs`` is an explicit list of ``(fixed index, moving index)`` or ``"random"`` (each subject
    as moving with another, random subject as fixed, redrawn by :meth:`set_epoch`) or ``"all"``
    (every ordered pair). Item ``i`` of epoch ``e`` draws its augmentation from a generator seeded
    by ``(seed, e, i)``, so runs are reproducible and data-loader workers agree.
    """

    def __init__(self, subjects: Sequence[Subject], pairs: Sequence[tuple[int, int]] | Literal["random", "all"],
                 normalize: Normalize = "percentile", augment: AugmentConfig | None = None, seed: int = 0):
        self.subjects = list(subjects)
        n = len(self.subjects)
        if n < 2:
            raise InputError(f"registration pairs need at least 2 images, got {n}")
        self.mode = pairs if isinstance(pairs, str) else "list"
        if self.mode not in ("random", "all", "list"):
            raise InputError(f"pairs must be 'random', 'all' or a list of index pairs, got {pairs!r}")
        if self.mode == "list":
            self.pairs = [(int(f), int(m)) for f, m in pairs]  # type: ignore[union-attr]
            bad = [p for p in self.pairs if not (0 <= p[0] < n and 0 <= p[1] < n)]
            if bad or not self.pairs:
                raise InputError(f"pairs must be a non-empty list of subject indices in 0..{n - 1}; bad: {bad[:3]}")
        self.normalize = normalize
        self.augment = augment if augment is not None and augment.active else None
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Choose the pairs (random mode) and augmentations of ``epoch``."""
        self.epoch = epoch
        n = len(self.subjects)
        if self.mode == "random":
            rng = np.random.default_rng([self.seed, epoch])
            other = (np.arange(n) + rng.integers(1, n, size=n)) % n  # never the subject itself
            self.pairs = [(int(f), m) for m, f in enumerate(other)]
        elif self.mode == "all":
            self.pairs = [(f, m) for f in range(n) for m in range(n) if f != m]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        f, m = self.pairs[index]
        fixed = prepare_image(load(self.subjects[f].image), self.normalize)
        moving = prepare_image(load(self.subjects[m].image), self.normalize)
        grid = fixed.grid
        item = {"fixed": fixed.data[0], "moving": _onto(moving, grid, "linear")}
        labels = [self.subjects[i].labels for i in (f, m)]
        if (labels[0] is None) != (labels[1] is None):
            raise InputError(f"pair {index}: label maps are given for one image only")
        if labels[0] is not None:
            item["fixed_labels"] = _labels(load(labels[0]), grid, f"label map of subject {f}")
            item["moving_labels"] = _onto(_check_labels(load(labels[1]), f"label map of subject {m}"), grid, "nearest")
        if self.augment is not None:
            item = augment(item, grid, self.augment, np.random.default_rng([self.seed, self.epoch, index]))
        item["world_from_voxel"] = torch.tensor(grid.world_from_voxel)
        return item


def _onto(image: Image, grid: Grid, interp: Literal["linear", "nearest"]) -> Tensor:
    """``(1, *S)`` data of ``image`` on ``grid`` (resampled in world space when the grids differ)."""
    if image.ndim != grid.ndim:
        raise InputError(f"{image.meta.get('source', 'an image')} is {image.ndim}-D but its pair is {grid.ndim}-D")
    if not image.grid.same_as(grid):
        image = resample(image, grid, interp=interp)
    return image.data[0]


def _check_labels(image: Image, name: str) -> Image:
    if image.channels != 1 or image.data.is_floating_point() and not bool((image.data == image.data.round()).all()):
        raise InputError(f"{image.meta.get('source', name)}: a label map must hold one channel of integers")
    return image.with_data(image.data.long())


def _labels(image: Image, grid: Grid, name: str) -> Tensor:
    image = _check_labels(image, name)
    if not image.grid.same_as(grid):
        raise InputError(f"{image.meta.get('source', name)}: label map does not lie on its image's grid")
    return image.data[0]


def collate(items: Sequence[dict[str, Tensor]]) -> Batch:
    """Stack dataset items into a :class:`Batch`; every item must lie on the same grid."""
    matrices = [it["world_from_voxel"] for it in items]
    shapes = {tuple(it["fixed"].shape[1:]) for it in items}
    if len(shapes) > 1 or any(not torch.allclose(m, matrices[0], atol=1e-4) for m in matrices):
        raise InputError(f"a batch needs images on one grid (same shape and affine), got shapes {sorted(shapes)}; "
                         "resample the images to a common grid or use batch_size: 1")
    for key in ("fixed_labels", "displacement"):
        if len({key in it for it in items}) > 1:
            raise InputError(f"some pairs of a batch have a {key.replace('_', ' ')} and some do not")
    grid = Grid(items[0]["fixed"].shape[1:], matrices[0].numpy())

    def stack(key: str) -> Tensor | None:
        return torch.stack([it[key] for it in items]) if key in items[0] else None

    return Batch(stack("fixed"), stack("moving"), grid, stack("fixed_labels"),  # type: ignore[arg-type]
                 stack("moving_labels"), stack("displacement"))


# ---- building datasets from files ----------------------------------------------------------------
def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and any(name.endswith(ext) for ext in SUPPORTED)


def _split_ext(path: Path) -> tuple[str, str]:
    name = path.name
    for ext in sorted(SUPPORTED, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)], name[-len(ext):]
    return path.stem, path.suffix


def subjects_from_folder(folder: str | os.PathLike, labels_suffix: str = "_seg") -> list[Subject]:
    """Every image in ``folder`` (sorted), with ``NAME<labels_suffix>.<ext>`` as the label map of ``NAME.<ext>``."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{folder}: no such data folder")
    files = sorted(p for p in root.iterdir() if _is_image(p))
    by_stem = {_split_ext(p)[0]: p for p in files}
    subjects = [Subject(p, by_stem.get(_split_ext(p)[0] + labels_suffix) if labels_suffix else None)
                for p in files if not (labels_suffix and _split_ext(p)[0].endswith(labels_suffix))]
    if len(subjects) < 2:
        raise InputError(f"{folder}: found {len(subjects)} image(s); training needs at least 2")
    return subjects


def _csv_path(value: str, base: Path, where: str) -> Path:
    p = Path(value.strip())
    p = p if p.is_absolute() else base / p
    if not p.exists():
        raise InputError(f"{where}: no such file {p}")
    return p


def read_pairs_csv(path: str | os.PathLike) -> tuple[list[Subject], list[tuple[int, int]] | None]:
    """Subjects (columns ``image[,labels]``) or explicit pairs (``fixed,moving[,fixed_labels,moving_labels]``).

    Relative paths are taken from the CSV's folder. Returns ``(subjects, pairs or None)``.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such CSV file")
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        rows = [{k.strip(): (v or "") for k, v in row.items() if k is not None} for row in reader]
    base = p.resolve().parent
    if "image" in columns:
        subjects = [Subject(_csv_path(r["image"], base, f"{path}: row {i + 2}"),
                            _csv_path(r["labels"], base, f"{path}: row {i + 2}") if r.get("labels") else None)
                    for i, r in enumerate(rows)]
        return subjects, None
    if "fixed" in columns and "moving" in columns:
        subjects, pairs, index = [], [], {}
        for i, r in enumerate(rows):
            pair = []
            for side in ("fixed", "moving"):
                image = _csv_path(r[side], base, f"{path}: row {i + 2}")
                lab = r.get(f"{side}_labels")
                labels = _csv_path(lab, base, f"{path}: row {i + 2}") if lab else None
                key = (image, labels)
                if key not in index:
                    index[key] = len(subjects)
                    subjects.append(Subject(image, labels))
                pair.append(index[key])
            pairs.append((pair[0], pair[1]))
        return subjects, pairs
    raise InputError(f"{path}: needs a header with `image[,labels]` or `fixed,moving[,fixed_labels,moving_labels]`, "
                     f"got {columns}")


def _held_out(n: int, fraction: float, least: int, seed: int, what: str) -> tuple[list[int], list[int]]:
    """Indices ``0..n-1`` split (seeded permutation) into ``(train, validation)``, each at least ``least`` long."""
    if fraction <= 0:
        return list(range(n)), []
    order = np.random.default_rng([seed, 7]).permutation(n).tolist()
    k = max(least, round(fraction * n))
    if n - k < least:
        raise InputError(f"data.validation {fraction} leaves fewer than {least} {what} for training or validation "
                         f"out of {n}")
    return sorted(order[k:]), sorted(order[:k])


def datasets_from_config(config: DataConfig, normalize: Normalize = "percentile",
                         seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """The training and (when ``config.validation`` > 0) validation datasets a :class:`DataConfig` describes.

    Validation holds out whole subjects (so no validation image is ever trained on), or explicit
    pairs of a CSV, or for synthesis a separate stream of ``validation * synth.pairs`` pairs.
    ``normalize`` is the model's.
    """
    if config.synth is not None:
        from .synth import SynthDataset

        n_val = max(1, round(config.validation * config.synth.pairs)) if config.validation > 0 else 0
        return (SynthDataset(config.synth, config.synth.pairs, seed),
                SynthDataset(config.synth, n_val, seed, validation=True) if n_val else None)
    explicit: list[tuple[int, int]] | None = None
    if config.csv is not None:
        subjects, explicit = read_pairs_csv(config.csv)
    else:
        subjects = subjects_from_folder(config.folder, config.labels_suffix)  # type: ignore[arg-type]
    source = config.csv or config.folder

    def build(pairs: Sequence[tuple[int, int]] | Literal["random", "all"], subs: list[Subject],
              augment: AugmentConfig | None) -> PairDataset:
        return PairDataset(subs, pairs, normalize, augment, seed)

    if explicit is not None:
        train_i, val_i = _held_out(len(explicit), config.validation, 1, seed, f"pairs in {source}")
        return (build([explicit[i] for i in train_i], subjects, config.augment),
                build([explicit[i] for i in val_i], subjects, None) if val_i else None)
    if config.pairs == "atlas":
        if not Path(config.atlas).is_file():  # type: ignore[arg-type]
            raise InputError(f"{config.atlas}: no such atlas file")
        if config.atlas_labels is None:  # label maps are used in pairs only: drop the subjects' too
            subjects = [Subject(s.image) for s in subjects]
        atlas = Subject(config.atlas, config.atlas_labels)  # type: ignore[arg-type]
        train_i, val_i = _held_out(len(subjects), config.validation, 1, seed, f"subjects in {source}")

        def to_atlas(idx: list[int], augment: AugmentConfig | None) -> PairDataset:
            subs = [atlas, *(subjects[i] for i in idx)]
            return build([(0, j) for j in range(1, len(subs))], subs, augment)

        return to_atlas(train_i, config.augment), to_atlas(val_i, None) if val_i else None
    train_i, val_i = _held_out(len(subjects), config.validation, 2, seed, f"subjects in {source}")
    validation = build("all", [subjects[i] for i in val_i], None) if val_i else None
    return build(config.pairs, [subjects[i] for i in train_i], config.augment), validation
