"""Affine registration: torchalign vs ANTsPy vs SimpleITK (accuracy, wall time, peak memory).

    python benchmarks/linear.py [--threads 2] [--methods torchalign,torchalign-all,ants,sitk] [--cases brain3d,ixi]

Two cases, each registered by every method in a fresh subprocess (one at a time):

* ``brain3d``: ``subject_b_t1`` (moving) to ``subject_a_t1`` (fixed); ``subject_b_aseg`` is warped
  with nearest-neighbour interpolation onto the fixed grid and compared with ``subject_a_aseg``:
  mean Dice over the 30 labels of ``eval_labels.txt`` (numpy).
* ``ixi``: IXI002 T2 (moving) to T1 (fixed), both skull-stripped, after a known rigid perturbation
  ``P`` (20 deg, 20 mm) of the T2 header: ``world_from_voxel = P @ world_from_voxel`` moves the image
  in world space without resampling it. Each method also registers the unperturbed pair (``M0``);
  the truth for the perturbed pair is then ``P @ M0`` (the scanner alignment of T1 and T2 is only
  good to ~1 mm, so ``P`` alone is not exact). Errors are mean displacement errors (mm) over the
  T1 brain mask, against ``P @ M0`` and against ``P``.

Every method's result is read as a RAS ``moving_from_fixed`` matrix (ANTs' ``.mat`` and SimpleITK's
transform through :func:`torchalign.io.transforms.read_linear`) and evaluated by the same code.
Time is the registration call alone (not imports or file reading); CPU is the process CPU time of
that call (user + system, all threads), which a machine shared with other jobs disturbs less than
wall time. Peak memory is the subprocess's peak resident set (``VmHWM``) and, in brackets, its rise
over the resident set just before the registration call (images loaded). ``ru_maxrss`` is not used:
on Linux a child inherits its parent's high-water mark through fork and exec. All methods get the
same number of threads (``--threads``: torch, ITK and OpenMP thread pools).

    python benchmarks/linear.py --profile brain3d     # cProfile of the torchalign preset, top 15
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
from pathlib import Path

import numpy as np

from torchalign.config import RegistrationConfig, resolve_config
from torchalign.metrics import mean_dice
from torchalign.metrics.evaluate import read_labels_file

DATA = Path(os.environ.get("TORCHALIGN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BRAIN = DATA / "brain3d"
IXI = DATA / "multimodal"
T1, T2 = IXI / "hd_bet_IXI002-Guys-0828-T1.nii.gz", IXI / "hd_bet_IXI002-Guys-0828-T2.nii.gz"
T1_MASK = IXI / "hd_bet_mask_IXI002-Guys-0828-T1.nii.gz"
METHODS = {
    "torchalign": "torchalign `affine` preset (MI)",
    "torchalign-all": "torchalign `affine` preset, MI on every voxel",
    "ants": "ANTsPy `Affine` (Mattes MI)",
    "sitk": "SimpleITK affine (Mattes MI, 4/2/1)",
}


# ---- workers: one registration per subprocess ----------------------------------------------------
def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status (``VmRSS``: now, ``VmHWM``: peak since exec) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (the memory figures need Linux)")


def _all_voxels_config() -> RegistrationConfig:
    """The ``affine`` preset with MI on every voxel (no ``samples``): the preset before sampling."""
    config = resolve_config("affine")
    for stage in config.stages:
        stage.metric_options = {k: v for k, v in stage.metric_options.items() if k not in ("samples", "resample")}
    return config


def register_torchalign(fixed: str, moving: str, all_voxels: bool) -> tuple[np.ndarray, float]:
    """torchalign's ``affine`` preset (or it on every voxel) -> (RAS matrix, seconds)."""
    from torchalign.io import read_image
    from torchalign.registration import register

    f, m = read_image(fixed), read_image(moving)
    config = _all_voxels_config() if all_voxels else resolve_config("affine")
    t0 = time.perf_counter()
    result = register(f, m, config)
    return result.linear[0].numpy(), time.perf_counter() - t0


def register_ants(fixed: str, moving: str, workdir: Path) -> tuple[np.ndarray, float]:
    """``ants.registration(type_of_transform='Affine')`` -> (RAS matrix, seconds)."""
    import ants

    from torchalign.io.transforms import read_linear

    f, m = ants.image_read(fixed), ants.image_read(moving)
    t0 = time.perf_counter()
    out = ants.registration(f, m, type_of_transform="Affine", outprefix=str(workdir / "ants_"))
    seconds = time.perf_counter() - t0
    return read_linear(out["fwdtransforms"][0]), seconds


