"""Every preset in 2-D and 3-D, and batched (gpu-batch) linear and deformable registration, on one
device: a table of time, Dice and peak device memory. Run by ``scripts/gpu_check.sh`` on a CUDA
machine; ``--device cpu --only 2d`` checks the script itself anywhere.

Data: ``../shared/data/brain2d`` (2-D slices with labels) and ``../shared/data/brain3d`` (1 mm
brain pair with FreeSurfer labels; Dice over the 30 evaluation labels).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from torchalign.batch.driver import register_batch
from torchalign.config import resolve_config
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.io import read_image
from torchalign.metrics import mean_dice
from torchalign.registration import prepare_pair, register
from torchalign.resample import resample

DATA = Path(os.environ.get("TORCHALIGN_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
PRESETS = ["rigid", "similarity", "affine", "syn", "svf", "ffd", "dense"]


def _slices() -> tuple[dict[str, Image], dict[str, Image], list[int]]:
    """The 2-D brain slices and label maps (1 mm), and the labels present in both subjects."""
    d = np.load(DATA / "brain2d" / "brain2d_slice_z100_pairs.npz")
    grid = Grid(d["atlas2d_vol"].shape)
    images = {k: Image(torch.as_tensor(d[f"{k}_vol"])[None, None], grid) for k in ("vxm_test", "l2r_subj1", "atlas2d")}
    labels = {k: Image(torch.as_tensor(d[f"{k}_seg"].astype(np.int32))[None, None], grid)
              for k in ("vxm_test", "l2r_subj1", "atlas2d")}
    common = sorted(set(np.unique(d["vxm_test_seg"])) & set(np.unique(d["l2r_subj1_seg"])) - {0})
    return images, labels, [int(k) for k in common]


def _timed(device: torch.device, work) -> tuple[object, float, float]:
    """``work()``, its wall time (device synchronised) and peak device memory in MB (0 on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    out = work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    return out, time.perf_counter() - start, peak


def _dice(result, moving_labels: Image, fixed_labels: Image, labels: list[int]) -> float:
    warped = resample(moving_labels.to(result.linear.device), fixed_labels.grid, result.transform, interp="label")
    return mean_dice(fixed_labels.data[0, 0], warped.data[0, 0], labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--only", choices=["2d", "3d", "batch"], action="append", help="run these parts only")
    args = parser.parse_args()
    device = torch.device(args.device)
    parts = set(args.only or ["2d", "3d", "batch"])
    rows: list[tuple[str, str, float, float, float]] = []
    if "2d" in parts or "batch" in parts:
        images, labels, common = _slices()
    if "2d" in parts:
        for preset in PRESETS:
            result, seconds, peak = _timed(device, lambda: register(
                images["vxm_test"], images["l2r_subj1"], resolve_config(preset), device=device))
            rows.append(("2-D 160x192", preset, seconds, _dice(result, labels["l2r_subj1"], labels["vxm_test"], common),
                         peak))
    if "3d" in parts:
        folder = DATA / "brain3d"
        fixed, moving = read_image(folder / "subject_a_t1.nii.gz"), read_image(folder / "subject_b_t1.nii.gz")
        fixed_labels = read_image(folder / "subject_a_aseg.nii.gz")
        moving_labels = read_image(folder / "subject_b_aseg.nii.gz")
        eval_labels = [int(x) for x in (folder / "eval_labels.txt").read_text().split()]
        for preset in PRESETS:
            result, seconds, peak = _timed(device, lambda: register(fixed, moving, resolve_config(preset), device=device))
            rows.append(("3-D 160x192x224", preset, seconds, _dice(result, moving_labels, fixed_labels, eval_labels),
                         peak))
    if "batch" in parts:
        movings = ["l2r_subj1", "atlas2d"] * 4  # 8 pairs onto one fixed slice
        for preset in ("affine", "syn"):
            config = resolve_config(preset)
            pairs = [prepare_pair(images["vxm_test"], images[m], config, device=device) for m in movings]
            results, seconds, peak = _timed(device, lambda: register_batch(pairs, config))
            alone = register(images["vxm_test"], images[movings[0]], config, device=device)
            gap = float((results[0].transform.displacement(images["vxm_test"].grid)
                         - alone.transform.displacement(images["vxm_test"].grid)).abs().max())
            dice = float(np.mean([_dice(r, labels[m], labels["vxm_test"], common) for r, m in zip(results, movings)]))
            rows.append((f"gpu-batch x{len(pairs)} 2-D (max |batch - alone| {gap:.2g} mm)", preset, seconds, dice, peak))
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else device}, torch {torch.__version__}")
    print("| case | preset | time s | Dice | peak device memory MB |")
    print("|---|---|---|---|---|")
    for case, preset, seconds, dice, peak in rows:
        print(f"| {case} | {preset} | {seconds:.2f} | {dice:.3f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
