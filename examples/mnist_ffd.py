"""Cubic B-spline FFD on MNIST digits, with and without bending energy: warped images and grids.

Two different handwritten digits of one class (``digits/mnist_t10k.npz``, 28x28, upsampled to
56x56 on a 0.5 mm grid so the grid lines are visible) are registered by torchalign's driver
(:func:`torchalign.registration.register`) with one FFD stage: control points 2 mm apart, mean squared
error, two pyramid levels. It runs twice: without a regulariser, and with bending energy. The
figure shows the fixed and moving digits, the warped moving digit of each run, and the fixed
image's grid lines carried by ``T`` into the moving image (``T`` maps fixed points to moving
points, so the lines show where each fixed location samples the moving digit), coloured by
whether ``det J <= 0`` somewhere along them, and ``det J``. Measured (150 iterations per level):

    no regulariser   MSE 0.0013  det J <= 0: 29.6 %   (before registration MSE 0.0679)
    bending 0.1      MSE 0.0018  det J <= 0:  0.0 %

Without bending energy the FFD matches the intensities slightly better by folding the grid over
itself; with it the grid stays smooth and nothing folds.

    python examples/mnist_ffd.py -o out/             # writes out/mnist_ffd.png
    python examples/mnist_ffd.py -o out/ --quick     # fewer iterations (a smoke test)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch
from matplotlib.figure import Figure

from torchalign.config import Level, RegistrationConfig, Regulariser, Stage
from torchalign.functional.jacobian import jacobian_det
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.registration import register
from torchalign.resample import resample

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "digits" / "mnist_t10k.npz"


def digit_pair(path: Path, digit: int, first: int, second: int) -> tuple[Image, Image]:
    """Two images of ``digit`` (the ``first``-th and ``second``-th of the class) on a 0.5 mm grid."""
    data = np.load(path)
    images = data["images"][data["labels"] == digit].astype(np.float32) / 255.0
    big = torch.nn.functional.interpolate(torch.from_numpy(images[[first, second]])[:, None], scale_factor=2,
                                          mode="bilinear", align_corners=False)
    grid = Grid.from_geometry(big.shape[2:], spacing=(0.5, 0.5))
    return Image(big[0:1], grid), Image(big[1:2], grid)


def ffd_config(bending: float, iterations: int) -> RegistrationConfig:
    """One FFD stage (2 mm control spacing, MSE) over two levels; ``bending`` weight 0 = none."""
    regs = [Regulariser(name="bending", weight=bending)] if bending > 0 else []
    return RegistrationConfig(init="none", stages=[Stage(
        transform="ffd", metric="mse", lr=0.5, tolerance=0.0, regularisers=regs,
        transform_options={"control_spacing": 2.0},
        levels=[Level(shrink=2, sigma=1, iterations=iterations), Level(shrink=1, sigma=0, iterations=iterations)])])


def grid_lines(ax, points: np.ndarray, det: np.ndarray, step: int) -> None:
    """Draw rows and columns of ``points (H, W, 2)`` (world mm = 0.5 * voxel index) every ``step`` voxels."""
    folded = det <= 0
    for i in range(0, points.shape[0], step):
        ax.plot(points[i, :, 1] / 0.5, points[i, :, 0] / 0.5, lw=0.7, color="r" if folded[i].any() else "y")
    for j in range(0, points.shape[1], step):
        ax.plot(points[:, j, 1] / 0.5, points[:, j, 0] / 0.5, lw=0.7, color="r" if folded[:, j].any() else "y")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="mnist_t10k.npz")
    parser.add_argument("--digit", type=int, default=2)
    parser.add_argument("--pair", type=int, nargs=2, default=(2, 3), help="indices within the class")
    parser.add_argument("--bending", type=float, default=0.1, help="bending-energy weight of the second run")
    parser.add_argument("--iterations", type=int, default=150, help="per level")
    parser.add_argument("--quick", action="store_true", help="20 iterations per level")
    args = parser.parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"MNIST not found at {args.data} (pass --data)")
    torch.set_num_threads(1)
    iterations = 20 if args.quick else args.iterations
    fixed, moving = digit_pair(args.data, args.digit, *args.pair)
    x = fixed.grid.points().unsqueeze(0)

    runs = {}
    for name, weight in (("no regulariser", 0.0), (f"bending {args.bending:g}", args.bending)):
        start = time.perf_counter()
        result = register(fixed, moving, ffd_config(weight, iterations), init=np.eye(3))
        seconds = time.perf_counter() - start
        with torch.no_grad():
            warped = resample(moving, fixed.grid, result.transform).data[0, 0].numpy()
            det = jacobian_det(result.transform.displacement(fixed.grid), fixed.grid)[0].numpy()
            mapped = result.transform(x)[0].numpy()
        mse = float(np.mean((warped - fixed.data[0, 0].numpy()) ** 2))
        runs[name] = (warped, mapped, det)
        print(f"{name:16s} MSE {mse:.4f}  det J <= 0: {100 * np.mean(det <= 0):5.2f} %  "
              f"min det J {det.min():+.2f}  {seconds:.1f} s")
    print(f"{'before':16s} MSE {float(np.mean((moving.data - fixed.data).numpy() ** 2)):.4f}")

    fig = Figure(figsize=(12, 6.4), layout="constrained")
    axes = fig.subplots(2, 4)
    f, m = fixed.data[0, 0].numpy(), moving.data[0, 0].numpy()
    axes[0, 0].imshow(f, cmap="gray")
    axes[0, 0].set_title("fixed")
    axes[1, 0].imshow(m, cmap="gray")
    axes[1, 0].set_title("moving")
    for row, (name, (warped, mapped, det)) in enumerate(runs.items()):
        axes[row, 1].imshow(warped, cmap="gray")
        axes[row, 1].set_title(f"warped, {name}")
        axes[row, 2].imshow(m, cmap="gray")
        grid_lines(axes[row, 2], mapped, det, step=3)
        axes[row, 2].set_title("fixed grid in moving (red: folds)")
        im = axes[row, 3].imshow(det, cmap="RdBu", vmin=-1, vmax=3)
        axes[row, 3].set_title(f"det J ({100 * np.mean(det <= 0):.1f} % <= 0)")
        fig.colorbar(im, ax=axes[row, 3], shrink=0.8)
    for ax in axes.ravel():
        ax.set_xlim(-0.5, f.shape[1] - 0.5)
        ax.set_ylim(f.shape[0] - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / "mnist_ffd.png"
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