def register_sitk(fixed: str, moving: str, workdir: Path) -> tuple[np.ndarray, float]:
    """SimpleITK affine, Mattes MI (32 bins, 20 % random samples), 4/2/1 levels -> (RAS matrix, seconds)."""
    import SimpleITK as sitk

    from torchalign.io.transforms import read_linear

    f = sitk.ReadImage(fixed, sitk.sitkFloat32)
    m = sitk.ReadImage(moving, sitk.sitkFloat32)
    t0 = time.perf_counter()
    start = sitk.CenteredTransformInitializer(f, m, sitk.AffineTransform(3),
                                              sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=200,
                                                 gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(start, inPlace=False)
    tx = reg.Execute(f, m)
    seconds = time.perf_counter() - t0
    path = workdir / "sitk.tfm"
    sitk.WriteTransform(tx, str(path))
    return read_linear(path), seconds


def worker(method: str, fixed: str, moving: str, threads: int, out: Path) -> None:
    """Run one registration and write ``{matrix, seconds, cpu, rss_before}`` as JSON to ``out``."""
    import torch

    torch.set_num_threads(threads)
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        rss_before = _status_mb("VmRSS")
        cpu0 = time.process_time()
        if method in ("torchalign", "torchalign-all"):
            matrix, seconds = register_torchalign(fixed, moving, all_voxels=method == "torchalign-all")
        elif method == "ants":
            matrix, seconds = register_ants(fixed, moving, Path(tmp))
        else:
            matrix, seconds = register_sitk(fixed, moving, Path(tmp))
        cpu = time.process_time() - cpu0
    out.write_text(json.dumps({"matrix": np.asarray(matrix).tolist(), "seconds": seconds, "cpu": cpu,
                               "rss_before": rss_before, "peak": _status_mb("VmHWM")}))


def run_worker(method: str, fixed: Path, moving: Path, threads: int) -> dict:
    """Run :func:`worker` in a fresh subprocess and return its result."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run([sys.executable, __file__, "--worker", method, str(fixed), str(moving),
                               "--threads", str(threads), "--out", str(out)], env=env, check=False)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"{method} on {moving.name} failed with exit code {proc.returncode}")
        result = json.loads(out.read_text())
    result["matrix"] = np.asarray(result["matrix"])
    return result


# ---- cases and evaluation ---------------------------------------------------------------------------
def perturbation(center: np.ndarray) -> np.ndarray:
    """The IXI case's known rigid world motion: 20 deg about (1, 2, 2)/3 through ``center``, then (12, -10, 12) mm."""
    from scipy.spatial.transform import Rotation

    p = np.eye(4)
    p[:3, :3] = Rotation.from_rotvec(np.radians(20.0) * np.array([1.0, 2.0, 2.0]) / 3.0).as_matrix()
    p[:3, 3] = center - p[:3, :3] @ center + np.array([12.0, -10.0, 12.0])
    return p


def warped_dice(matrix: np.ndarray) -> float:
    """Dice of subject_b_aseg pulled onto subject_a's grid through ``matrix`` (nearest neighbour)."""
    from torchalign.io import read_image
    from torchalign.resample import resample
    from torchalign.transforms.linear import MatrixTransform

    fixed = read_image(BRAIN / "subject_a_aseg.nii.gz")
    moving = read_image(BRAIN / "subject_b_aseg.nii.gz")
    warped = resample(moving, fixed.grid, MatrixTransform(matrix), interp="nearest")
    labels = read_labels_file(BRAIN / "eval_labels.txt")
    return mean_dice(fixed.data[0, 0].numpy(), warped.data[0, 0].numpy(), labels)


def mask_error(matrix: np.ndarray, truth: np.ndarray, points: np.ndarray) -> float:
    """Mean |matrix(x) - truth(x)| in mm over ``points`` ``(N, 3)``."""
    diff = points @ (matrix[:3, :3] - truth[:3, :3]).T + (matrix[:3, 3] - truth[:3, 3])
    return float(np.linalg.norm(diff, axis=1).mean())


def write_perturbed(path: Path, p: np.ndarray) -> Path:
    """Save T2 with its header moved by ``p`` (same voxels, ``affine = p @ affine``)."""
    import nibabel as nib

    img = nib.load(T2)
    moved = nib.Nifti1Image(np.asanyarray(img.dataobj), p @ img.affine, img.header)
    moved.set_qform(p @ img.affine, code=1)
    moved.set_sform(p @ img.affine, code=1)
    nib.save(moved, path)
    return path


def fmt_time(r: dict) -> str:
    return f"{r['seconds']:.1f} s (cpu {r['cpu']:.0f} s)"


def fmt_mem(r: dict) -> str:
    return f"{r['peak']:.0f} MB (+{max(0.0, r['peak'] - r['rss_before']):.0f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for every method (default 2)")
    parser.add_argument("--methods", default="torchalign,torchalign-all,ants,sitk",
                        help=f"comma-separated subset of {', '.join(METHODS)}")
    parser.add_argument("--cases", default="brain3d,ixi", help="comma-separated subset of brain3d, ixi")
    parser.add_argument("--profile", choices=("brain3d", "ixi"), help="cProfile the torchalign preset on one case")
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "FIXED", "MOVING"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.worker[1], args.worker[2], args.threads, args.out)
        return
    if args.profile:
        profile(args.profile, args.threads)
        return
    methods = args.methods.split(",")
    cases = args.cases.split(",")
    unknown = sorted(set(methods) - set(METHODS)) + sorted(set(cases) - {"brain3d", "ixi"})
    if unknown:
        parser.error(f"unknown method or case: {', '.join(unknown)}")
    needed = [BRAIN / "subject_a_t1.nii.gz", BRAIN / "subject_b_t1.nii.gz", T1, T2, T1_MASK]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        sys.exit(f"benchmark data not found: {', '.join(missing)} (set TORCHALIGN_DATA to ../shared/data)")

    from torchalign.io import read_image

    rows = {m: {} for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        if "ixi" in cases:
            t2 = read_image(T2)
            p = perturbation(t2.grid.center())
            perturbed = write_perturbed(Path(tmp) / "t2_perturbed.nii.gz", p)
            mask = read_image(T1_MASK)
            points = mask.grid.points().double()[mask.data[0, 0] > 0].numpy()
        for method in methods:
            if "brain3d" in cases:
                r = run_worker(method, BRAIN / "subject_a_t1.nii.gz", BRAIN / "subject_b_t1.nii.gz", args.threads)
                rows[method]["brain3d"] = (r, warped_dice(r["matrix"]))
                print(f"# {method} brain3d: Dice {rows[method]['brain3d'][1]:.4f}, {fmt_time(r)}", flush=True)
            if "ixi" in cases:
                r0 = run_worker(method, T1, T2, args.threads)
                r = run_worker(method, T1, perturbed, args.threads)
                errors = (mask_error(r["matrix"], p @ r0["matrix"], points), mask_error(r["matrix"], p, points))
                rows[method]["ixi"] = (r, errors)
                rows[method]["ixi_m0"] = r0["matrix"]
                print(f"# {method} ixi: error {errors[0]:.3f} mm (vs P alone {errors[1]:.3f}), {fmt_time(r)}",
                      flush=True)
    print_table(rows, methods, cases, args.threads, points if "ixi" in cases else None)


def profile(case: str, threads: int) -> None:
    """cProfile of the torchalign ``affine`` preset on ``case`` (unperturbed IXI for ``ixi``): per-level
    times and the top 15 functions by own time."""
    import cProfile
    import pstats

    import torch

    from torchalign.io import read_image
    from torchalign.registration import register

    torch.set_num_threads(threads)
    fixed, moving = (BRAIN / "subject_a_t1.nii.gz", BRAIN / "subject_b_t1.nii.gz") if case == "brain3d" else (T1, T2)
    f, m = read_image(fixed), read_image(moving)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch's one-off lazy import, outside the profile
    profiler = cProfile.Profile()
    result = profiler.runcall(register, f, m, resolve_config("affine"))
    print(f"torchalign affine preset on {case}, {threads} thread(s): {result.seconds:.1f} s")
    for stage in result.stages:
        for level in stage.levels:
            print(f"  {stage.transform:7s} {level.shape!s:16s} {level.iterations:4d} iterations {level.seconds:7.1f} s")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def print_table(rows: dict, methods: list[str], cases: list[str], threads: int, points: np.ndarray | None) -> None:
    """One Markdown table; time ratios against the ANTs row when it ran.

    "M0 vs ANTs" compares each method's unperturbed IXI result with ANTs' over the T1 brain mask: the
    error vs P·M0 measures consistency (a method exactly equivariant to a header motion scores 0
    whatever its M0), this column whether the methods agree on M0 itself."""
    header = ["method"]
    if "brain3d" in cases:
        header += ["brain3d Dice (30 labels)", "brain3d time", "brain3d peak RSS"]
    if "ixi" in cases:
        header += ["IXI error vs P·M0 (mm)", "vs P (mm)", "IXI time", "IXI peak RSS"]
        if "ants" in methods:
            header += ["M0 vs ANTs M0 (mm)"]
    if "ants" in methods:
        header += ["time / ANTs", "CPU / ANTs"]
    print(f"\nAffine registration, {threads} thread(s), {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {datetime.date.today()}; brain3d Dice before registration 0.522")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for method in methods:
        cells = [METHODS[method]]
        if "brain3d" in cases:
            r, dice = rows[method]["brain3d"]
            cells += [f"{dice:.4f}", fmt_time(r), fmt_mem(r)]
        if "ixi" in cases:
            r, (e0, e1) = rows[method]["ixi"]
            cells += [f"{e0:.3f}", f"{e1:.3f}", fmt_time(r), fmt_mem(r)]
            if "ants" in methods:
                cells.append(f"{mask_error(rows[method]['ixi_m0'], rows['ants']['ixi_m0'], points):.3f}")
        if "ants" in methods:  # summed over the cases; CPU is the fairer ratio on a shared machine
            for key in ("seconds", "cpu"):
                ours = sum(rows[method][c][0][key] for c in cases)
                cells.append(f"{ours / sum(rows['ants'][c][0][key] for c in cases):.2f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
