"""Resample images onto a grid through an optional transform (fixed world -> moving world)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .functional.sampling import Interp, Padding, sample_world
from .grid import Grid
from .image import Image

PointMap = Callable[[Tensor], Tensor]


def resample(image: Image, onto: Grid, transform: PointMap | None = None, interp: Interp = "linear",
             padding: Padding = "zeros", chunk: int | None = None) -> Image:
    """Pull ``image`` onto the grid ``onto``: ``out(x) = image(T(x))`` for each voxel centre x of ``onto``.

    ``transform`` maps ``(B, *Q, D)`` world points of ``onto`` to the image's world (None = identity).
    Integer data stays integer for ``nearest``/``label`` interpolation.
    """
    if onto.ndim != image.ndim:
        raise ValueError(f"cannot resample a {image.ndim}-D image onto a {onto.ndim}-D grid")
    dtype = image.data.dtype if image.data.is_floating_point() else torch.float32
    # float64 points: nearest-neighbour rounding then agrees with ITK, which computes in double.
    points = onto.points(dtype=torch.float64, device=image.device).unsqueeze(0)
    if transform is not None:
        with torch.no_grad():
            points = transform(points)
    with torch.no_grad():
        data = sample_world(image.data if image.data.is_floating_point() or interp in ("nearest", "label")
                            else image.data.to(dtype), image.grid, points, interp, padding)
    return Image(data, onto, dict(image.meta))
