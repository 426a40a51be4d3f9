"""Known-warp deformable benchmark: recover a drawn diffeomorphism, torchalign vs ANTsPy SyN.

    python benchmarks/known_warp.py                                  # held-out images, seeds 0,1,2, 2 mm copies
    python benchmarks/known_warp.py --images colin27,slice-r16 --methods syn,ants-syn --seeds 0
    python benchmarks/known_warp.py --images ixi-t1t2 --methods syn,syn-mi,syn-mind,ants-syn
    python benchmarks/known_warp.py --methods syn,yaml:my_config.yaml   # any config file as a method

Each case is an image ``F`` and a smooth diffeomorphism drawn by this script (numpy/scipy only,
not the project's sampling): a velocity ``v`` of Gaussian-smoothed white noise (``--sigma`` mm,
world-axis components), scaled so that the true map's mean displacement inside the foreground is
``--magnitudes`` mm, integrated by scaling and squaring (``2^8`` steps). The true fixed -> moving
map is ``T = exp(v)`` and the moving image is ``M = S o exp(-v)`` resampled with cubic splines
(``scipy.ndimage.map_coordinates``), so that ``M(T(x)) = S(x)``; ``S = F`` for mono-contrast cases
and, for the cross-contrast case ``ixi-t1t2``, the same subject's T2 (on its own grid), which IXI
scanner poses align with the T1 to ~1 mm. Every drawn map has ``det J > 0`` everywhere (checked
with a Jacobian taken in world axes through the grid's direction matrix) and its discrete inverse
``exp(-v) o exp(v)`` is reported (``truth IC``).

Every method runs in a fresh subprocess (one at a time; ``--threads`` each) and returns its fixed ->
moving map as a displacement field on the fixed grid (torchalign: ``Result.transform``; ANTs: its
``fwdtransforms`` read by :func:`torchalign.io.transforms.read_transform_chain`). The parent scores
every method with the same numpy code, inside the fixed image's foreground: mean and 95th
percentile of ``|T_method(x) - T(x)|`` (mm), % ``det J <= 0`` and SDlogJ of the method's map,
wall time of the registration call and the worker's peak RSS.

3-D images are resampled to 2 mm copies (``--spacing``; 0 keeps the native grid) because ANTs
SyN at 1 mm takes 1-12 min per pair on two cores; 2-D slices keep their 1 mm pixels.
``ants-syn`` is ``ants.registration(type_of_transform="SyN")`` (affine, then SyN[0.2, 3, 0] for
40x20x0 iterations at shrink 4x2x1) with ``syn_metric="CC", syn_sampling=4`` (radius 4) on
mono-contrast cases and ANTsPy's default Mattes MI (32 bins) on cross-contrast ones;
``ants-syncc`` is ANTsPy's ``SyNCC`` (rigid, affine, SyN[0.15, 3, 0] with CC radius 4 for up to
2100x1200x1200x20 iterations at shrink 4x3x2x1), mono-contrast only. torchalign methods on a
cross-contrast case replace their deformable stages' metric with ``--cross-metric`` (default MI)
unless the method names its metric (``syn-mi``, ``syn-mind``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deformable import DATA, _save_chain_field  # noqa: E402  (a sibling script)


# ---- the drawn deformation (numpy / scipy only) ----------------------------------------------------
def linear_part(affine: np.ndarray) -> np.ndarray:
    """The ``(D, D)`` world-from-voxel matrix (direction times spacing) of a ``(D+1, D+1)`` affine."""
    d = affine.shape[0] - 1
    return affine[:d, :d]


def voxel_points(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World coordinates ``(D, *S)`` of every voxel centre."""
    d = len(shape)
    index = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    return np.einsum("ij,j...->i...", linear_part(affine), index) + affine[:d, d].reshape(d, *([1] * d))


