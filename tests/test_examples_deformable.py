"""The deformable examples run end to end (``--quick``) and write a non-empty PNG figure."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, data_file

EXAMPLES = {
    "mnist_ffd.py": ("mnist_ffd.png", "digits/mnist_t10k.npz"),
    "svffd_inverse.py": ("svffd_inverse.png", "brain2d/brain2d_slice_z100_pairs.npz"),
    "circle_to_c.py": ("circle_to_c.png", None),  # synthetic images
}


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example_writes_png(script: str, tmp_path: Path) -> None:
    png, data = EXAMPLES[script]
    args = [sys.executable, str(REPO / "examples" / script), "-o", str(tmp_path), "--quick"]
    if data is not None:
        args += ["--data", str(data_file(data))]
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    # about 5-10 s of CPU each; the limit is generous for loaded CI machines
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / png
    assert out.exists() and out.stat().st_size > 10_000, proc.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
