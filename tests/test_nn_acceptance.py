"""Acceptance of the learned path on real data (slow), with fast smoke versions in the default suite.

* MNIST (one digit class, train/test split): a dense network halves the test MSE without folding;
  an affine network lowers it below 75 %.
* 2-D brain slices: a network trained on other brains (template slices), fine-tuned on the pair,
  reaches the Dice of the classical ``syn``.
* The bundled ``synth2d`` (synthetic training only) on unseen real pairs: ``benchmarks/learned.py``
  (what it achieves is asserted; the issue's unmet targets for the network alone are a strict xfail).
* 3-D: a network trained on synthetic 3-D pairs predicts a 160x192x224 pair on the CPU; time and
  peak memory are reported.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import data_file

from torchalign.config import load_preset
from torchalign.functional.jacobian import jacobian_det
from torchalign.grid import Grid
from torchalign.image import Image
from torchalign.io import read_image
from torchalign.metrics import dice
from torchalign.nn.checkpoint import load_checkpoint, model_from_checkpoint
from torchalign.nn.config import TrainConfig
from torchalign.nn.data import PairDataset, Subject
from torchalign.nn.inference import predict_pair
from torchalign.nn.train import train
from torchalign.registration import register
from torchalign.resample import resample
from torchalign.transforms.dense import DenseDisplacement

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))


def _example(name: str, out: Path, *args: str) -> dict:
    module = __import__(name)
    return module.main(["--data", str(data_file("digits/mnist_t10k.npz")), "-o", str(out), *args])


@pytest.mark.usefixtures("examples")
@pytest.mark.parametrize("name", ["mnist_dense_net", "mnist_affine_net"])
def test_mnist_examples_smoke(name: str, tmp_path: Path) -> None:
    result = _example(name, tmp_path, "--steps", "2", "--batch-size", "4", "--test-pairs", "4")
    assert result["steps"] == 2 and result["pairs"] == 4 and result["mse_before"] > 0
    assert (tmp_path / "figure.png").stat().st_size > 1000
    assert json.loads((tmp_path / "metrics.json").read_text())["mse_ratio"] == result["mse_ratio"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.usefixtures("examples")
def test_mnist_dense_network_halves_the_test_mse_without_folding(tmp_path: Path) -> None:
    result = _example("mnist_dense_net", tmp_path)
    assert result["mse_ratio"] < 0.5
    assert result["folding"] < 0.005


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.usefixtures("examples")
def test_mnist_affine_network_lowers_the_test_mse_below_75_percent(tmp_path: Path) -> None:
    result = _example("mnist_affine_net", tmp_path)
    assert result["mse_ratio"] < 0.75


def _mean_dice(fixed: np.ndarray, warped: np.ndarray, labels: list[int]) -> float:
    return float(np.mean([dice(fixed == k, warped == k) for k in labels]))


def _template_slices() -> list[Subject]:
    """Axial 1 mm slices of the brain templates (MNI ICBM152, Colin27, FSL MNI152), centre-cropped to
    the brain2d grid: other brains than the brain2d subjects, for training only."""
    import nibabel as nib

    grid = Grid((160, 192))
    subjects = []
    for name in ("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", "ch2.nii.gz", "mni.nii.gz"):
        volume = nib.as_closest_canonical(nib.load(data_file(f"templates/{name}"))).get_fdata(dtype=np.float32)
        x0, y0 = (volume.shape[0] - 160) // 2, (volume.shape[1] - 192) // 2
        for z in range(volume.shape[2] // 2 - 20, volume.shape[2] // 2 + 21, 5):
            data = np.ascontiguousarray(volume[x0:x0 + 160, y0:y0 + 192, z])
            subjects.append(Subject(Image(torch.from_numpy(data)[None], grid)))
    return subjects


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_brain2d_network_trained_on_other_brains_reaches_syn_after_finetuning(tmp_path: Path) -> None:
    """Train on slices of three brain templates (held-out validation slices, best checkpoint), then
    register the brain2d pair, two subjects no training saw, with per-pair fine-tuning, and compare
    with ``register(preset="syn")`` on label Dice. Catches a network that only works on the brains
    it was trained on, a best checkpoint that is not written, and fine-tuning that falls short of
    the classical optimiser started from scratch."""
    pairs = np.load(data_file("brain2d/brain2d_slice_z100_pairs.npz"))
    grid = Grid((160, 192))
    config = TrainConfig.model_validate({
        "model": {"ndim": 2, "features": [16, 32, 32, 32], "stride": 2},
        "loss": {"similarity": "lncc", "similarity_options": {"radius": 7},
                 "regularisers": [{"name": "diffusion", "weight": 0.3}]},
        "output": str(tmp_path / "run"), "batch_size": 4, "epochs": 40, "lr": 2e-3, "tensorboard": False,
        "schedule": {"name": "cosine", "min_lr": 2e-4}})
    subjects = _template_slices()
    validation = PairDataset(subjects[::6], "all")
    summary = train(config, PairDataset([s for i, s in enumerate(subjects) if i % 6], "random"), validation)
    assert summary.best is not None and summary.best.is_file()
    model, stored = model_from_checkpoint(summary.best)
    fixed = Image(torch.from_numpy(pairs["vxm_test_vol"])[None], grid)
    moving = Image(torch.from_numpy(pairs["l2r_subj1_vol"])[None], grid)
    fixed_seg, moving_seg = pairs["vxm_test_seg"], pairs["l2r_subj1_seg"]
    labels = sorted((set(np.unique(fixed_seg)) & set(np.unique(moving_seg))) - {0})
    moving_labels = Image(torch.from_numpy(moving_seg.astype(np.int64))[None], grid)

    def dice_of(transform: object) -> float:
        warped = resample(moving_labels, grid, transform, interp="nearest").data[0, 0].numpy()
        return _mean_dice(fixed_seg, warped, labels)

    def folding(disp: torch.Tensor) -> float:
        return float((jacobian_det(disp, grid) <= 0).float().mean())

    alone = predict_pair(model, stored, fixed, moving).displacement
    t0 = time.perf_counter()
    tuned = predict_pair(model, stored, fixed, moving, finetune_steps=200).displacement
    network_seconds = time.perf_counter() - t0
    network = dice_of(DenseDisplacement.from_field(tuned, grid))
    t0 = time.perf_counter()
    syn = register(fixed, moving, load_preset("syn")).transform
    classical = dice_of(syn)
    classical_seconds = time.perf_counter() - t0
    with torch.no_grad():
        syn_folding = folding(syn.displacement(grid))
    print(f"brain2d mean Dice over {len(labels)} labels: before {_mean_dice(fixed_seg, moving_seg, labels):.3f}; "
          f"network alone {dice_of(DenseDisplacement.from_field(alone, grid)):.3f}; network + 200 fine-tuning steps "
          f"{network:.3f} (folding {folding(tuned):.4%}, {network_seconds:.1f} s); classical syn {classical:.3f} "
          f"(folding {syn_folding:.4%}, {classical_seconds:.1f} s)")
    assert network >= classical - 0.01


@pytest.fixture(scope="module")
def learned_rows() -> list[dict]:
    """``benchmarks/learned.py`` on every case: real slices no training saw (the bundled model saw
    synthetic images only); drawn maps mono- and cross-contrast; inter-subject Dice."""
    import sys as _sys

    _sys.path.insert(0, str(EXAMPLES.parent / "benchmarks"))
    try:
        from learned import main
    finally:
        _sys.path.remove(str(EXAMPLES.parent / "benchmarks"))
    return main(["--finetune", "100", "--threads", "1"])


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_bundled_synth2d_fast_and_finetuned_to_syn_accuracy(learned_rows: list[dict]) -> None:
    """What the bundled model achieves on unseen real pairs: the network alone under 1 s of CPU per
    pair and below 0.6x the drawn map's error on same-contrast pairs; with 100 fine-tuning steps,
    a map error at most classical ``syn``'s (+10 %) and Dice within 0.03 of it. Catches a slower or
    less accurate model, or fine-tuning that no longer reaches the classical optimiser."""
    for r in learned_rows:
        tuned = r["network + 100 ft"]
        assert r["network cpu"] < 1.0, r  # process CPU seconds: wall time is unreliable on a shared machine
        if r["score"] == "Dice":
            assert tuned >= r["syn"] - 0.03 and r["network"] > r["before"], r
        else:
            assert tuned <= 1.1 * r["syn"], r
            if r["case"] != "itk-t1-pd":
                assert r["network"] < 0.61 * r["before"], r


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.xfail(strict=True, reason="measured 2026-12-06: the network alone is 2.0-2.8x syn's map error on "
                                       "same-contrast pairs and worse than no registration on T1-PD (3.15 vs "
                                       "2.30 mm): 128 training steps were what these CPUs allowed")
def test_bundled_synth2d_alone_meets_the_issue_targets(learned_rows: list[dict]) -> None:
    """The issue's done-when targets for the network alone, mono- and cross-contrast: map error at most
    1.5x classical ``syn``'s and below 0.6x the drawn map's. Strict xfail: it fails the suite the
    day a better-trained model meets them, so the marker gets removed."""
    for r in learned_rows:
        if r["score"] != "Dice":
            assert r["network"] <= 1.5 * r["syn"] and r["network"] < 0.6 * r["before"], r


@pytest.mark.slow
def test_predict_3d_volume_on_cpu_reports_time_and_memory(tmp_path: Path) -> None:
    """A 3-D network trained (briefly, through ``train``) on synthetic 3-D pairs at 4 mm registers the
    160x192x224 brain pair on the CPU: the outputs of ``register``, no folding, time and peak memory
    reported. Catches 3-D paths (synthesis, network spacing, integration, output writing) that only
    work in 2-D, and a predict whose memory or time grows out of bounds."""
    fixed, moving = data_file("brain3d/subject_a_t1.nii.gz"), data_file("brain3d/subject_b_t1.nii.gz")
    config = TrainConfig.model_validate({
        "model": {"ndim": 3, "features": [8, 16, 16], "spacing": 4.0},
        "data": {"synth": {"shape": [24, 24, 24], "spacing": 4.0, "pairs": 8, "labels": 8, "label_scale": [3, 6],
                           "deform": 6.0, "deform_scale": 6, "same_contrast": 0.5}},
        "loss": {"similarity_weight": 0.0, "dice": 1.0, "labels": list(range(8)), "supervised": 0.02,
                 "regularisers": [{"name": "diffusion", "weight": 0.1}]},
        "output": str(tmp_path / "run"), "batch_size": 2, "epochs": 10, "lr": 3e-3, "tensorboard": False})
    summary = train(config)
    assert summary.steps == 40 and float(load_checkpoint(summary.checkpoint)["state_dict"]["head.conv.weight"]
                                         .abs().max()) > 1e-3  # trained away from the near-zero start
    out = tmp_path / "out"
    code = "import sys; from torchalign.cli.predict import predict_cmd; predict_cmd(sys.argv[1:])"
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, "--model", str(summary.checkpoint), str(fixed), str(moving),
                           "-o", str(out)], check=False, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    wall = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((out / "result.json").read_text())
    print(f"3-D predict 160x192x224 on CPU: network {doc['timings']['predict']:.1f} s, total {doc['timings']['total']:.1f} s "
          f"(process wall {wall:.1f} s), peak RSS {doc['peak_memory_mb']['process_rss']:.0f} MiB")
    assert read_image(out / "warped.nii.gz").grid.shape == (160, 192, 224)
    assert float(read_image(out / "jacobian.nii.gz").data.min()) > 0
    assert read_image(out / "inverse_warp.nii.gz").grid.shape == (160, 192, 224)