def sample(values: np.ndarray, affine: np.ndarray, world: np.ndarray, order: int = 1) -> np.ndarray:
    """``values (C, *S)`` on the grid ``affine`` sampled at world points ``(D, *P)`` -> ``(C, *P)``
    (``order`` 1 linear, 3 cubic B-spline; outside the grid the nearest edge value)."""
    d = world.shape[0]
    inv = np.linalg.inv(affine)
    index = np.einsum("ij,j...->i...", inv[:d, :d], world) + inv[:d, d].reshape(d, *([1] * (world.ndim - 1)))
    return np.stack([ndimage.map_coordinates(c, index, order=order, mode="nearest") for c in values])


def compose(u: np.ndarray, w: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Displacement of ``(id + w) o (id + u)`` on the grid, both ``(D, *S)`` world mm: ``u + w(x + u)``."""
    return u + sample(w, affine, voxel_points(u.shape[1:], affine) + u)


def exponential(v: np.ndarray, affine: np.ndarray, squarings: int = 8) -> np.ndarray:
    """Displacement of ``exp(v)`` by scaling and squaring: ``(D, *S)`` world mm."""
    u = v / 2.0 ** squarings
    for _ in range(squarings):
        u = compose(u, u, affine)
    return u


def jacobian_det(u: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``det(I + du/dx)`` ``(*S)`` of a world-mm displacement, derivatives in world axes: the voxel-index
    gradients (central differences) times the inverse of the grid's direction-times-spacing matrix."""
    d = u.shape[0]
    grads = np.stack([np.stack(np.gradient(u[c], axis=tuple(range(d))), 0) for c in range(d)])  # (D, D, *S)
    jac = np.einsum("ck...,kj->...cj", grads, np.linalg.inv(linear_part(affine))) + np.eye(d)
    return np.linalg.det(jac)


def draw_velocity(shape: tuple[int, ...], affine: np.ndarray, seed: int, sigma_mm: float) -> np.ndarray:
    """Gaussian-smoothed white noise ``(D, *S)`` (world-axis components), unit RMS."""
    rng = np.random.default_rng(seed)
    spacing = np.linalg.norm(linear_part(affine), axis=0)
    v = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma_mm / spacing, mode="reflect")
                  for _ in shape])
    return v / np.sqrt(np.mean(np.sum(v ** 2, 0)))


def draw_map(shape: tuple[int, ...], affine: np.ndarray, foreground: np.ndarray, seed: int, sigma_mm: float,
             magnitude: float) -> tuple[np.ndarray, np.ndarray]:
    """``(exp(v), exp(-v))`` displacements ``(D, *S)``, scaled so that the mean ``|exp(v) - id|`` over
    ``foreground`` is ``magnitude`` mm; refuses a draw whose Jacobian is not positive everywhere."""
    v = draw_velocity(shape, affine, seed, sigma_mm)
    scale = magnitude / np.linalg.norm(v, axis=0)[foreground].mean()
    for _ in range(2):  # exp is not linear in the scale: one correction lands within ~1 %
        forward = exponential(scale * v, affine)
        scale *= magnitude / np.linalg.norm(forward, axis=0)[foreground].mean()
    forward, backward = exponential(scale * v, affine), exponential(-scale * v, affine)
    for name, u in (("exp(v)", forward), ("exp(-v)", backward)):
        det = jacobian_det(u, affine)
        if det.min() <= 0:
            raise ValueError(f"seed {seed}, {magnitude} mm: {name} folds (min det J {det.min():.3f}); "
                             "lower --magnitudes or raise --sigma")
    return forward, backward


# ---- images ---------------------------------------------------------------------------------------
@dataclass
class Source:
    """An image array ``(*S)`` on a RAS world-from-voxel ``affine`` with its foreground."""

    data: np.ndarray
    affine: np.ndarray
    foreground: np.ndarray


def head_foreground(data: np.ndarray) -> np.ndarray:
    """The largest connected component above 10 % of the 99.5th percentile (lightly smoothed), holes
    filled: the head or brain of a template or skull-stripped scan."""
    smooth = ndimage.gaussian_filter(data.astype(np.float64), 1.0)
    mask = smooth > 0.1 * np.percentile(smooth, 99.5)
    labels, n = ndimage.label(mask)
    if n > 1:
        mask = labels == 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, n + 1))))
    return ndimage.binary_fill_holes(mask)


