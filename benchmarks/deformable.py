"""Deformable registration: torchalign presets vs ANTsPy SyN / SyNQuick vs FireANTs (CPU).

    python benchmarks/deformable.py                          # the default methods (~10 min on 2 idle cores)
    python benchmarks/deformable.py --methods syn,ants-synquick
    python benchmarks/deformable.py --quick                  # the pair at 2 mm: a smoke run of a few minutes
    python benchmarks/deformable.py --profile syn            # cProfile of one torchalign method, top 15 by cumtime
    python benchmarks/deformable.py --methods syn,syn-diffusion1   # presets and variants (see VARIANTS)

The pair: ``brain3d/subject_b_t1`` (moving) to ``subject_a_t1`` (fixed), 160x192x224 at 1 mm,
already affinely aligned (identity affine). Each method runs in a fresh subprocess (one at a
time) and returns its complete fixed -> moving map as one displacement field on the fixed grid
(RAS mm, linear part included; ANTs' ``[warp, affine]`` and FireANTs' warp file are read by
:func:`torchalign.io.transforms.read_transform_chain`). The parent then evaluates every method
with the same code:

* **Dice**: ``subject_b_aseg`` pulled onto the fixed grid through the map (nearest neighbour),
  mean over the 30 labels of ``eval_labels.txt`` (0.522 before registration).
* **det J <= 0 %** and **SDlogJ** (std of ``log det J`` over voxels with ``det J > 0``) of the
  complete map, inside the fixed brain (``subject_a_aseg > 0``); the whole-image folding
  percentage is in the log line.
* **IC**: median inverse-consistency error ``|T^-1(T(x)) - x|`` (mm) over the fixed brain voxels.
  torchalign: ``Result.inverse(Result.transform(x))`` directly. ANTs: its inverse transforms
  (``invtransforms``) as one field through :func:`torchalign.metrics.inverse_consistency` (the
  inverse sampled linearly at ``T(x)``). FireANTs: not reported (see :func:`run_fireants`).
* **time**: wall seconds of the registration call alone (no imports, no file reading; the first
  ``torch.optim.Adam`` imports ``torch._dynamo``, ~1 s, so the worker makes one before the clock);
  **CPU**: process CPU seconds (user + system, all threads) of that call; **x syn**: the
  method's wall time over the ``syn`` row's in the same run.
* **peak RSS**: the worker's ``ru_maxrss`` right after the registration call (imports, images and
  registration; before evaluation), and in brackets the whole subprocess's (``os.wait4``, the
  ``RUSAGE_CHILDREN`` value of that child).

Every method gets the same thread count (``--threads``, default 2, the 2-core setting the speed
goals are stated for: torch, ITK and OpenMP pools; on a machine shared with other jobs,
``--threads 1`` is the fairer comparison). FireANTs is optional (``pip install fireants``; its
CUDA fused ops are absent on CPU and it falls back to its PyTorch path); a method whose package
is missing is reported as skipped.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(os.environ.get("TORCHALIGN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BRAIN = DATA / "brain3d"
FIXED, MOVING = BRAIN / "subject_a_t1.nii.gz", BRAIN / "subject_b_t1.nii.gz"
FIXED_SEG, MOVING_SEG = BRAIN / "subject_a_aseg.nii.gz", BRAIN / "subject_b_aseg.nii.gz"


# ---- torchalign configurations: the presets and variants of ``syn`` --------------------------------
def _preset(name: str) -> Callable[[], Any]:
    def make() -> Any:
        from torchalign.config import load_preset

        return load_preset(name)
    return make


def _variant(preset: str, linear: bool = True, diffusion: float | None = None) -> Callable[[], Any]:
    """A preset with its deformable stage's diffusion weight replaced; ``linear=False`` drops the
    rigid and affine stages (``init: none``; the pair is already affinely aligned)."""
    def make() -> Any:
        from torchalign.config import load_preset

        config = load_preset(preset)
        stage = config.stages[-1]
        if diffusion is not None:
            stage.regularisers = [r.model_copy(update={"weight": diffusion}) for r in stage.regularisers]
        if not linear:
            config = config.model_copy(update={"init": "none", "stages": [stage]})
        return config
    return make


VARIANTS: dict[str, tuple[str, Callable[[], Any]]] = {
    "syn": ("torchalign `syn` preset", _preset("syn")),
    "svf": ("torchalign `svf` preset", _preset("svf")),
    "ffd": ("torchalign `ffd` preset", _preset("ffd")),
    "dense": ("torchalign `dense` preset", _preset("dense")),
    # variants of the syn preset (only its deformable stage changes unless said)
    "syn-nolinear": ("syn without the rigid/affine stages (init none)", _variant("syn", linear=False)),
    "syn-diffusion1": ("syn, diffusion weight 1.0 instead of 0.3 (smoother, SDlogJ like ANTs')",
                       _variant("syn", diffusion=1.0)),
}
TORCHALIGN = set(VARIANTS)
PEERS = {
    "ants-syn": "ANTsPy `SyN` (type_of_transform='SyN')",
    "ants-synquick": "ANTsPy `antsRegistrationSyNQuick[s]`",
    "fireants": "FireANTs 1.5 affine + greedy (tutorial defaults, CPU)",
    "fireants-greedy": "FireANTs 1.5 greedy only (tutorial defaults, identity start, CPU)",
}
METHODS = {**{k: v[0] for k, v in VARIANTS.items()}, **PEERS}
DEFAULT_METHODS = "syn,svf,ffd,dense,ants-syn,ants-synquick,fireants-greedy"


# ---- workers: one registration per subprocess ------------------------------------------------------
def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _brain_points(fixed_seg: str) -> Any:
    """World points ``(1, N, 3)`` of the fixed brain voxels (labels > 0), float32."""
    from torchalign.io import read_image

    seg = read_image(fixed_seg)
    return seg.grid.points().float()[seg.data[0, 0] > 0].unsqueeze(0)


def run_torchalign(method: str, fixed: str, moving: str, fixed_seg: str, work: Path) -> dict:
    import torch

    from torchalign.io import read_image
    from torchalign.registration import register

    f, m = read_image(fixed), read_image(moving)
    config = VARIANTS[method][1]()
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports torch._dynamo (~1 s): an import
    t0, c0 = time.perf_counter(), time.process_time()
    result = register(f, m, config)
    out = {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "peak": _peak_mb()}
    out["levels"] = [[s.transform, list(lv.shape), lv.iterations, round(lv.seconds, 1)]
                     for s in result.stages for lv in s.levels]
    with torch.no_grad():
        np.save(work / "field.npy", result.transform.displacement(f.grid)[0].float().numpy())
        x = _brain_points(fixed_seg)
        back = result.inverse(result.transform(x))
        out["ic_median"] = float((back - x).norm(dim=-1).median())
    return out


def _save_chain_field(paths: list, grid: Any, path: Path) -> None:
    """The complete map of an ANTs-ordered transform list as a displacement field on ``grid``."""
    import torch

    from torchalign.io.transforms import read_transform_chain
    from torchalign.transforms.chain import chain_transform

    with torch.no_grad():
        field = chain_transform(read_transform_chain(paths)).displacement(grid)
    np.save(path, field[0].float().numpy())


def run_ants(method: str, fixed: str, moving: str, work: Path) -> dict:
    import ants

    from torchalign.io import read_image

    f, m = ants.image_read(fixed), ants.image_read(moving)
    kind = {"ants-syn": "SyN", "ants-synquick": "antsRegistrationSyNQuick[s]"}[method]
    t0, c0 = time.perf_counter(), time.process_time()
    reg = ants.registration(f, m, type_of_transform=kind, outprefix=str(work / "ants_"))
    out = {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "peak": _peak_mb()}
    out["transforms"] = [reg["fwdtransforms"], reg["invtransforms"]]
    grid = read_image(fixed).grid
    _save_chain_field(reg["fwdtransforms"], grid, work / "field.npy")
    # invtransforms = [affine, inverse warp] with the affine inverted (ANTs' whichtoinvert)
    inverse = [(p, True) if p.endswith(".mat") else p for p in reg["invtransforms"]]
    _save_chain_field(inverse, read_image(moving).grid, work / "inverse.npy")
    return out


def run_fireants(fixed: str, moving: str, work: Path, affine_stage: bool = True) -> dict:
    """FireANTs' tutorial pipeline (``tutorials/tutorial1_basic_usage.py``): affine at scales 4/2/1
    (200/100/50 Adam steps, lr 3e-3, CC kernel 5), then greedy compositive deformable at 4/2/1
    (200/100/25 steps, lr 0.5, CC kernel 5, smooth_grad_sigma 1, its default smooth_warp_sigma 0.5).
    ``affine_stage=False`` starts the greedy stage from the identity (the pair is pre-aligned)."""
    import logging

    logging.disable(logging.WARNING)
    from fireants.io import BatchedImages
    from fireants.io import Image as FImage
    from fireants.registration.affine import AffineRegistration
    from fireants.registration.greedy import GreedyRegistration

    from torchalign.io import read_image

    batch_f = BatchedImages([FImage.load_file(fixed, device="cpu")])
    batch_m = BatchedImages([FImage.load_file(moving, device="cpu")])
    t0, c0 = time.perf_counter(), time.process_time()
    init = None
    if affine_stage:
        affine = AffineRegistration([4, 2, 1], [200, 100, 50], batch_f, batch_m, optimizer="Adam", optimizer_lr=3e-3,
                                    cc_kernel_size=5, progress_bar=False)
        affine.optimize()
        init = affine.get_affine_matrix().detach()
    reg = GreedyRegistration(scales=[4, 2, 1], iterations=[200, 100, 25], fixed_images=batch_f, moving_images=batch_m,
                             cc_kernel_size=5, deformation_type="compositive", smooth_grad_sigma=1,
                             optimizer="adam", optimizer_lr=0.5, init_affine=init, progress_bar=False)
    reg.optimize()
    out = {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "peak": _peak_mb()}
    reg.save_as_ants_transforms([str(work / "fa_warp.nii.gz")])
    _save_chain_field([str(work / "fa_warp.nii.gz")], read_image(fixed).grid, work / "field.npy")
    # No IC: with a non-identity affine, the file of save_as_ants_transforms(save_inverse=True) is
    # not the inverse of the forward map as read here (T(T^-1 x) is off by ~9 mm on the --quick pair).
    return out


def worker(method: str, fixed: str, moving: str, fixed_seg: str, threads: int, work: Path) -> None:
    import torch

    torch.set_num_threads(threads)
    if method in TORCHALIGN:
        out = run_torchalign(method, fixed, moving, fixed_seg, work)
    elif method.startswith("ants"):
        out = run_ants(method, fixed, moving, work)
    else:
        out = run_fireants(fixed, moving, work, affine_stage=method == "fireants")
    (work / "result.json").write_text(json.dumps(out))


def run_worker(method: str, paths: dict[str, Path], threads: int, work: Path) -> dict:
    """:func:`worker` in a fresh subprocess; adds the child's whole peak RSS (``os.wait4``) in MB."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(threads), TQDM_DISABLE="1")
    log = work / "worker.log"
    with open(log, "w") as stream:
        proc = subprocess.Popen([sys.executable, __file__, "--worker", method, str(paths["fixed"]),
                                 str(paths["moving"]), str(paths["fixed_seg"]), "--threads", str(threads),
                                 "--work", str(work)], env=env, stdout=stream, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or not (work / "result.json").exists():
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"{method} failed with exit code {code}:\n{tail}")
    result = json.loads((work / "result.json").read_text())
    result["maxrss"] = usage.ru_maxrss / 1024
    return result


