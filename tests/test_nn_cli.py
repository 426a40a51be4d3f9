"""``torchalign train`` and ``torchalign predict``: outputs, fine-tuning, and one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import data_file
from nn_synthetic import write_config, write_subjects

from torchalign.cli.predict import predict_cmd
from torchalign.cli.train import train_cmd
from torchalign.errors import InputError
from torchalign.io import read_image
from torchalign.io.transforms import read_displacement, read_linear
from torchalign.nn.checkpoint import save_checkpoint
from torchalign.nn.config import TrainConfig, load_train_config
from torchalign.nn.models import build_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A tiny dense model trained for 2 steps by the CLI, and its images."""
    root = tmp_path_factory.mktemp("nn_cli")
    paths = write_subjects(root / "data", 3)
    cfg = write_config(root / "train.yaml", {"folder": "data", "augment": {"rotate": 5, "flip": [0]}})
    result = CliRunner().invoke(train_cmd, [str(cfg), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output
    return root / "run" / "checkpoint.pt", paths


def test_predict_writes_the_outputs_of_register(trained: tuple[Path, list[Path]], tmp_path: Path) -> None:
    ckpt, paths = trained
    out = tmp_path / "out"
    result = CliRunner().invoke(predict_cmd, ["--model", str(ckpt), str(paths[0]), str(paths[1]), "-o", str(out),
                                              "--write-inverse", "--write-jacobian"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "result.json").read_text())
    assert doc["outputs"] == {"warped": "warped.nii.gz", "transform": "transform.txt", "result": "result.json",
                              "warp": "warp.nii.gz", "inverse_warp": "inverse_warp.nii.gz",
                              "jacobian": "jacobian.nii.gz"}
    assert {"predict", "load", "total"} <= set(doc["timings"]) and doc["peak_memory_mb"]["process_rss"] > 0
    assert doc["settings"]["model"]["head"] == "dense" and doc["model"] == str(ckpt)
    fixed = read_image(paths[0])
    warped = read_image(out / "warped.nii.gz")
    assert warped.grid.same_as(fixed.grid) and warped.data.dtype == torch.float32
    forward = read_displacement(out / "warp.nii.gz").field
    assert forward.shape == (1, 2, 20, 24) and float(read_image(out / "jacobian.nii.gz").data.min()) > 0
    # the inverse field undoes the forward one: x + u(x) + w(x + u(x)) = x (velocity model: exact inverse)
    inverse = read_displacement(out / "inverse_warp.nii.gz")
    assert torch.allclose(inverse.field, -forward, atol=0.05 * float(forward.abs().max()) + 1e-4)


def test_predict_finetune_lowers_the_loss(trained: tuple[Path, list[Path]], tmp_path: Path) -> None:
    ckpt, paths = trained
    out = tmp_path / "ft"
    result = CliRunner().invoke(predict_cmd, ["--model", str(ckpt), str(paths[0]), str(paths[2]), "-o", str(out),
                                              "--finetune", "15", "--lr", "0.2"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "result.json").read_text())
    losses = doc["stages"][0]["levels"][0]["losses"]
    assert len(losses) == 15 and min(losses) < 0.9 * losses[0]
    assert doc["finetune"] == {"steps": 15, "metric": "mse", "lr": 0.2, "grad_sigma": 2.0}
    assert doc["timings"]["finetune"] > 0


def test_affine_model_writes_an_itk_transform(tmp_path: Path) -> None:
    paths = write_subjects(tmp_path / "data", 2)
    config = TrainConfig.model_validate({"model": {"ndim": 2, "head": "affine", "features": [4, 8]},
                                         "loss": {"similarity": "ncc"}})
    model = build_model(config.model)
    torch.nn.init.normal_(model.head.mlp[-1].bias, std=1.0)  # a visibly non-identity prediction
    ckpt = save_checkpoint(tmp_path / "affine.pt", config, model)
    out = tmp_path / "out"
    result = CliRunner().invoke(predict_cmd, ["--model", str(ckpt), str(paths[0]), str(paths[1]), "-o", str(out),
                                              "--finetune", "3"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "result.json").read_text())
    assert set(doc["outputs"]) == {"warped", "transform", "result"}  # no field for an affine model
    assert np.allclose(read_linear(out / "transform.txt"), np.asarray(doc["matrix"]), atol=1e-6)
    assert not np.allclose(np.asarray(doc["matrix"]), np.eye(3), atol=1e-3)


def test_predict_errors_are_input_errors(trained: tuple[Path, list[Path]], tmp_path: Path) -> None:
    ckpt, paths = trained
    broken = tmp_path / "broken.pt"
    broken.write_bytes(ckpt.read_bytes()[:300])
    with pytest.raises(InputError, match="broken.pt: not a readable checkpoint"):
        predict_cmd.main(["--model", str(broken), str(paths[0]), str(paths[1]), "-o", str(tmp_path / "o")],
                         standalone_mode=False)
    write_subjects(tmp_path / "vol", 1, shape=(6, 7, 8))
    with pytest.raises(InputError, match="registers 2-D images; got a 3-D fixed"):
        predict_cmd.main(["--model", str(ckpt), str(tmp_path / "vol" / "img0.nii.gz"), str(paths[1]),
                          "-o", str(tmp_path / "o")], standalone_mode=False)
    inside = tmp_path / "o2"
    inside.mkdir()
    fixed = inside / "warped.nii.gz"
    fixed.write_bytes(paths[0].read_bytes())
    with pytest.raises(InputError, match="already holds"):
        predict_cmd.main(["--model", str(ckpt), str(fixed), str(paths[1]), "-o", str(inside)], standalone_mode=False)
    with pytest.raises(InputError, match="holds the input"):
        predict_cmd.main(["--model", str(ckpt), str(fixed), str(paths[1]), "-o", str(inside), "--overwrite"],
                         standalone_mode=False)
    assert fixed.read_bytes() == paths[0].read_bytes()


def test_train_config_errors_name_the_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "bad.yaml", {"folder": "data"}, learning_rate=0.1)
    with pytest.raises(InputError, match=r"bad.yaml: invalid training configuration: learning_rate: Extra inputs"):
        load_train_config(cfg)
    cfg = write_config(tmp_path / "nodata.yaml", {"folder": "data"})
    data = yaml.safe_load(cfg.read_text())
    del data["data"]
    cfg.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(train_cmd, [str(cfg)])
    assert result.exit_code == 2 and "needs a `data` section" in result.output
    cfg = write_config(tmp_path / "dice.yaml", {"folder": "data"}, loss={"dice": 1.0})
    with pytest.raises(InputError, match="needs the list of `labels`"):
        load_train_config(cfg)
    cfg = write_config(tmp_path / "two.yaml", {"folder": "data", "csv": "x.csv"})
    with pytest.raises(InputError, match="exactly one of `folder`, `csv` and `synth`"):
        load_train_config(cfg)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_bundled_synth2d_registers_a_real_slice_out_of_the_box(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``--model synth2d`` needs no file and no training: the model ships in the package, loads with
    ``weights_only=True``, and on a real brain slice it never saw (it was trained on synthetic images
    only), deformed by a smooth map drawn with scipy, it recovers most of that map. Catches a model
    missing from the package data, an unsafe checkpoint, a field in the wrong direction or units, and
    outputs that differ from ``register``'s."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from learned import deformed_pair

    from torchalign.grid import Grid
    from torchalign.image import Image
    from torchalign.io import write_image
    from torchalign.nn import register_network
    from torchalign.nn.inference import bundled_models, resolve_model

    assert "synth2d" in bundled_models()
    torch.load(resolve_model("synth2d"), weights_only=True)
    source = np.load(data_file("brain2d/brain2d_slice_z100_pairs.npz"))["vxm_test_vol"]
    moving, true = deformed_pair(source, rms=3.0, sigma=10.0, seed=7)
    grid = Grid(source.shape)
    write_image(Image(torch.from_numpy(source)[None], grid), tmp_path / "fixed.nii.gz")
    write_image(Image(torch.from_numpy(moving)[None], grid), tmp_path / "moving.nii.gz")
    out = tmp_path / "out"
    result = CliRunner().invoke(predict_cmd, ["--model", "synth2d", str(tmp_path / "fixed.nii.gz"),
                                              str(tmp_path / "moving.nii.gz"), "-o", str(out), "--write-inverse",
                                              "--write-jacobian"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"warped.nii.gz", "transform.txt", "result.json", "warp.nii.gz",
                                               "inverse_warp.nii.gz", "jacobian.nii.gz"}
    field = read_displacement(out / "warp.nii.gz").field[0].numpy()
    result = register_network(read_image(tmp_path / "fixed.nii.gz"), read_image(tmp_path / "moving.nii.gz"))
    with torch.no_grad():  # the Python API gives the CLI's map
        assert np.allclose(result.transform.displacement(grid)[0].numpy(), field, atol=1e-4)
    head = source > 0.05 * source.max()
    error = np.sqrt(((field - true) ** 2).sum(0))[head].mean()
    before = np.sqrt((true ** 2).sum(0))[head].mean()
    print(f"synth2d alone on a drawn map: mean error {error:.2f} mm (before {before:.2f} mm)")
    assert error < 0.6 * before
    with pytest.raises(InputError, match="--model nosuch: no such checkpoint file or bundled model .*synth2d"):
        predict_cmd.main(["--model", "nosuch", str(tmp_path / "fixed.nii.gz"), str(tmp_path / "moving.nii.gz"),
                          "-o", str(tmp_path / "o")], standalone_mode=False)