def read(path: Path, mask: Path | None = None) -> Source:
    """A file through torchalign's reader (RAS geometry), channels averaged."""
    from torchalign.io import read_image

    image = read_image(path)
    data = image.data[0].double().mean(0).numpy()
    fg = head_foreground(data) if mask is None else read_image(mask).data[0, 0].numpy() > 0
    return Source(data, np.asarray(image.grid.world_from_voxel), fg)


def read_npz(path: Path, key: str) -> Source:
    data = np.load(path)[key].astype(np.float64)
    return Source(data, np.eye(3), head_foreground(data))


def resliced(source: Source, spacing: float) -> Source:
    """``source`` on a grid of ``spacing`` mm covering the same extent (Gaussian anti-aliasing, linear
    interpolation; the foreground by nearest neighbour); unchanged where it is not coarser."""
    old = np.linalg.norm(linear_part(source.affine), axis=0)
    factor = np.maximum(spacing / old, 1.0)
    if spacing <= 0 or np.all(factor <= 1.0):
        return source
    d = len(old)
    shape = tuple(int(s) for s in np.maximum(np.round(np.asarray(source.data.shape) / factor), 1))
    factor = np.asarray(source.data.shape) / np.asarray(shape)
    affine = np.eye(d + 1)
    affine[:d, :d] = linear_part(source.affine) * factor
    affine[:d, d] = source.affine[:d, :d] @ ((factor - 1) / 2) + source.affine[:d, d]
    world = voxel_points(shape, affine)
    blurred = ndimage.gaussian_filter(source.data, np.sqrt(np.maximum(factor ** 2 - 1, 0)) / 2)
    data = sample(blurred[None], source.affine, world)[0]
    fg = sample(source.foreground[None].astype(np.float64), source.affine, world, order=0)[0] > 0.5
    return Source(data, affine, fg)


