"""Acceptance of the learned path on real data (slow), with fast smoke versions in the default suite.

* MNIST (one digit class, train/test split): a dense network halves the test MSE without folding;
  an affine network lowers it below 75 %.
* 2-D brain slices: a network fine-tuned on the pair reaches the Dice of the classical ``syn``.
* 3-D: ``predict`` on a 160x192x224 pair runs on the CPU; time and peak memory are reported.
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
from torchalign.nn.checkpoint import model_from_checkpoint, save_checkpoint
from torchalign.nn.config import TrainConfig
from torchalign.nn.data import PairDataset, Subject
from torchalign.nn.inference import predict_pair
from torchalign.nn.models import build_model
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


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_brain2d_finetuned_network_reaches_the_dice_of_classical_syn(tmp_path: Path) -> None:
    """Train on other axial slices of the two brains (z = 70..90 and 110..130), then predict the
    z = 100 pair with per-pair fine-tuning and compare with ``register(preset="syn")``."""
    import nibabel as nib

    pairs = np.load(data_file("brain2d/brain2d_slice_z100_pairs.npz"))
    volumes = [nib.load(data_file(f"brain3d/subject_{s}_t1.nii.gz")).get_fdata(dtype=np.float32) for s in "ab"]
    grid = Grid((160, 192))
    subjects = [Subject(Image(torch.from_numpy(np.ascontiguousarray(v[:, :, z]))[None], grid))
                for v in volumes for z in range(70, 135, 5) if abs(z - 100) > 5]
    config = TrainConfig.model_validate({
        "model": {"ndim": 2, "features": [16, 32, 32, 32]},
        "loss": {"similarity": "lncc", "similarity_options": {"radius": 7},
                 "regularisers": [{"name": "diffusion", "weight": 0.3}]},
        "output": str(tmp_path / "run"), "batch_size": 4, "max_steps": 300, "epochs": 10**6, "tensorboard": False})
    ckpt = train(config, PairDataset(subjects, "random")).checkpoint
    model, stored = model_from_checkpoint(ckpt)
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
    assert network >= classical


@pytest.mark.slow
def test_predict_3d_volume_on_cpu_reports_time_and_memory(tmp_path: Path) -> None:
    fixed, moving = data_file("brain3d/subject_a_t1.nii.gz"), data_file("brain3d/subject_b_t1.nii.gz")
    config = TrainConfig.model_validate({"model": {"ndim": 3, "features": [8, 16, 16, 16]}, "tensorboard": False})
    torch.manual_seed(0)
    model = build_model(config.model)
    torch.nn.init.normal_(model.head.conv.weight, std=1e-3)  # an untrained but non-trivial prediction
    ckpt = save_checkpoint(tmp_path / "net3d.pt", config, model)
    out = tmp_path / "out"
    code = "import sys; from torchalign.cli.predict import predict_cmd; predict_cmd(sys.argv[1:])"
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, "--model", str(ckpt), str(fixed), str(moving), "-o", str(out)],
                          check=False, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    wall = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((out / "result.json").read_text())
    print(f"3-D predict 160x192x224 on CPU: network {doc['timings']['predict']:.1f} s, total {doc['timings']['total']:.1f} s "
          f"(process wall {wall:.1f} s), peak RSS {doc['peak_memory_mb']['process_rss']:.0f} MiB")
    assert read_image(out / "warped.nii.gz").grid.shape == (160, 192, 224)
    assert doc["jacobian"]["fold_percent"] == 0.0
