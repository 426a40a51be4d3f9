"""SVFFD (a B-spline stationary velocity field) forward and inverse on a real 2-D brain pair.

The two subjects' slices of ``brain2d/brain2d_slice_z100_pairs.npz`` (160x192, 1 mm, already
affinely aligned) are registered by torchalign's driver with one ``svffd`` stage
(:class:`~torchalign.transforms.velocity.BSplineVelocity`: control points 5 mm apart, local NCC,
diffusion regulariser, two levels). ``T = exp(v)`` maps fixed points to moving points and the
result's inverse ``T^-1 = exp(-v)`` maps moving points back (the negated velocity, exact in the
model; both are integrated by scaling and squaring). The figure shows the fixed, moving and
warped slices; the fixed grid carried into the moving image by ``T``; the moving grid carried
into the fixed image by ``T^-1``; ``det J`` of ``T``; and the round-trip error
``|T^-1(T(x)) - x|`` in mm over the fixed grid (the integration and interpolation error).
The script prints Dice over the labels present in both slices, folding and the round-trip error
inside the brain. Measured (150 + 75 iterations): Dice 0.467 -> 0.687, no folded pixel, round-trip
error median 0.046 mm (max 1.2 mm).

    python examples/svffd_inverse.py -o out/            # writes out/svffd_inverse.png
    python examples/svffd_inverse.py -o out/ --quick    # fewer iterations (a smoke test)
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
from torchalign.metrics.overlap import dice
from torchalign.registration import register
from torchalign.resample import resample

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain2d" / "brain2d_slice_z100_pairs.npz"


def svffd_config(iterations: int) -> RegistrationConfig:
    """One SVFFD stage: control points 5 mm apart, LNCC (radius 2), light diffusion, levels 2 and 1."""
    return RegistrationConfig(init="none", stages=[Stage(
        transform="svffd", metric="lncc", metric_options={"radius": 2}, lr=0.5, tolerance=0.0,
        transform_options={"control_spacing": 5.0, "steps": 7},
        regularisers=[Regulariser(name="diffusion", weight=0.1)],
        levels=[Level(shrink=2, sigma=1, iterations=iterations), Level(shrink=1, sigma=0, iterations=iterations // 2)])])


def mean_dice(a: np.ndarray, b: np.ndarray) -> float:
    labels = sorted(set(np.unique(a)) & set(np.unique(b)) - {0})
    return float(np.mean([dice(a == k, b == k) for k in labels]))


def draw_grid(ax, points: np.ndarray, step: int, color: str) -> None:
    """Rows and columns of ``points (H, W, 2)`` (world mm = voxel index here) every ``step`` voxels."""
    for i in range(0, points.shape[0], step):
        ax.plot(points[i, :, 1], points[i, :, 0], lw=0.6, color=color)
    for j in range(0, points.shape[1], step):
        ax.plot(points[:, j, 1], points[:, j, 0], lw=0.6, color=color)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="brain2d_slice_z100_pairs.npz")
    parser.add_argument("--iterations", type=int, default=150, help="coarse level (the fine level gets half)")
    parser.add_argument("--quick", action="store_true", help="20 coarse + 10 fine iterations")
    args = parser.parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"brain2d pair not found at {args.data} (pass --data)")
    torch.set_num_threads(1)
    pair = np.load(args.data)
    grid = Grid(pair["vxm_test_vol"].shape)  # 1 mm, identity: world mm = voxel index
    fixed = Image(torch.from_numpy(pair["vxm_test_vol"])[None, None], grid)
    moving = Image(torch.from_numpy(pair["l2r_subj1_vol"])[None, None], grid)
    fixed_seg, moving_seg = pair["vxm_test_seg"], pair["l2r_subj1_seg"]

    start = time.perf_counter()
    result = register(fixed, moving, svffd_config(20 if args.quick else args.iterations), init=np.eye(3))
    seconds = time.perf_counter() - start
    x = grid.points().unsqueeze(0)
    with torch.no_grad():
        mapped = result.transform(x)  # fixed -> moving
        back = result.inverse(mapped)  # and back to fixed
        moving_points_mapped = result.inverse(x)  # the moving grid carried into the fixed image
        round_trip = (back - x).norm(dim=-1)[0].numpy()
        det = jacobian_det(result.transform.displacement(grid), grid)[0].numpy()
        warped = resample(moving, grid, result.transform).data[0, 0].numpy()
        seg = torch.from_numpy(moving_seg.astype(np.int64))[None, None]
        warped_seg = resample(Image(seg, grid), grid, result.transform, interp="nearest").data[0, 0].numpy()
    brain = fixed_seg > 0
    print(f"Dice {mean_dice(fixed_seg, moving_seg):.3f} -> {mean_dice(fixed_seg, warped_seg):.3f}; "
          f"det J <= 0: {100 * np.mean(det <= 0):.3f} %; |T^-1(T(x)) - x| in the brain: median "
          f"{np.median(round_trip[brain]):.4f} mm, max {round_trip[brain].max():.4f} mm; {seconds:.1f} s")

    fig = Figure(figsize=(13, 6.6), layout="constrained")
    axes = fig.subplots(2, 4)
    panels = [(fixed.data[0, 0].numpy(), "fixed"), (moving.data[0, 0].numpy(), "moving"), (warped, "warped: moving(T(x))")]
    for ax, (img, title) in zip(axes[0], panels):
        ax.imshow(img, cmap="gray")
        ax.set_title(title)
    im = axes[0, 3].imshow(det, cmap="RdBu", vmin=0, vmax=2)
    axes[0, 3].set_title(f"det J of T ({100 * np.mean(det <= 0):.2f} % <= 0)")
    fig.colorbar(im, ax=axes[0, 3], shrink=0.8)
    axes[1, 0].imshow(moving.data[0, 0].numpy(), cmap="gray")
    draw_grid(axes[1, 0], mapped[0].numpy(), 8, "y")
    axes[1, 0].set_title("T: fixed grid in moving")
    axes[1, 1].imshow(fixed.data[0, 0].numpy(), cmap="gray")
    draw_grid(axes[1, 1], moving_points_mapped[0].numpy(), 8, "c")
    axes[1, 1].set_title("T^-1: moving grid in fixed")
    im = axes[1, 2].imshow(round_trip, cmap="magma")
    axes[1, 2].set_title("|T^-1(T(x)) - x| (mm)")
    fig.colorbar(im, ax=axes[1, 2], shrink=0.8)
    axes[1, 3].hist(round_trip[brain], bins=50, color="k")
    axes[1, 3].set_yscale("log")
    axes[1, 3].set_xlabel("round-trip error in the brain (mm)")
    axes[1, 3].set_title(f"median {np.median(round_trip[brain]):.3f} mm")
    for ax in axes.ravel()[:7]:
        ax.set_xlim(-0.5, grid.shape[1] - 0.5)
        ax.set_ylim(grid.shape[0] - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / "svffd_inverse.png"
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
