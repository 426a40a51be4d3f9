"""The deformable building blocks on a real 2-D brain pair: FFD, SVF and the symmetric (SyN-like) model.

Two subjects' slices (``brain2d/brain2d_slice_z100_pairs.npz``, 160x192, 1 mm, already affinely
aligned) are registered with each transform model by a plain Adam loop at full resolution: mean
squared error of normalised intensities plus one world-mm regulariser. Nothing here is the
registration driver (``torchalign.registration``); it shows how the pieces fit: ``T(x)`` ->
``sample_world`` -> loss -> ``displacement`` -> Jacobian and inverse.

The script prints one table: mean Dice over the labels present in both slices (before: 0.467),
folded voxels (``det J <= 0``), the median inverse-consistency residual ``|T^-1(T(x)) - x|`` and
the runtime. Measured (200 Adam steps, one CPU thread):

    model                    Dice  folded %  |T^-1 T x - x| median mm  time s
    before                  0.467
    ffd 6 mm + bending      0.665     0.137                    0.0064     6.8
    svf + diffusion         0.697     0.029                    0.0485     7.9
    syn + diffusion         0.705     0.072                    0.0723    14.7

    python examples/brain2d_deformable.py
    python examples/brain2d_deformable.py --iterations 300 --data ../shared/data
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from torchalign.functional.jacobian import jacobian_det
from torchalign.functional.sampling import sample_world
from torchalign.grid import Grid
from torchalign.image import normalize_intensity
from torchalign.losses.regularisers import BendingEnergy, Diffusion
from torchalign.metrics.overlap import dice
from torchalign.transforms.base import SpatialTransform
from torchalign.transforms.bspline import BSplineFFD
from torchalign.transforms.velocity import StationaryVelocity, SymmetricVelocity

REPO = Path(__file__).resolve().parents[1]
PAIR = "brain2d/brain2d_slice_z100_pairs.npz"

# name -> (transform on the grid, regulariser, Adam learning rate)
MODELS: dict[str, tuple[Callable[[Grid], SpatialTransform], torch.nn.Module, float]] = {
    "ffd 6 mm + bending": (lambda g: BSplineFFD(g, 6.0), BendingEnergy(weight=100.0), 0.1),
    "svf + diffusion": (lambda g: StationaryVelocity(g), Diffusion(weight=5.0), 0.05),
    "syn + diffusion": (lambda g: SymmetricVelocity(g), Diffusion(weight=5.0), 0.05),
}


def register(fixed: Tensor, moving: Tensor, grid: Grid, make: Callable[[Grid], SpatialTransform],
             regulariser: torch.nn.Module, lr: float, iterations: int) -> SpatialTransform:
    """Adam on ``100 * MSE + regulariser(displacement)``; returns the fitted transform."""
    transform = make(grid)
    x = grid.points().unsqueeze(0)
    optimiser = torch.optim.Adam(transform.parameters(), lr=lr)
    for _ in range(iterations):
        optimiser.zero_grad()
        disp = transform.displacement(grid)  # (1, 2, *S): T(x) = x + u(x) at the voxel centres
        warped = sample_world(moving, grid, x + disp.movedim(1, -1))
        loss = 100 * (warped - fixed).square().mean() + regulariser(disp, grid)
        loss.backward()
        optimiser.step()
    return transform


def mean_dice(a: np.ndarray, b: np.ndarray) -> float:
    labels = sorted(set(np.unique(a)) & set(np.unique(b)) - {0})
    return float(np.mean([dice(a == k, b == k) for k in labels]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--iterations", type=int, default=200, help="Adam steps")
    args = parser.parse_args()
    pair = np.load(args.data / PAIR)
    grid = Grid(pair["vxm_test_vol"].shape)
    fixed = normalize_intensity(torch.from_numpy(pair["vxm_test_vol"])[None, None])
    moving = normalize_intensity(torch.from_numpy(pair["l2r_subj1_vol"])[None, None])
    fixed_seg, moving_seg = pair["vxm_test_seg"], pair["l2r_subj1_seg"]
    x = grid.points().unsqueeze(0)

    print(f"{'model':22s} {'Dice':>6s} {'folded %':>9s} {'|T^-1 T x - x| median mm':>25s} {'time s':>7s}")
    print(f"{'before':22s} {mean_dice(fixed_seg, moving_seg):6.3f}")
    for name, (make, regulariser, lr) in MODELS.items():
        start = time.perf_counter()
        transform = register(fixed, moving, grid, make, regulariser, lr, args.iterations)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            seg = torch.from_numpy(moving_seg.astype(np.int64))[None, None]
            warped_seg = sample_world(seg, grid, transform(x), interp="nearest")[0, 0].numpy()
            disp = transform.displacement(grid)
            folded = 100 * float((jacobian_det(disp, grid) <= 0).float().mean())
            inverse = transform.inverse()
            residual = float((inverse(transform(x)) - x).norm(dim=-1).median())
        print(f"{name:22s} {mean_dice(fixed_seg, warped_seg):6.3f} {folded:9.3f} {residual:25.4f} {seconds:7.1f}")


if __name__ == "__main__":
    main()
