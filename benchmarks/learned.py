"""Learned registration on real 2-D pairs no training saw: the bundled network vs classical ``syn`` (CPU).

    python benchmarks/learned.py                      # all cases, 100 fine-tuning steps, 2 threads
    python benchmarks/learned.py --cases itk-t1-pd --finetune 200 --json out.json

The ``synth2d`` model was trained on synthetic images only, so every real image here is unseen.
Methods, each on the same pairs:

* **network**: ``predict_pair`` (the bundled model alone, no optimisation);
* **network + ft**: the prediction fine-tuned on the pair for ``--finetune`` steps (instance
  optimisation) with LNCC (radius 2) for same-contrast pairs and MI for cross-contrast pairs;
* **syn**: ``register(preset="syn")`` (its linear stages use MI; for cross-contrast pairs its
  deformable stage uses MI instead of LNCC).

Cases:

* **Known drawn deformation** (mean error of the recovered map, mm, over the head: fixed > 5 % of
  its maximum). A smooth diffeomorphism ``phi = exp(v)`` is drawn with numpy/scipy (Gaussian-smoothed
  noise velocity, integrated by scaling and squaring with ``scipy.ndimage.map_coordinates``; no
  torchalign code), the moving image is the source image resampled through ``phi^-1 = exp(-v)``
  (scipy, cubic), so the true fixed -> moving map is ``phi``. Same-contrast: the brain2d slice
  (``vxm_test_vol``), the MNI ICBM152 and Colin27 templates' mid-axial slices; cross-contrast: the
  ITK BrainWeb T1 slice as fixed and the aligned PD slice, deformed, as moving.
* **Inter-subject Dice** (brain2d ``l2r_subj1`` -> ``vxm_test``, both ways): mean Dice over the
  labels present in both slices, the moving labels pulled through the map (nearest neighbour).

Times are wall seconds (``s``) and process CPU seconds (``cpu``, all threads) of the call alone (no
file reading), with ``--threads`` torch threads; on a shared machine trust the CPU column.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

DATA = Path(os.environ.get("TORCHALIGN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


# ---- a known deformation, drawn and applied without torchalign ---------------------------------------
def draw_velocity(shape: tuple[int, ...], rms: float, sigma: float, seed: int) -> np.ndarray:
    """A smooth random velocity ``(D, *shape)`` in voxels: Gaussian noise smoothed by ``sigma`` voxels,
    scaled to an RMS length of ``rms`` voxels, tapered to zero over ``2 sigma`` at the borders."""
    rng = np.random.default_rng(seed)
    v = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma) for _ in shape])
    v *= rms / np.sqrt((v ** 2).sum(0).mean())
    taper = np.ones(shape)
    for axis, n in enumerate(shape):
        ramp = np.clip(np.minimum(np.arange(n), n - 1 - np.arange(n)) / (2 * sigma), 0, 1)
        taper *= ramp.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    return v * taper


def exponential(velocity: np.ndarray, steps: int = 8) -> np.ndarray:
    """Displacement ``(D, *S)`` (voxels) of ``exp(v)`` by scaling and squaring, linear interpolation."""
    grid = np.indices(velocity.shape[1:], dtype=np.float64)
    disp = velocity / 2 ** steps
    for _ in range(steps):
        points = grid + disp
        disp = disp + np.stack([ndimage.map_coordinates(c, points, order=1, mode="nearest") for c in disp])
    return disp


def deformed_pair(source: np.ndarray, rms: float, sigma: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(moving, true map displacement (D, *S))``: ``moving = source o exp(-v)``, so that the fixed ->
    moving map of ``(source, moving)`` is ``exp(v)``."""
    v = draw_velocity(source.shape, rms, sigma, seed)
    inverse = exponential(-v)
    moving = ndimage.map_coordinates(source, np.indices(source.shape) + inverse, order=3, mode="constant")
    return moving.astype(np.float32), exponential(v)


# ---- cases ---------------------------------------------------------------------------------------
def _png(name: str) -> np.ndarray:
    from PIL import Image as PILImage

    return np.asarray(PILImage.open(DATA / "multimodal" / "itk2d" / name).convert("F"), dtype=np.float32)


