"""Pairs for the batch tests: small 2-D NIfTI pairs cut from the real brain slices (brain2d).

Three slices (two subjects and an atlas) at 2 mm (80 x 96). Even pairs register a slice to itself
under a random rigid change of the moving header (known truth: landmarks give the TRE); odd pairs
register one slice to another (label maps give Dice), again with a rigid header change. So every
pair is distinct, and several pairs share a fixed file.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from conftest import data_file

from torchalign.batch import JobSettings
from torchalign.config import resolve_config
from torchalign.io.points import write_points

NAMES = ("vxm_test", "l2r_subj1", "atlas2d")
FAST_CONFIG = """\
init: com
stages:
  - transform: rigid
    metric: mse
    lr: 0.2
    levels:
      - {shrink: 2, sigma: 1, iterations: 25}
"""


def _affine(angle_deg: float = 0.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A 2 mm NIfTI affine, rotated by ``angle_deg`` about the slice centre and shifted (mm)."""
    base = np.diag([2.0, 2.0, 1.0, 1.0])
    base[:2, 3] = [-79.0, -95.0]  # voxel (39.5, 47.5) at the world origin
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    rigid = np.eye(4)
    rigid[:2, :2] = [[c, -s], [s, c]]
    rigid[:2, 3] = shift
    return rigid @ base


def _slices() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    d = np.load(data_file("brain2d/brain2d_slice_z100_pairs.npz"))
    out = {}
    for name in NAMES:
        vol = d[f"{name}_vol"].astype(np.float32)
        vol = vol.reshape(80, 2, 96, 2).mean(axis=(1, 3))
        out[name] = (vol, d[f"{name}_seg"][::2, ::2].astype(np.int16))
    return out


def make_pairs(folder: Path, count: int, seed: int = 0) -> Path:
    """Write ``count`` distinct pairs (images, labels or landmarks) and their ``pairs.csv`` into ``folder``."""
    rng = np.random.default_rng(seed)
    slices = _slices()
    folder.mkdir(parents=True, exist_ok=True)
    for name, (vol, seg) in slices.items():
        nib.save(nib.Nifti1Image(vol, _affine()), folder / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(seg, _affine()), folder / f"{name}_seg.nii.gz")
    landmarks = np.array([[-30.0, -40.0], [25.0, -35.0], [0.0, 10.0], [-20.0, 45.0], [30.0, 40.0]])
    rows = []
    for i in range(count):
        fixed = NAMES[i % 3]
        moving = fixed if i % 2 == 0 else NAMES[(i % 3 + 1 + (i // 2) % 2) % 3]
        angle, shift = rng.uniform(-8, 8), tuple(rng.uniform(-6, 6, size=2))
        header = _affine(angle, shift)
        vol, seg = slices[moving]
        nib.save(nib.Nifti1Image(vol, header), folder / f"moving{i:02d}.nii.gz")
        row = {"id": f"p{i:02d}", "fixed": f"{fixed}.nii.gz", "moving": f"moving{i:02d}.nii.gz"}
        if moving == fixed:
            truth = header @ np.linalg.inv(_affine())  # moving world from fixed world
            write_points(landmarks, folder / f"fixed{i:02d}.csv", space="lps")
            write_points(landmarks @ truth[:2, :2].T + truth[:2, 3], folder / f"moving{i:02d}.csv", space="lps")
            row.update(fixed_points=f"fixed{i:02d}.csv", moving_points=f"moving{i:02d}.csv")
        else:
            nib.save(nib.Nifti1Image(seg, header), folder / f"moving{i:02d}_seg.nii.gz")
            row.update(fixed_labels=f"{fixed}_seg.nii.gz", moving_labels=f"moving{i:02d}_seg.nii.gz")
        rows.append(row)
    columns = ["id", "fixed", "moving", "fixed_labels", "moving_labels", "fixed_points", "moving_points"]
    with open(folder / "pairs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows(rows)
    (folder / "fast.yaml").write_text(FAST_CONFIG)
    return folder / "pairs.csv"


def test_pairs_are_distinct_and_share_fixed_files(tmp_path: Path) -> None:
    csv_path = make_pairs(tmp_path, 12)
    rows = list(csv.DictReader(csv_path.read_text().splitlines()))
    assert len(rows) == 12 and len({r["id"] for r in rows}) == 12
    assert len({r["fixed"] for r in rows}) == 3
    headers = [nib.load(tmp_path / r["moving"]).affine for r in rows]
    assert all(not np.allclose(a, b) for k, a in enumerate(headers) for b in headers[k + 1:])
    same = [r for r in rows if r["fixed_points"]]
    other = [r for r in rows if r["fixed_labels"]]
    assert len(same) == 6 and len(other) == 6
    data = lambda name: np.asarray(nib.load(tmp_path / name).dataobj)
    assert all(not np.array_equal(data(r["fixed"]), data(r["moving"])) for r in other)
    assert all(np.array_equal(data(r["fixed"]), data(r["moving"])) for r in same)
    assert len({(r["fixed"], r["moving_labels"] and data(r["moving"]).sum()) for r in other}) > 3


def fast_settings(folder: Path, **options: Any) -> JobSettings:
    """Settings of the fast rigid config written by :func:`make_pairs`, one torch thread per pair."""
    return JobSettings(resolve_config(None, folder / "fast.yaml"), torch_threads=1, **options)


def matrices(outdir: Path, ids: list[str]) -> np.ndarray:
    """The ``matrix`` of each pair's ``result.json``, stacked."""
    return np.array([json.loads((outdir / i / "result.json").read_text())["matrix"] for i in ids])


def mtimes(outdir: Path) -> dict[str, int]:
    """Modification times (ns) of every file under ``outdir``'s pair folders."""
    return {str(p.relative_to(outdir)): p.stat().st_mtime_ns for p in sorted(outdir.glob("*/*")) if p.is_file()}


def corrupt(path: Path) -> None:
    """Truncate a file to half its size (a broken download)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
