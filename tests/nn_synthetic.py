"""Seeded synthetic images and label maps for the torchalign.nn tests (files written under a tmp folder)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.io import write_image


def blobs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A smooth float32 image in [0, 1]: a sum of Gaussian blobs."""
    g = np.random.default_rng(seed)
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    img = np.zeros(shape)
    for _ in range(5):
        c = g.uniform(-0.4, 0.4, len(shape))
        s = g.uniform(0.15, 0.35, len(shape))
        img += g.uniform(0.5, 1.0) * np.exp(-sum(((a - ci) / si) ** 2 for a, ci, si in zip(axes, c, s)))
    return (img / img.max()).astype(np.float32)


def labels_of(image: np.ndarray) -> np.ndarray:
    """Three-class label map (0, 1, 2) by thresholds."""
    return (image > 0.3).astype(np.int16) + (image > 0.6).astype(np.int16)


def write_subjects(folder: Path, n: int, shape: tuple[int, ...] = (20, 24), grid: Grid | None = None) -> list[Path]:
    """``n`` images ``img<i>.nii.gz`` and label maps ``img<i>_seg.nii.gz`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    grid = grid or Grid.from_geometry(shape, spacing=[1.5] * len(shape))
    paths = []
    for i in range(n):
        img = blobs(shape, i)
        write_image(Image(torch.from_numpy(img)[None], grid), folder / f"img{i}.nii.gz")
        write_image(Image(torch.from_numpy(labels_of(img))[None], grid), folder / f"img{i}_seg.nii.gz")
        paths.append(folder / f"img{i}.nii.gz")
    return paths


def write_config(path: Path, data: dict, **overrides: object) -> Path:
    """A small 2-D training YAML at ``path`` (tiny U-Net, 2 steps) with ``overrides`` on top."""
    config = {
        "model": {"ndim": 2, "head": "dense", "features": [4, 8]},
        "data": data,
        "loss": {"similarity": "mse", "regularisers": [{"name": "diffusion", "weight": 0.1}]},
        "output": "run", "batch_size": 2, "epochs": 1, "max_steps": 2, "tensorboard": False,
    }
    config.update(overrides)
    path.write_text(yaml.safe_dump(config))
    return path