def _mid_axial(name: str) -> np.ndarray:
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(DATA / "templates" / name))
    data = img.get_fdata(dtype=np.float32)
    return np.ascontiguousarray(data[:, :, data.shape[2] // 2])


def known_cases(rms: float, sigma: float) -> dict[str, dict[str, Any]]:
    """Same- and cross-contrast pairs with a drawn map: ``fixed``, ``moving``, ``true`` (D, *S) voxels."""
    brain = np.load(DATA / "brain2d" / "brain2d_slice_z100_pairs.npz")["vxm_test_vol"]
    sources = {"brain2d-t1": (brain, brain), "mni-t1": (_mid_axial("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),) * 2,
               "colin27-t1": (_mid_axial("ch2.nii.gz"),) * 2,
               "itk-t1-pd": (_png("BrainT1Slice.png"), _png("BrainProtonDensitySlice.png"))}
    cases = {}
    for i, (name, (fixed, source)) in enumerate(sources.items()):
        moving, true = deformed_pair(source, rms, sigma, seed=100 + i)
        cases[name] = {"fixed": fixed, "moving": moving, "true": true, "cross": fixed is not source}
    return cases


def dice_cases() -> dict[str, dict[str, Any]]:
    d = np.load(DATA / "brain2d" / "brain2d_slice_z100_pairs.npz")
    a, b = ("vxm_test_vol", "vxm_test_seg"), ("l2r_subj1_vol", "l2r_subj1_seg")
    return {f"brain2d-{n}": {"fixed": d[f[0]], "moving": d[m[0]], "fixed_seg": d[f[1]], "moving_seg": d[m[1]],
                             "cross": False} for n, f, m in (("b-to-a", a, b), ("a-to-b", b, a))}


# ---- methods -------------------------------------------------------------------------------------
def _timed(call: Any) -> tuple[Any, float, float]:
    """``call()``'s value, wall seconds and process CPU seconds (all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = call()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def run_methods(case: dict[str, Any], finetune: int, model: Any,
                config: Any) -> dict[str, tuple[np.ndarray, float, float]]:
    """Each method's displacement ``(D, *S)`` (mm = voxels here), wall and CPU seconds."""
    import torch

    from torchalign.config import load_preset
    from torchalign.grid import Grid
    from torchalign.image import Image
    from torchalign.nn.inference import predict_pair
    from torchalign.registration import register

    grid = Grid(case["fixed"].shape)
    fixed = Image(torch.from_numpy(np.ascontiguousarray(case["fixed"], dtype=np.float32))[None], grid)
    moving = Image(torch.from_numpy(np.ascontiguousarray(case["moving"], dtype=np.float32))[None], grid)
    metric = "mi" if case["cross"] else "lncc"
    out: dict[str, tuple[np.ndarray, float, float]] = {}
    alone, wall, cpu = _timed(lambda: predict_pair(model, config, fixed, moving))
    out["network"] = (alone.displacement[0].numpy(), wall, cpu)
    tuned, wall, cpu = _timed(lambda: predict_pair(model, config, fixed, moving, finetune, metric=metric))
    out[f"network + {finetune} ft"] = (tuned.displacement[0].numpy(), wall, cpu)
    preset = load_preset("syn")
    if case["cross"]:
        preset = preset.model_copy(update={"stages": [s.model_copy(update={"metric": "mi", "metric_options": {}})
                                                      if s.transform == "syn" else s for s in preset.stages]})
    result, wall, cpu = _timed(lambda: register(fixed, moving, preset))
    with torch.no_grad():
        out["syn"] = (result.transform.displacement(grid)[0].numpy(), wall, cpu)
    return out


def map_error(disp: np.ndarray, true: np.ndarray, mask: np.ndarray) -> float:
    return float(np.sqrt(((disp - true) ** 2).sum(0))[mask].mean())


def mean_dice(fixed_seg: np.ndarray, moving_seg: np.ndarray, disp: np.ndarray) -> float:
    warped = ndimage.map_coordinates(moving_seg, np.indices(moving_seg.shape) + disp, order=0, mode="constant")
    labels = sorted((set(np.unique(fixed_seg)) & set(np.unique(moving_seg))) - {0})
    return float(np.mean([2 * ((fixed_seg == k) & (warped == k)).sum() / ((fixed_seg == k).sum() + (warped == k).sum())
                          for k in labels]))


def run(cases: list[str] | None, finetune: int, threads: int, rms: float, sigma: float) -> list[dict[str, Any]]:
    import torch

    from torchalign.nn.inference import load_model

    torch.set_num_threads(threads)
    model, config = load_model("synth2d")
    rows = []
    known = known_cases(rms, sigma)
    for name, case in {**known, **dice_cases()}.items():
        if cases and name not in cases:
            continue
        results = run_methods(case, finetune, model, config)
        if "true" in case:
            mask = case["fixed"] > 0.05 * case["fixed"].max()
            rows.append({"case": name, "score": "map error mm", "before": map_error(np.zeros_like(case["true"]),
                                                                                  case["true"], mask),
                         **{m: map_error(d, case["true"], mask) for m, (d, _, _) in results.items()},
                         **{f"{m} s": s for m, (_, s, _) in results.items()},
                         **{f"{m} cpu": c for m, (_, _, c) in results.items()}})
        else:
            rows.append({"case": name, "score": "Dice", "before": mean_dice(case["fixed_seg"], case["moving_seg"],
                                                                            np.zeros((2, *case["fixed"].shape))),
                         **{m: mean_dice(case["fixed_seg"], case["moving_seg"], d) for m, (d, _, _) in results.items()},
                         **{f"{m} s": s for m, (_, s, _) in results.items()},
                         **{f"{m} cpu": c for m, (_, _, c) in results.items()}})
        print(table([rows[-1]]).splitlines()[-1], flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    methods = [k for k in rows[0] if k not in ("case", "score", "before") and not k.endswith((" s", " cpu"))]
    head = ["case", "score", "before", *methods, *(f"{m} s" for m in methods), *(f"{m} cpu" for m in methods)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[k]) if isinstance(r[k], str) else f"{r[k]:.3f}" for k in head) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    parser.add_argument("--finetune", type=int, default=100, help="fine-tuning steps (default 100)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rms", type=float, default=3.0, help="RMS of the drawn velocity, voxels (default 3)")
    parser.add_argument("--sigma", type=float, default=10.0, help="smoothness of the drawn velocity, voxels")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = run(args.cases.split(",") if args.cases else None, args.finetune, args.threads, args.rms, args.sigma)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
