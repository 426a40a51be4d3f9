"""Time and peak memory of LNCC and MI at 160x192x224: torchalign vs MONAI's equivalents.

    python benchmarks/losses.py [--device cpu|cuda] [--repeats 3] [--threads 2]

Prints one Markdown table per device. Each case runs in a fresh subprocess so that its peak
resident memory (CPU, ``ru_maxrss`` over the baseline after loading the images) or peak CUDA
allocation (``torch.cuda.max_memory_allocated`` over the baseline) belongs to it alone. Times are
the best of ``--repeats`` runs after one warm-up; on CPU the process CPU time of forward+backward
is printed too, which a machine shared with other jobs disturbs less than wall time. The pair is the brain3d benchmark pair
(subject b warped to subject a) when ../shared/data is present, seeded noise of that size
otherwise. Both LNCC forms are the squared local correlation; MONAI's border windows are
zero-padded and ours are clipped to the image, so the values differ slightly near the border.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

SHAPE = (160, 192, 224)
DATA = Path(os.environ.get("TORCHALIGN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CASES = {
    "lncc r=2": ("torchalign", "lncc", 2),
    "MONAI LNCC k=5": ("monai", "lncc", 5),
    "lncc r=4": ("torchalign", "lncc", 4),
    "MONAI LNCC k=9": ("monai", "lncc", 9),
    "mi 32 bins (bspline)": ("torchalign", "mi", "bspline"),
    "mi 32 bins (gaussian)": ("torchalign", "mi", "gaussian"),
    "mi 32 bins, 2^18 samples": ("torchalign", "mi_sampled", "bspline"),
    "MONAI GlobalMI 32 bins (gaussian)": ("monai", "mi", "gaussian"),
}


def load_pair(device: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The brain3d pair ``(1, 1, 160, 192, 224)`` (or seeded noise when the data is absent)."""
    a, b = DATA / "brain3d" / "subject_a_t1.nii.gz", DATA / "brain3d" / "subject_b_t1.nii.gz"
    if a.exists() and b.exists():
        import nibabel as nib

        arrays = [np.asarray(nib.load(p).dataobj, dtype=np.float32) for p in (a, b)]
        source = "brain3d subject_a/subject_b"
    else:
        rng = np.random.default_rng(0)
        arrays = [rng.random(SHAPE, dtype=np.float32) for _ in range(2)]
        source = "seeded noise (brain3d data not found)"
    fixed, moving = (torch.from_numpy(x)[None, None].to(device) for x in arrays)
    return fixed, moving, source


def make_loss(library: str, kind: str, param: object):
    """A callable ``(fixed, warped) -> scalar`` for one case."""
    if library == "torchalign":
        from torchalign.functional import similarity as S

        if kind == "lncc":
            return lambda f, w: S.lncc(f, w, radius=param).mean()
        samples = 1 << 18 if kind == "mi_sampled" else None
        return lambda f, w: S.mi(f, w, bins=32, kernel=param, samples=samples).mean()
    from monai.losses import GlobalMutualInformationLoss, LocalNormalizedCrossCorrelationLoss

    if kind == "lncc":
        loss = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=param)
        return lambda f, w: loss(w, f)
    loss = GlobalMutualInformationLoss(kernel_type=param, num_bins=32)
    return lambda f, w: loss(w, f)


def peak_memory_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_case(name: str, device: str, repeats: int) -> dict:
    """Time forward and forward+backward of one case; peak memory over the post-load baseline."""
    fixed, moving, source = load_pair(device)
    loss = make_loss(*CASES[name])
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = peak_memory_mib(device)
    times: dict[str, list[float]] = {"forward": [], "forward+backward": [], "cpu": []}
    for i in range(repeats + 1):
        for mode in ("forward", "forward+backward"):
            warped = moving.clone().requires_grad_()
            sync()
            start, cpu = time.perf_counter(), time.process_time()
            value = loss(fixed, warped)
            if mode == "forward+backward":
                value.backward()
            sync()
            if i:  # the first round warms up
                times[mode].append(time.perf_counter() - start)
                if mode == "forward+backward":
                    times["cpu"].append(time.process_time() - cpu)
    return {"name": name, "value": value.item(), "source": source, "peak_mib": peak_memory_mib(device) - base,
            **{mode: min(t) for mode, t in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cpu, and cuda if available")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the project's 2-core reference)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.case:
        print(json.dumps(run_case(args.case, args.device, args.repeats)))
        return
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        print(f"\n### {device} ({torch.get_num_threads() if device == 'cpu' else torch.cuda.get_device_name()}"
              f"{' threads' if device == 'cpu' else ''}), torch {torch.__version__}, shape {SHAPE}, "
              f"load average {os.getloadavg()[0]:.1f} at start\n")
        print("| case | value | forward s | fwd+bwd s | fwd+bwd CPU s | peak MiB |")
        print("|---|---:|---:|---:|---:|---:|")
        sources = set()
        for name in CASES:
            cmd = [sys.executable, __file__, "--case", name, "--device", device, "--repeats", str(args.repeats),
                   "--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
                print(f"| {name} | failed: {reason} | | | | |")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            sources.add(r["source"])
            cpu = f"{r['cpu']:.3f}" if device == "cpu" else "-"
            print(f"| {name} | {r['value']:.4f} | {r['forward']:.3f} | {r['forward+backward']:.3f} | {cpu} | "
                  f"{r['peak_mib']:.0f} |", flush=True)
        print(f"\nimages: {', '.join(sorted(sources)) or 'none (every case failed)'}")


if __name__ == "__main__":
    main()