MM = DATA / "multimodal"
IXI_T1, IXI_T2 = MM / "hd_bet_IXI002-Guys-0828-T1.nii.gz", MM / "hd_bet_IXI002-Guys-0828-T2.nii.gz"
IXI_T1_MASK, IXI_T2_MASK = MM / "hd_bet_mask_IXI002-Guys-0828-T1.nii.gz", MM / "hd_bet_mask_IXI002-Guys-0828-T2.nii.gz"
# name -> (fixed source, moving source or None for mono-contrast); sources read lazily
IMAGES: dict[str, tuple[Callable[[], Source], Callable[[], Source] | None]] = {
    "brain-a": (lambda: read(DATA / "brain3d" / "subject_a_t1.nii.gz"), None),
    "brain-b": (lambda: read(DATA / "brain3d" / "subject_b_t1.nii.gz"), None),
    "ixi-t1": (lambda: read(IXI_T1, IXI_T1_MASK), None),
    "ixi-t2": (lambda: read(IXI_T2, IXI_T2_MASK), None),
    "ixi-t1t2": (lambda: read(IXI_T1, IXI_T1_MASK), lambda: read(IXI_T2, IXI_T2_MASK)),
    "colin27": (lambda: read(DATA / "templates" / "ch2.nii.gz"), None),
    "mni152": (lambda: read(DATA / "templates" / "mni.nii.gz"), None),
    "icbm152": (lambda: read(DATA / "templates" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"), None),
    "oasis": (lambda: read(DATA / "templates" / "oasis_mni.nii.gz"), None),
    "slice-r16": (lambda: read(DATA / "slices2d" / "r16slice.jpg"), None),
    "slice-r64": (lambda: read(DATA / "slices2d" / "r64slice.jpg"), None),
    "slice-brain-a": (lambda: read_npz(DATA / "brain2d" / "brain2d_slice_z100_pairs.npz", "vxm_test_vol"), None),
    "itk2d-t1pd": (lambda: read(MM / "itk2d" / "BrainT1Slice.png"),
                   lambda: read(MM / "itk2d" / "BrainProtonDensitySlice.png")),
}
# Cross-validation: the presets were tuned on TUNING only; the default run reports the others.
TUNING = "brain-a,slice-r16,itk2d-t1pd"
HELD_OUT = "ixi-t1,ixi-t2,colin27,mni152,oasis,slice-r64,ixi-t1t2"


@dataclass
class Case:
    image: str
    seed: int
    magnitude: float
    cross: bool
    fixed: Path
    moving: Path
    truth: np.ndarray  # (D, *S) true fixed -> moving displacement on the fixed grid, RAS mm
    foreground: np.ndarray  # (*S) bool, fixed grid
    affine: np.ndarray  # fixed world_from_voxel
    truth_ic: float  # max |exp(-v)(exp(v)(x)) - x| over the foreground, mm
    min_det: float


def write(data: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    import torch

    from torchalign.grid import Grid
    from torchalign.image import Image
    from torchalign.io import write_image

    write_image(Image(torch.from_numpy(data.astype(np.float32))[None], Grid(data.shape, affine)), path)
    return path


def make_case(image: str, seed: int, magnitude: float, sigma: float, spacing: float, work: Path) -> Case:
    """Draw the map for one image and seed, write the fixed and the deformed moving image to ``work``."""
    fixed_src, moving_src = IMAGES[image]
    fixed = fixed_src()
    if fixed.data.ndim == 3:
        fixed = resliced(fixed, spacing)
    source = fixed if moving_src is None else moving_src()
    if moving_src is not None and source.data.ndim == 3:
        source = resliced(source, spacing)
    forward, backward = draw_map(fixed.data.shape, fixed.affine, fixed.foreground, seed, sigma, magnitude)
    # M(y) = S(exp(-v)(y)) on the source's grid (exp(-v) sampled linearly there when it is another grid)
    world = voxel_points(source.data.shape, source.affine)
    u_back = backward if source is fixed else sample(backward, fixed.affine, world)
    moving = sample(source.data[None], source.affine, world + u_back, order=3)[0]
    roundtrip = compose(forward, backward, fixed.affine)
    ic = float(np.linalg.norm(roundtrip, axis=0)[fixed.foreground].max())
    return Case(image, seed, magnitude, moving_src is not None, write(fixed.data, fixed.affine, work / "fixed.nii.gz"),
                write(moving, source.affine, work / "moving.nii.gz"), forward, fixed.foreground, fixed.affine, ic,
                float(jacobian_det(forward, fixed.affine).min()))


def _peak_mb() -> float:
    """This process's peak resident set (``VmHWM``, MB); ``ru_maxrss`` would carry the parent's
    high-water mark (the parent holds the cases) into a child that is forked and exec'd."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- methods --------------------------------------------------------------------------------------
def torchalign_config(method: str, cross: bool, cross_metric: str) -> Any:
    """The config of a torchalign method: a preset, ``PRESET-METRIC`` (the deformable stages' metric
    replaced), or ``yaml:PATH``; on cross-contrast cases a preset's deformable LNCC becomes ``cross_metric``."""
    from torchalign.config import load_preset, preset_names, resolve_config

    if method.startswith("yaml:"):
        return resolve_config(config_file=method[5:])
    name, _, metric = (method, "", "") if method in preset_names() else method.partition("-")
    if name not in preset_names():
        raise ValueError(f"unknown torchalign method {method!r}")
    config = load_preset(name)
    metric = metric or (cross_metric if cross and not name.endswith("-mm") else "")
    if metric:
        stages = [s if s.is_linear else s.model_copy(update={"metric": metric, "metric_options": {}})
                  for s in config.stages]
        config = config.model_copy(update={"stages": stages})
    return config


def run_torchalign(job: dict) -> dict:
    import torch

    from torchalign.io import read_image
    from torchalign.registration import register

    f, m = read_image(job["fixed"]), read_image(job["moving"])
    config = torchalign_config(job["method"], job["cross"], job["cross_metric"])
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports torch._dynamo (~1 s)
    t0 = time.perf_counter()
    result = register(f, m, config)
    out = {"seconds": time.perf_counter() - t0, "peak": _peak_mb()}
    with torch.no_grad():
        np.save(Path(job["work"]) / "field.npy", result.transform.displacement(f.grid)[0].double().numpy())
    return out


def run_ants(job: dict) -> dict:
    import ants

    from torchalign.io import read_image

    f, m = ants.image_read(job["fixed"]), ants.image_read(job["moving"])
    work = Path(job["work"])
    if job["method"] == "ants-syncc":
        if job["cross"]:
            raise ValueError("ants-syncc is mono-contrast only")
        options: dict[str, Any] = {"type_of_transform": "SyNCC"}
    else:
        options = {"type_of_transform": "SyN", "syn_metric": "mattes" if job["cross"] else "CC",
                   "syn_sampling": 32 if job["cross"] else 4}
    t0 = time.perf_counter()
    reg = ants.registration(f, m, outprefix=str(work / "ants_"), **options)
    out = {"seconds": time.perf_counter() - t0, "peak": _peak_mb()}
    _save_chain_field(reg["fwdtransforms"], read_image(job["fixed"]).grid, work / "field.npy")
    return out


PEERS = {"ants-syn": "ANTsPy SyN (CC r4 / Mattes MI)", "ants-syncc": "ANTsPy SyNCC"}


def worker(job_file: Path) -> None:
    import torch

    job = json.loads(job_file.read_text())
    torch.set_num_threads(job["threads"])
    out = run_ants(job) if job["method"] in PEERS else run_torchalign(job)
    (Path(job["work"]) / "result.json").write_text(json.dumps(out))


def run_worker(job: dict) -> dict:
    """:func:`worker` in a fresh subprocess with ``threads`` for torch, ITK and OpenMP."""
    work = Path(job["work"])
    (work / "job.json").write_text(json.dumps(job))
    threads = str(job["threads"])
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
               ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=threads, TQDM_DISABLE="1")
    log = work / "worker.log"
    with open(log, "w") as stream:
        code = subprocess.run([sys.executable, __file__, "--worker", str(work / "job.json")], env=env,
                              stdout=stream, stderr=subprocess.STDOUT).returncode
    if code != 0 or not (work / "result.json").exists():
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"{job['method']} failed with exit code {code}:\n{tail}")
    return json.loads((work / "result.json").read_text())


# ---- scoring ----------------------------------------------------------------------------------------
def score(field: np.ndarray, case: Case) -> dict[str, float]:
    """Error of a recovered displacement ``(D, *S)`` against the truth inside the foreground (mm),
    with the folding and SDlogJ of the recovered map there."""
    error = np.linalg.norm(field - case.truth, axis=0)[case.foreground]
    det = jacobian_det(field, case.affine)[case.foreground]
    positive = det[det > 0]
    return {"mean": float(error.mean()), "p95": float(np.percentile(error, 95)),
            "fold": 100.0 * float(np.mean(det <= 0)), "sdlogj": float(np.log(positive).std())}


def run_case(case: Case, methods: list[str], threads: int, cross_metric: str, work: Path) -> list[dict]:
    """The identity row, then one row per method (skipped where the method does not apply)."""
    rows = [{"method": "identity (before)", **score(np.zeros_like(case.truth), case), "seconds": 0.0, "peak": 0.0}]
    for method in methods:
        if (method == "ants-syncc" and case.cross) or (method.endswith("-mm") and not case.cross):
            continue  # mono-contrast only / cross-contrast only
        sub = work / method.replace("/", "_").replace(":", "_")
        sub.mkdir()
        job = {"method": method, "fixed": str(case.fixed), "moving": str(case.moving), "cross": case.cross,
               "cross_metric": cross_metric, "threads": threads, "work": str(sub)}
        result = run_worker(job)
        row = {"method": method, **score(np.load(sub / "field.npy"), case), **result}
        rows.append(row)
        print(f"# {case.image} seed {case.seed} {case.magnitude:g} mm {method}: mean {row['mean']:.3f} "
              f"p95 {row['p95']:.3f} mm, fold {row['fold']:.3f} %, SDlogJ {row['sdlogj']:.3f}, "
              f"{row['seconds']:.1f} s, {row['peak']:.0f} MB", flush=True)
    return rows


def print_table(results: list[tuple[Case, list[dict]]], args: argparse.Namespace) -> None:
    print(f"\nKnown-warp recovery, {args.threads} thread(s) per method, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}; 3-D images at {args.spacing:g} mm; field sigma {args.sigma:g} mm; "
          f"errors inside the fixed foreground")
    header = ["image", "seed", "magnitude mm", "method", "mean mm", "p95 mm", "det J <= 0 %", "SDlogJ", "time s",
              "peak RSS MB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for case, rows in results:
        for r in rows:
            print(f"| {case.image} | {case.seed} | {case.magnitude:g} | {r['method']} | {r['mean']:.3f} | "
                  f"{r['p95']:.3f} | {r['fold']:.3f} | {r['sdlogj']:.3f} | {r['seconds']:.1f} | {r['peak']:.0f} |")
    methods = args.methods.split(",")  # the reference last
    if len(methods) > 1:
        ref = methods[-1]
        print(f"\nPer method over the cases where it and {ref} ran (mean of the per-case figures); "
              f"'wins' = cases at or below {ref} in both mean and p95:")
        for m in methods[:-1]:
            rs = [(r, next(x for x in rows if x["method"] == ref)) for _, rows in results
                  for r in rows if r["method"] == m and any(x["method"] == ref for x in rows)]
            if not rs:
                continue
            wins = sum(r["mean"] <= ref["mean"] and r["p95"] <= ref["p95"] for r, ref in rs)
            print(f"  {m:20s} mean {np.mean([r['mean'] for r, _ in rs]):.3f}  p95 {np.mean([r['p95'] for r, _ in rs]):.3f}"
                  f"  time {np.mean([r['seconds'] for r, _ in rs]):.1f} s | {ref} mean "
                  f"{np.mean([x['mean'] for _, x in rs]):.3f}  p95 {np.mean([x['p95'] for _, x in rs]):.3f}"
                  f"  time {np.mean([x['seconds'] for _, x in rs]):.1f} s | wins {wins}/{len(rs)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="images: " + ", ".join(IMAGES) + f"\ntuning set: {TUNING}")
    parser.add_argument("--images", default=HELD_OUT, help=f"comma-separated (default, held out: {HELD_OUT})")
    parser.add_argument("--methods", default="syn,ants-syn",
                        help="comma-separated: presets (syn, svf, ffd, dense), PRESET-METRIC (syn-mi, syn-mind), "
                             "yaml:CONFIG, ants-syn, ants-syncc (default syn,ants-syn; put the reference last)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated field seeds (default 0,1,2)")
    parser.add_argument("--magnitudes", default="2", help="mean displacement in the foreground, mm (default 2)")
    parser.add_argument("--sigma", type=float, default=10.0, help="smoothing of the drawn velocity, mm (default 10)")
    parser.add_argument("--spacing", type=float, default=2.0, help="3-D images resampled to this spacing, mm; "
                                                                   "0: native (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="threads per method (default 2)")
    parser.add_argument("--cross-metric", default="mi", help="torchalign deformable metric on cross-contrast cases")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    images, methods = args.images.split(","), args.methods.split(",")
    unknown = sorted(set(images) - set(IMAGES))
    if unknown:
        parser.error(f"unknown image(s) {', '.join(unknown)}; choose from {', '.join(IMAGES)}")
    results: list[tuple[Case, list[dict]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for image in images:
            for magnitude in (float(x) for x in args.magnitudes.split(",")):
                for seed in (int(x) for x in args.seeds.split(",")):
                    work = Path(tmp) / f"{image}-{seed}-{magnitude:g}"
                    work.mkdir()
                    case = make_case(image, seed, magnitude, args.sigma, args.spacing, work)
                    print(f"# {image} seed {seed}: grid {case.truth.shape[1:]}, drawn mean {magnitude:g} mm, "
                          f"min det J {case.min_det:.3f}, truth IC max {case.truth_ic:.4f} mm", flush=True)
                    results.append((case, run_case(case, methods, args.threads, args.cross_metric, work)))
    print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps([{"image": c.image, "seed": c.seed, "magnitude": c.magnitude,
                                          "rows": rows} for c, rows in results], indent=1))


if __name__ == "__main__":
    main()