# ---- evaluation (same code for every method) --------------------------------------------------------
def evaluate(field: np.ndarray, inverse: np.ndarray | None, paths: dict[str, Path], labels: list[int]) -> dict:
    import torch

    from torchalign.functional.jacobian import jacobian_det
    from torchalign.io import read_image
    from torchalign.metrics import inverse_consistency, jacobian_stats, mean_dice
    from torchalign.resample import resample
    from torchalign.transforms.chain import FieldTransform

    fixed_seg, moving_seg = read_image(paths["fixed_seg"]), read_image(paths["moving_seg"])
    grid = fixed_seg.grid
    u = torch.from_numpy(field)[None]
    warped = resample(moving_seg, grid, FieldTransform(u, grid), interp="nearest").data[0, 0].numpy()
    fixed_labels = fixed_seg.data[0, 0].numpy()
    brain = fixed_labels > 0
    with torch.no_grad():
        det = jacobian_det(u.double(), grid)[0].numpy()
    inside, whole = jacobian_stats(det, brain), jacobian_stats(det)
    out = {"dice": mean_dice(fixed_labels, warped, labels), "fold": inside["fold_percent"],
           "fold_all": whole["fold_percent"], "sdlogj": inside["sdlogj"], "min_det": whole["min"]}
    if inverse is not None:
        error, _ = inverse_consistency(u, grid, torch.from_numpy(inverse)[None], moving_seg.grid)
        out["ic_median"] = float(np.median(error[0].numpy()[brain]))
    return out


