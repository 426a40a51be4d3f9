"""The rat-kidney stain pair (H&E fixed, pan-cytokeratin moving) with the moving image rotated by known angles."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from conftest import data_file
from PIL import Image as PILImage
from scipy import ndimage

from torchalign.grid import Grid
from torchalign.image import Image

KIDNEY = "landmarks/histology_rat_kidney/Rat-Kidney_{}.{}"


def load(stain: str, factor: int) -> tuple[Image, np.ndarray]:
    """RGB slide averaged over ``factor``-pixel blocks, world mm = original pixel units (x = column,
    y = row); and its first 69 landmarks ``(69, 2)`` in the same units (the ANHIR convention)."""
    rgb = np.asarray(PILImage.open(data_file(KIDNEY.format(stain, "jpg"))).convert("RGB"), np.float32)
    data = torch.from_numpy(rgb).permute(2, 1, 0)[None]  # (1, 3, X, Y)
    data = F.avg_pool2d(data, factor) if factor > 1 else data
    grid = Grid.from_geometry(data.shape[2:], spacing=(factor, factor), origin=((factor - 1) / 2,) * 2)
    points = np.loadtxt(data_file(KIDNEY.format(stain, "csv")), delimiter=",", skiprows=1)[:69, 1:]
    return Image(data.contiguous(), grid), points


def rotated(image: Image, points: np.ndarray, angle_deg: float) -> tuple[Image, np.ndarray]:
    """``image`` rotated by ``angle_deg`` about its grid centre with scipy, on a canvas grown to hold
    all of it and filled with the median of its border (the slide's white); ``points (N, 2)`` moved
    by the same map ``p -> R (p - c) + c``."""
    a = np.radians(angle_deg)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    spacing, c = image.grid.spacing[0], image.grid.center()
    shape = np.asarray(image.grid.shape)
    out_shape = np.ceil(np.abs(r) @ shape).astype(int)
    origin = c - spacing * (out_shape - 1) / 2
    # output voxel o -> world origin + s o -> input world R^-1 (w - c) + c -> input voxel (. - origin_in) / s
    offset = (r.T @ (origin - c) + c - image.grid.origin) / spacing
    data = image.data[0].numpy()
    out = []
    for channel in data:
        border = np.concatenate([channel[0], channel[-1], channel[:, 0], channel[:, -1]])
        out.append(ndimage.affine_transform(channel, r.T, offset, output_shape=tuple(out_shape), order=1,
                                            cval=float(np.median(border))))
    grid = Grid.from_geometry(tuple(out_shape), spacing=(spacing, spacing), origin=tuple(origin))
    return Image(torch.from_numpy(np.stack(out))[None], grid), (points - c) @ r.T + c


def landmark_error(matrix: np.ndarray, fixed_points: np.ndarray, moving_points: np.ndarray) -> float:
    """Mean distance between ``matrix`` applied to the fixed landmarks and the moving ones."""
    mapped = fixed_points @ matrix[:2, :2].T + matrix[:2, 2]
    return float(np.linalg.norm(mapped - moving_points, axis=1).mean())


def best_affine_error(fixed_points: np.ndarray, moving_points: np.ndarray) -> float:
    """Mean residual of the least-squares affine map fixed -> moving landmarks (numpy)."""
    x = np.c_[fixed_points, np.ones(len(fixed_points))]
    solution, *_ = np.linalg.lstsq(x, moving_points, rcond=None)
    return float(np.linalg.norm(x @ solution - moving_points, axis=1).mean())
