"""Pairs per second of ``torchalign batch``: sequential, process pool, Dask LocalCluster and batched runs.

    python benchmarks/batch.py [--pairs 40] [--workers 2] [--preset rigid] [--batch-size 40]

Writes ``--pairs`` distinct 2-D pairs (the brain2d slices at 160x192, 1 mm, each moving header under a
random rigid change) into a temporary folder, then runs each mode in a fresh subprocess (so each pays
its own imports and warm-up, as a command-line run does) and prints one Markdown table: wall time of
``run_batch`` (worker start-up included for pool and dask), pairs per second, the ratio to the
sequential run and the largest difference of the result matrices from it. Batched runs go on the
GPU too when torch sees one.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("TORCHALIGN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SLICES = ("vxm_test_vol", "l2r_subj1_vol", "atlas2d_vol")


def write_pairs(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` pairs (fixed: one of three slices; moving: another, under a random rigid header) and pairs.csv."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    slices = np.load(DATA / "brain2d" / "brain2d_slice_z100_pairs.npz")
    base = np.diag([1.0, 1.0, 1.0, 1.0])
    base[:2, 3] = [-79.5, -95.5]
    for name in SLICES:
        nib.save(nib.Nifti1Image(slices[name].astype(np.float32), base), folder / f"{name}.nii.gz")
    lines = ["id,fixed,moving"]
    for i in range(count):
        angle, shift = np.radians(rng.uniform(-8, 8)), rng.uniform(-6, 6, size=2)
        rigid = np.eye(4)
        rigid[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        rigid[:2, 3] = shift
        moving = SLICES[(i + 1 + (i // 3) % 2) % 3]
        nib.save(nib.Nifti1Image(slices[moving].astype(np.float32), rigid @ base), folder / f"moving{i:03d}.nii.gz")
        lines.append(f"p{i:03d},{SLICES[i % 3]}.nii.gz,moving{i:03d}.nii.gz")
    (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
    return folder / "pairs.csv"


def run_one(args: argparse.Namespace) -> None:
    """Child process: one mode; prints a JSON line with the seconds and the result matrices."""
    import torch

    from torchalign.batch import Execution, JobSettings, read_pairs, run_batch
    from torchalign.config import resolve_config

    mode, device, threads = args.one.split(":")
    pairs = read_pairs(args.csv)
    settings = JobSettings(resolve_config(args.preset), device=device, torch_threads=int(threads) or None)
    how = Execution(mode, workers=args.workers, batch_size=args.batch_size)
    out = Path(args.out)
    start = time.perf_counter()
    results = run_batch(pairs, out, settings, how)
    seconds = time.perf_counter() - start
    failed = [r.error for r in results if r.status != "done"]
    matrices = [json.loads((out / p.id / "result.json").read_text())["matrix"] for p in pairs] if not failed else []
    print(json.dumps({"seconds": seconds, "failed": failed, "matrices": matrices,
                      "threads": torch.get_num_threads()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--preset", default="rigid")
    parser.add_argument("--batch-size", type=int, default=40)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args)
        return
    import torch

    cores = len(os.sched_getaffinity(0))
    per_worker = max(1, cores // args.workers)
    cases = [(f"sequential ({cores} torch threads)", f"sequential:cpu:{cores}"),
             ("sequential (1 torch thread)", "sequential:cpu:1"),
             (f"pool, {args.workers} workers x {per_worker} thread(s)", "pool:cpu:0"),
             (f"dask LocalCluster, {args.workers} workers x {per_worker} thread(s)", "dask:cpu:0"),
             (f"gpu-batch on cpu, batches of {args.batch_size} ({cores} torch threads)", f"gpu-batch:cpu:{cores}"),
             (f"gpu-batch on cpu, batches of {args.batch_size} (1 torch thread)", "gpu-batch:cpu:1")]
    if torch.cuda.is_available():
        cases.append((f"gpu-batch on {torch.cuda.get_device_name(0)}, batches of {args.batch_size}",
                      "gpu-batch:cuda:0"))
        cases.append(("sequential on cuda", "sequential:cuda:0"))
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = write_pairs(Path(tmp), args.pairs)
        for k, (label, spec) in enumerate(cases):
            cmd = [sys.executable, __file__, "--one", spec, "--csv", str(csv_path), "--out", f"{tmp}/out{k}",
                   "--preset", args.preset, "--workers", str(args.workers), "--batch-size", str(args.batch_size)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=3600)
            doc = json.loads(done.stdout.strip().splitlines()[-1])
            if doc["failed"]:
                raise SystemExit(f"{label}: {len(doc['failed'])} pairs failed: {doc['failed'][0]}")
            matrices = np.array(doc["matrices"])
            reference = matrices if reference is None else reference
            rows.append((label, doc["seconds"], float(np.abs(matrices - reference).max())))
    load = os.getloadavg()[0]
    print(f"{args.pairs} pairs of 2-D brain slices (160x192), preset {args.preset}; {cores} cores, load average "
          f"{load:.1f}; torch {torch.__version__}\n")
    print("| mode | seconds | pairs/s | vs sequential | max matrix diff |\n|---|---:|---:|---:|---:|")
    for label, seconds, diff in rows:
        print(f"| {label} | {seconds:.1f} | {args.pairs / seconds:.2f} | {rows[0][1] / seconds:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
