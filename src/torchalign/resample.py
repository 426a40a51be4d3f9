"""Resample images onto a grid through an optional transform (fixed world -> moving world)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .errors import InputError
from .functional.sampling import Interp, Padding, sample_world
from .grid import Grid
from .image import Image

PointMap = Callable[[Tensor], Tensor]


def resample(image: Image, onto: Grid, transform: PointMap | None = None, interp: Interp = "linear",
             padding: Padding = "zeros", chunk: int | None = None) -> Image:
    """Pull ``image`` onto the grid ``onto``: ``out(x) = image(T(x))`` for each voxel centre x of ``onto``.

    ``transform`` maps ``(B, N, D)`` world points of ``onto`` to the image's world (None = identity).
    ``chunk`` bounds the number of points transformed and sampled at once (memory); by default all.
    Integer data stays integer for ``nearest``/``label`` interpolation and becomes float32 otherwise.
    Returns an Image ``(B, C, *onto.shape)`` without gradients.
    """
    if onto.ndim != image.ndim:
        raise InputError(f"cannot resample a {image.ndim}-D image onto a {onto.ndim}-D grid")
    if chunk is not None and chunk < 1:
        raise InputError(f"chunk must be a positive number of points, got {chunk}")
    data = image.data
    if not data.is_floating_point() and interp not in ("nearest", "label"):
        data = data.float()
    # float64 points: nearest-neighbour rounding then agrees with ITK, which computes in double.
    points = onto.points(dtype=torch.float64, device=image.device).unsqueeze(0)
    with torch.no_grad():
        if chunk is None:  # points shaped as the grid: fields on ``onto`` are read without sampling
            out = sample_world(data, image.grid, points if transform is None else transform(points), interp, padding)
            return Image(out, onto, dict(image.meta))
        points = points.reshape(1, -1, onto.ndim)
        parts = []
        for start in range(0, points.shape[1], chunk):
            p = points[:, start:start + chunk]
            parts.append(sample_world(data, image.grid, p if transform is None else transform(p), interp, padding))
    out = torch.cat(parts, dim=2)
    return Image(out.reshape(*out.shape[:2], *onto.shape), onto, dict(image.meta))
