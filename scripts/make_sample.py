"""Build the small sample pair bundled for `torchalign demo` from ../shared/data/templates.

fixed  = FSL MNI152 1 mm (LAS) -> 2 mm, uint8.
moving = Colin27 "ch2" (RAS) -> 2 mm, uint8, with a known rigid offset (10 deg about z, 8 mm shift)
         folded into its header, so the demo has a misalignment to recover.
Both files come from the ANTsPy repository data (Apache-2.0). Run: python scripts/make_sample.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from torchalign.image import normalize_intensity
from torchalign.io import read_image, write_image
from torchalign.resample import resample

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "templates")
DST = Path(__file__).resolve().parents[1] / "src" / "torchalign" / "data"


def to_uint8_2mm(path: Path):
    img = read_image(path).float()
    small = resample(img, img.grid.downsample(2))
    data = normalize_intensity(small.data, 0.0, 99.8) * 255
    return small.with_data(data.round().to(torch.uint8))


def rigid_offset(angle_deg: float, shift_mm: tuple[float, float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    m = np.eye(4)
    m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    m[:3, 3] = shift_mm
    return m


def main() -> None:
    DST.mkdir(parents=True, exist_ok=True)
    fixed = to_uint8_2mm(SRC / "mni.nii.gz")
    moving = to_uint8_2mm(SRC / "ch2.nii.gz")
    moved = type(moving.grid)(moving.grid.shape, rigid_offset(10.0, (8.0, -6.0, 4.0)) @ moving.grid.world_from_voxel)
    moving = type(moving)(moving.data, moved, {})
    fixed = type(fixed)(fixed.data, fixed.grid, {})
    write_image(fixed, DST / "sample_fixed.nii.gz")
    write_image(moving, DST / "sample_moving.nii.gz")
    print("wrote", DST / "sample_fixed.nii.gz", DST / "sample_moving.nii.gz")


if __name__ == "__main__":
    main()
