"""Recover a large rotation of an MNIST digit: why gradient descent needs a good start.

A digit is rotated by a known angle (128 degrees by default, off the search grids on purpose)
about the image centre, and four strategies try to recover it:

(a) grid search: score every rotation on a grid of angles (a plain loop: resample, then NCC);
(b) gradient descent from the identity at full resolution only;
(c) multi-resolution gradient descent from the identity (coarse to fine);
(d) :func:`torchalign.registration.initialise.rotation_search` (batched coarse grid plus local refinement),
    then gradient refinement at full resolution.

Far from the answer the similarity has local minima, so (b) stalls and (c) helps only within its
basin of attraction; a coarse exhaustive search (a, d) finds the basin and (d) then refines the
angle below the grid's step. The script prints a table (recovered angle, error, time) and writes
one figure: the fixed and moving digits, each method's result, the loss-versus-angle profile of
the grid search and the gradient-descent loss curves.

    python examples/mnist_rotation.py -o out/          # digit 0 (a "7"), 128 degrees
    python examples/mnist_rotation.py --angle -150 --index 3 -o out/
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: figures are written to files, never shown
import matplotlib.pyplot as plt
import numpy as np
import torch

from torchalign.config import Level, RegistrationConfig, Stage
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.registration.initialise import negative_ncc, rotation_search
from torchalign.registration import register
from torchalign.resample import resample
from torchalign.transforms.linear import MatrixTransform

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "digits" / "mnist_t10k.npz"
PAD = 6  # voxels of zeros around the 28x28 digit, so no rotated stroke leaves the grid


@dataclass
class Outcome:
    """One method's recovered transform, its runtime and the loss history for the figure."""

    name: str
    matrix: np.ndarray  # (3, 3) RAS moving_from_fixed
    seconds: float
    losses: list[float] = field(default_factory=list)


def rotation_about(angle_deg: float, center: np.ndarray) -> np.ndarray:
    """``(3, 3)`` homogeneous rotation by ``angle_deg`` (counter-clockwise in world x-y) about ``center``."""
    a = math.radians(angle_deg)
    m = np.eye(3)
    m[:2, :2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    m[:2, 2] = center - m[:2, :2] @ center
    return m


def angle_of(matrix: np.ndarray) -> float:
    """Rotation angle (degrees, in (-180, 180]) of a 2-D homogeneous matrix."""
    return math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))


def angle_error(recovered: float, truth: float) -> float:
    """Absolute angular difference in degrees, wrapped to [0, 180]."""
    return abs((recovered - truth + 180.0) % 360.0 - 180.0)


def load_digit(path: Path, index: int) -> tuple[Image, int]:
    """MNIST test image ``index`` as a float image in [0, 1] on a 1 mm grid centred at the origin."""
    with np.load(path) as data:
        pixels, label = data["images"][index], int(data["labels"][index])
    padded = np.pad(pixels.astype(np.float32) / 255.0, PAD)
    n = padded.shape[0]
    grid = Grid.from_geometry(padded.shape, spacing=(1.0, 1.0), origin=(-(n - 1) / 2, -(n - 1) / 2))
    return Image(torch.from_numpy(padded)[None, None], grid), label


def gradient_config(levels: list[Level]) -> RegistrationConfig:
    """Rigid, NCC, Adam from the identity, over ``levels``."""
    stage = Stage(transform="rigid", metric="ncc", lr=0.3, levels=levels, tolerance=1e-6, window=20)
    return RegistrationConfig(init="none", normalize=False, stages=[stage])


def stage_losses(result_stages: list) -> list[float]:
    """All levels' losses of a result, in order."""
    return [v for s in result_stages for lv in s.levels for v in lv.losses]


def grid_search(fixed: Image, moving: Image, center: np.ndarray, step_deg: float) -> tuple[Outcome, np.ndarray]:
    """(a) Score every angle on a grid with a plain loop; return the best and the (angle, loss) profile."""
    start = time.perf_counter()
    angles = np.arange(-180.0, 180.0, step_deg)
    losses = []
    for angle in angles:
        warped = resample(moving, fixed.grid, MatrixTransform(rotation_about(angle, center)))
        losses.append(float(negative_ncc(fixed.data, warped.data)))
    best = float(angles[int(np.argmin(losses))])
    seconds = time.perf_counter() - start
    return Outcome(f"(a) grid search, {step_deg:g} deg steps", rotation_about(best, center), seconds), \
        np.stack([angles, losses], 1)


