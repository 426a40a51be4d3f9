"""Checkpoints: round trip, and clear refusals of corrupted, foreign and code-carrying files."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from torchalign.errors import InputError
from torchalign.grid import Grid
from torchalign.nn.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from torchalign.nn.config import TrainConfig
from torchalign.nn.models import build_model

CONFIG = TrainConfig.model_validate({"model": {"ndim": 2, "features": [4, 8]}, "tensorboard": False})


def _saved(tmp_path: Path) -> Path:
    model = build_model(CONFIG.model)
    torch.nn.init.normal_(model.head.conv.weight, std=0.1)
    opt = torch.optim.Adam(model.parameters())
    return save_checkpoint(tmp_path / "ckpt.pt", CONFIG, model, opt, epoch=3, step=17)


def test_round_trip_rebuilds_the_same_model(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    state = load_checkpoint(path)
    assert (state["epoch"], state["step"]) == (3, 17) and state["optimizer"] is not None
    model, config = model_from_checkpoint(path)
    assert config == CONFIG and not model.training
    reference = build_model(CONFIG.model)
    reference.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    x, y = torch.rand(1, 1, 9, 10), torch.rand(1, 1, 9, 10)
    with torch.no_grad():
        a = model(x, y, Grid((9, 10))).displacement(Grid((9, 10)))
        b = reference(x, y, Grid((9, 10))).displacement(Grid((9, 10)))
    assert torch.equal(a, b)
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file


def test_truncated_and_garbage_files_are_reported_as_corrupted(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "noise.pt").write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(InputError, match="noise.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "noise.pt")
    with pytest.raises(InputError, match="missing.pt: no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_foreign_torch_files_are_refused(tmp_path: Path) -> None:
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(InputError, match=r"other.pt: not a torchalign checkpoint .*\['model'\]"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(InputError, match="not a torchalign checkpoint"):
        load_checkpoint(tmp_path / "tensor.pt")
    state = torch.load(_saved(tmp_path), weights_only=True)
    torch.save({**state, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(InputError, match="version 99 is not supported"):
        load_checkpoint(tmp_path / "future.pt")
    state["state_dict"] = {k: v[..., :1] for k, v in state["state_dict"].items()}
    torch.save(state, tmp_path / "mismatch.pt")
    with pytest.raises(InputError, match="mismatch.pt: weights do not match the stored model config"):
        model_from_checkpoint(tmp_path / "mismatch.pt")
    state["config"]["model"]["unknown"] = 1
    torch.save(state, tmp_path / "badconfig.pt")
    with pytest.raises(InputError, match=r"badconfig.pt \(stored config\).*model.unknown"):
        model_from_checkpoint(tmp_path / "badconfig.pt")


class _Payload:
    """Unpickling this runs code (writes a marker file): what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    state = {"format": "torchalign-checkpoint", "version": 1, "config": {}, "state_dict": {}, "epoch": 0,
             "step": 0, "payload": _Payload(marker)}
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(InputError, match=r"evil.pt: refused: the file holds pickled objects .*GLOBAL .*exec"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(state))  # a bare pickle, not even a torch file
    with pytest.raises(InputError, match="evil.pkl: not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.pkl")
    assert not marker.exists()
    # the unsafe loaders would indeed have run it
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.read_text() == "pwned"
    marker.unlink()
    pickle.loads((tmp_path / "evil.pkl").read_bytes())
    assert marker.exists()