def quick_inputs(tmp: Path) -> dict[str, Path]:
    """The pair resampled to 2 mm (80x96x112) for ``--quick``: images linear, labels nearest."""
    from torchalign.io import read_image, write_image
    from torchalign.resample import resample

    out = {}
    for key, path in (("fixed", FIXED), ("moving", MOVING), ("fixed_seg", FIXED_SEG), ("moving_seg", MOVING_SEG)):
        image = read_image(path)
        grid = image.grid.downsample(2.0)
        small = resample(image, grid, interp="nearest" if key.endswith("seg") else "linear")
        out[key] = write_image(small, tmp / path.name)
    return out


def profile(method: str, threads: int, top: int = 15) -> None:
    """cProfile of one torchalign registration in this process; the ``top`` functions by cumtime."""
    import cProfile
    import pstats

    import torch

    from torchalign.io import read_image
    from torchalign.registration import register

    torch.set_num_threads(threads)
    f, m = read_image(FIXED), read_image(MOVING)
    config = VARIANTS[method][1]()
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    result = register(f, m, config)
    profiler.disable()
    print(f"{method}: {time.perf_counter() - t0:.1f} s wall (under cProfile), {threads} thread(s)")
    for s in result.stages:
        for lv in s.levels:
            print(f"  {s.transform:8s} {lv.shape!s:16s} {lv.iterations:4d} it  {lv.seconds:7.1f} s")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(top)