def run(data: Path, index: int, angle: float, step: float, iterations: int) -> tuple[list[Outcome], dict]:
    """Build the pair and run the four methods; return their outcomes and the images for the figure."""
    fixed, label = load_digit(data, index)
    center = fixed.grid.center()
    truth = rotation_about(angle, center)  # moving_from_fixed: warped(x) = moving(truth x) = fixed(x)
    moving = resample(fixed, fixed.grid, MatrixTransform(np.linalg.inv(truth)))
    outcomes = []

    outcome, profile = grid_search(fixed, moving, center, step)
    outcomes.append(outcome)

    t0 = time.perf_counter()
    result = register(fixed, moving, gradient_config([Level(shrink=1, sigma=0, iterations=iterations)]))
    outcomes.append(Outcome("(b) gradient descent, 1 level", result.linear[0].numpy(), time.perf_counter() - t0,
                            stage_losses(result.stages)))

    t0 = time.perf_counter()
    pyramid = [Level(shrink=4, sigma=2, iterations=iterations), Level(shrink=2, sigma=1, iterations=iterations),
               Level(shrink=1, sigma=0, iterations=iterations)]
    result = register(fixed, moving, gradient_config(pyramid))
    outcomes.append(Outcome("(c) gradient descent, 3 levels", result.linear[0].numpy(), time.perf_counter() - t0,
                            stage_losses(result.stages)))

    t0 = time.perf_counter()
    start = rotation_search(fixed, moving, negative_ncc, np.eye(3), center=center, refine_steps=4, size=fixed.grid.shape[0])
    result = register(fixed, moving, gradient_config([Level(shrink=1, sigma=0, iterations=iterations)]), init=start)
    outcomes.append(Outcome("(d) rotation_search + gradient", result.linear[0].numpy(), time.perf_counter() - t0,
                            stage_losses(result.stages)))
    return outcomes, {"fixed": fixed, "moving": moving, "truth": truth, "label": label, "profile": profile}


def table(outcomes: list[Outcome], truth_deg: float) -> str:
    """A plain-text table of recovered angle, error and time per method."""
    lines = [f"{'method':36s} {'angle (deg)':>11s} {'error (deg)':>11s} {'time (s)':>9s}"]
    for o in outcomes:
        a = angle_of(o.matrix)
        lines.append(f"{o.name:36s} {a:11.2f} {angle_error(a, truth_deg):11.2f} {o.seconds:9.2f}")
    return "\n".join(lines)


def figure(outcomes: list[Outcome], images: dict, truth_deg: float, path: Path) -> Path:
    """One PNG: fixed, moving and each method's warped digit; the angle profile; the loss curves."""
    fixed, moving = images["fixed"], images["moving"]
    fig = plt.figure(figsize=(13, 6.2))
    panels = [("fixed", fixed.data), (f"moving (rotated {truth_deg:g} deg)", moving.data)]
    for o in outcomes:
        warped = resample(moving, fixed.grid, MatrixTransform(o.matrix)).data
        err = angle_error(angle_of(o.matrix), truth_deg)
        panels.append((f"{o.name.split(',')[0].split(' +')[0]}\nerror {err:.1f} deg", warped))
    for k, (title, data) in enumerate(panels):
        ax = fig.add_subplot(2, len(panels), k + 1)
        # array axes are (x, y) in RAS; show x to the right and y upwards (world orientation).
        ax.imshow(data[0, 0].numpy().T, cmap="gray", origin="lower", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    profile = images["profile"]
    ax = fig.add_subplot(2, 2, 3)
    ax.plot(profile[:, 0], profile[:, 1], ".-")
    ax.axvline(truth_deg, color="k", ls="--", lw=1, label="true angle")
    ax.set_xlabel("rotation angle (deg)")
    ax.set_ylabel("negative NCC")
    ax.set_title("(a) grid search: loss against angle (local minima trap descent)", fontsize=9)
    ax.legend(fontsize=8)
    ax = fig.add_subplot(2, 2, 4)
    for o in outcomes[1:]:
        ax.plot(o.losses, label=o.name)
    ax.set_xlabel("iteration (all levels in sequence)")
    ax.set_ylabel("negative NCC")
    ax.set_title("gradient-descent loss curves", fontsize=9)
    ax.legend(fontsize=8)
    fig.suptitle(f"MNIST digit '{images['label']}': recovering a {truth_deg:g} deg rotation")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--outdir", type=Path, required=True, help="folder for mnist_rotation.png")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="mnist_t10k.npz (images, labels)")
    parser.add_argument("--index", type=int, default=0, help="which test digit")
    parser.add_argument("--angle", type=float, default=128.0, help="true rotation in degrees")
    parser.add_argument("--step", type=float, default=5.0, help="grid-search step in degrees")
    parser.add_argument("--iterations", type=int, default=200, help="gradient iterations per level")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's, one per core; 1 is faster on a busy machine)")
    args = parser.parse_args(argv)
    if not args.data.exists():
        parser.error(f"{args.data}: no such file (pass --data path/to/mnist_t10k.npz)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # The first torch.optim optimiser imports torch._dynamo (seconds, once per process): pay it here,
    # outside the timed methods.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    outcomes, images = run(args.data, args.index, args.angle, args.step, args.iterations)
    print(table(outcomes, args.angle))
    print(f"wrote {figure(outcomes, images, args.angle, args.outdir / 'mnist_rotation.png')}")


if __name__ == "__main__":
    main()
