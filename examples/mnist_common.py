"""Shared parts of the MNIST examples: data split, pairs, training, evaluation and the figure.

One digit class of the MNIST test set (``digits/mnist_t10k.npz``) is split into training images
(the first ``n_train``) and test images (the rest). Training pairs are random same-class pairs,
redrawn every epoch; the test pairs are fixed by a seed. Images are 28x28 on a 1 mm grid,
min/max normalised to [0, 1].
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.nn.checkpoint import model_from_checkpoint
from torchalign.nn.config import TrainConfig
from torchalign.nn.data import PairDataset, Subject, collate
from torchalign.nn.evaluate import evaluate_model
from torchalign.nn.models import warp
from torchalign.nn.train import train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "digits" / "mnist_t10k.npz"


def arguments(description: str, steps: int, lr: float) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="mnist_t10k.npz")
    parser.add_argument("--digit", type=int, default=5)
    parser.add_argument("--n-train", type=int, default=700, help="training images of the class; the rest test")
    parser.add_argument("--test-pairs", type=int, default=300)
    parser.add_argument("--steps", type=int, default=steps, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    return parser


def digit_subjects(path: Path, digit: int, n_train: int) -> tuple[list[Subject], list[Subject]]:
    """(train, test) subjects of one digit class as in-memory 1 mm images."""
    data = np.load(path)
    images = data["images"][data["labels"] == digit].astype(np.float32)
    if not 2 <= n_train <= len(images) - 2:
        raise SystemExit(f"--n-train must leave at least 2 test images of {len(images)}")
    grid = Grid(images.shape[1:])
    subjects = [Subject(Image(torch.from_numpy(im)[None], grid)) for im in images]
    return subjects[:n_train], subjects[n_train:]


def test_pairs(n: int, count: int, seed: int) -> list[tuple[int, int]]:
    """``count`` ordered pairs of distinct test indices, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n, size=count)
    second = (first + rng.integers(1, n, size=count)) % n
    return [(int(f), int(m)) for f, m in zip(first, second)]


def run(args: argparse.Namespace, config: dict[str, Any]) -> dict[str, Any]:
    """Train with ``config`` (a TrainConfig mapping without data), evaluate on the test pairs, draw the figure."""
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    train_subjects, test_subjects = digit_subjects(args.data, args.digit, args.n_train)
    cfg = TrainConfig.model_validate({**config, "output": str(args.output), "lr": args.lr, "seed": args.seed,
                                      "batch_size": args.batch_size, "max_steps": args.steps, "epochs": 10**6})
    t0 = time.perf_counter()
    summary = train(cfg, PairDataset(train_subjects, "random", cfg.model.normalize, seed=args.seed))
    seconds = time.perf_counter() - t0
    model, _ = model_from_checkpoint(summary.checkpoint)
    test = PairDataset(test_subjects, test_pairs(len(test_subjects), args.test_pairs, args.seed + 1),
                       cfg.model.normalize)
    metrics = evaluate_model(model, test)["summary"]
    result = {"digit": args.digit, "train_images": len(train_subjects), "test_images": len(test_subjects),
              "steps": summary.steps, "train_seconds": round(seconds, 1), **metrics}
    figure(model, test, args.output / "figure.png", title=f"{config['model']['head']} network, digit {args.digit}: "
           f"test MSE {metrics['mse_ratio']:.0%} of unregistered")
    (args.output / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def figure(model: torch.nn.Module, test: PairDataset, path: Path, title: str, n: int = 6) -> None:
    """Rows: fixed, moving, warped, |fixed - warped| and the deformed grid for ``n`` test pairs."""
    n = min(n, len(test))
    batch = collate([test[i] for i in range(n)])
    with torch.no_grad():
        transform = model(batch.fixed, batch.moving, batch.grid)
        disp = transform.displacement(batch.grid)
        warped = warp(batch.moving, batch.grid, transform, disp)
    fig = Figure(figsize=(1.6 * n, 8.4))
    axes = fig.subplots(5, n, squeeze=False)
    names = ["fixed", "moving", "warped", "|fixed - warped|", "deformation"]
    pts = batch.grid.points().numpy() + disp.movedim(1, -1).numpy()  # (B, 28, 28, 2): where each pixel samples
    for j in range(n):
        panels = [batch.fixed[j, 0], batch.moving[j, 0], warped[j, 0], (batch.fixed[j, 0] - warped[j, 0]).abs()]
        for i, img in enumerate(panels):
            axes[i, j].imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
        ax = axes[4, j]
        for k in range(0, 28, 3):  # grid lines of the fixed image, drawn at the positions they sample
            ax.plot(pts[j, k, :, 1], pts[j, k, :, 0], "b-", lw=0.5)
            ax.plot(pts[j, :, k, 1], pts[j, :, k, 0], "b-", lw=0.5)
        ax.set_xlim(-0.5, 27.5)
        ax.set_ylim(27.5, -0.5)
        ax.set_aspect("equal")
        for i in range(5):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if j == 0:
                axes[i, 0].set_ylabel(names[i], fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
