"""Shared fixtures: the real-data folder (skip with a reason when absent) and seeded RNGs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TORCHALIGN_DATA", REPO.parent / "shared" / "data"))


def run_cli(args: list, capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``torchalign ARGS`` in-process; (exit code, stdout, stderr) as the file descriptors saw them."""
    from torchalign.cli import main

    capfd.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    out, err = capfd.readouterr()
    return code, out, err


def data_file(relative: str) -> Path:
    """Path of a file under ../shared/data, skipping the test (with the reason) when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path} (set TORCHALIGN_DATA to ../shared/data)")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
