"""Transforms read from files: a fixed displacement field, and chains of matrices and fields."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..functional.flow import invert_field, sample_field
from ..grid import Grid
from ..io.transforms import ChainItem, Displacement
from .base import Compose, SpatialTransform
from .dense import grid_fast_path
from .linear import MatrixTransform


class FieldTransform(SpatialTransform):
    """``T(x) = x + u(x)`` for a fixed displacement field ``u (B, D, *S)`` (RAS mm) on ``grid``."""

    def __init__(self, field: Tensor, grid: Grid):
        super().__init__(grid.ndim, field.shape[0])
        self.grid = grid
        self.register_buffer("field", field)

    def forward(self, points: Tensor) -> Tensor:
        if grid_fast_path(points, self.grid):  # its own voxel centres: the field itself
            return points + self.field.movedim(1, -1).to(points.dtype)
        return points + sample_field(self.field.to(points.dtype), self.grid, points)

    def select(self, index: int) -> FieldTransform:
        return FieldTransform(self.field[index:index + 1], self.grid)

    def inverse(self) -> FieldTransform:
        """Inverse by fixed-point iteration on the same grid (the residual is in ``self.residual``)."""
        inv, residual = invert_field(self.field, self.grid)
        out = FieldTransform(inv, self.grid)
        out.residual = residual
        return out


def chain_transform(chain: Sequence[ChainItem]) -> SpatialTransform:
    """Compose items of :func:`torchalign.io.transforms.read_transform_chain` in ANTs order (the first
    item is applied to the points first)."""
    parts: list[SpatialTransform] = []
    for item in chain:
        if isinstance(item, Displacement):
            parts.append(FieldTransform(item.field, item.grid))
        else:
            parts.append(MatrixTransform(torch.as_tensor(np.asarray(item, dtype=np.float64))))
    return parts[0] if len(parts) == 1 else Compose(*parts)