# ---- main ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="methods:\n" + "\n".join(f"  {k:16s} {v}" for k, v in METHODS.items()))
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})")
    parser.add_argument("--threads", type=int, default=2, help="threads for every method (default 2)")
    parser.add_argument("--quick", action="store_true", help="the pair resampled to 2 mm (a smoke run)")
    parser.add_argument("--profile", metavar="METHOD", help="cProfile one torchalign method instead")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--worker", nargs=4, metavar=("METHOD", "FIXED", "MOVING", "FIXED_SEG"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker, args.threads, args.work)
        return
    missing = [str(p) for p in (FIXED, MOVING, FIXED_SEG, MOVING_SEG) if not p.exists()]
    if missing:
        sys.exit(f"benchmark data not found: {', '.join(missing)} (set TORCHALIGN_DATA to ../shared/data)")
    if args.profile:
        if args.profile not in TORCHALIGN:
            parser.error(f"--profile takes a torchalign method: {', '.join(VARIANTS)}")
        profile(args.profile, args.threads)
        return
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    from torchalign.metrics import mean_dice
    from torchalign.metrics.evaluate import read_labels_file

    labels = read_labels_file(BRAIN / "eval_labels.txt")
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = quick_inputs(Path(tmp)) if args.quick else \
            {"fixed": FIXED, "moving": MOVING, "fixed_seg": FIXED_SEG, "moving_seg": MOVING_SEG}
        from torchalign.io import read_image

        before = mean_dice(read_image(paths["fixed_seg"]).data[0, 0].numpy(),
                           read_image(paths["moving_seg"]).data[0, 0].numpy(), labels)
        print(f"# Dice before registration {before:.4f}", flush=True)
        for method in methods:
            work = Path(tmp) / method
            work.mkdir()
            try:
                r = run_worker(method, paths, args.threads, work)
            except RuntimeError as exc:
                if "No module named" in str(exc):
                    print(f"# {method}: skipped ({str(exc).splitlines()[-1]})", flush=True)
                    continue
                raise
            inverse = np.load(work / "inverse.npy") if (work / "inverse.npy").exists() else None
            metrics = evaluate(np.load(work / "field.npy"), inverse, paths, labels)
            if "ic_median" in r:  # torchalign: Result.inverse directly
                metrics["ic_median"] = r["ic_median"]
            rows[method] = {**r, **metrics}
            print(f"# {method}: Dice {metrics['dice']:.4f}, {r['seconds']:.1f} s (cpu {r['cpu']:.1f} s), "
                  f"peak {r['peak']:.0f} MB (whole {r['maxrss']:.0f} MB), fold brain {metrics['fold']:.4f} % "
                  f"all {metrics['fold_all']:.4f} %, min det J {metrics['min_det']:.3f}, SDlogJ {metrics['sdlogj']:.4f}, "
                  f"IC median {metrics.get('ic_median', float('nan')):.4f} mm"
                  + (f", levels {r['levels']}" if "levels" in r else ""), flush=True)
    print_table(rows, before, args)
    if args.json:
        args.json.write_text(json.dumps({"before": before, "threads": args.threads, "quick": args.quick,
                                         "rows": rows}, indent=1, default=str))


def print_table(rows: dict[str, dict], before: float, args: argparse.Namespace) -> None:
    """One Markdown table; time ratios against the ``syn`` row when it ran."""
    ref = rows.get("syn", {}).get("seconds")
    ref_cpu = rows.get("syn", {}).get("cpu")
    print(f"\nDeformable registration, subject_b -> subject_a{' at 2 mm (--quick)' if args.quick else ''}, "
          f"{args.threads} thread(s) per method, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, {datetime.date.today()}; Dice before registration {before:.3f}")
    header = ["method", "time s", "CPU s", "time / syn", "CPU / syn", "peak RSS MB", "Dice (30)",
              "det J <= 0 % (brain)", "SDlogJ", "IC median mm"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for method, r in rows.items():
        cells = [METHODS[method], f"{r['seconds']:.1f}", f"{r['cpu']:.1f}",
                 f"{r['seconds'] / ref:.2f}" if ref else "", f"{r['cpu'] / ref_cpu:.2f}" if ref_cpu else "",
                 f"{r['peak']:.0f} ({r['maxrss']:.0f})", f"{r['dice']:.4f}", f"{r['fold']:.4f}",
                 f"{r['sdlogj']:.4f}", f"{r['ic_median']:.4f}" if "ic_median" in r else ""]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
