"""A learnable dense displacement field (world mm), optionally coarser than the image grid."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..functional.flow import InversionResidual, invert_field, resample_field, sample_field
from ..grid import Grid
from .base import SpatialTransform


def strided_grid(grid: Grid, stride: int | Sequence[int]) -> Grid:
    """``grid`` shrunk by an integer ``stride`` per axis (same extent); ``grid`` itself for stride 1."""
    strides = [int(s) for s in (stride if isinstance(stride, Sequence) else [stride] * grid.ndim)]
    if len(strides) != grid.ndim or any(s < 1 for s in strides):
        raise InputError(f"stride must be a positive integer or one per axis, got {stride!r}")
    return grid if all(s == 1 for s in strides) else grid.downsample(strides)


def on_grid(points: Tensor, grid: Grid, atol: float = 1e-4) -> bool:
    """Whether ``points (B, *S, D)`` are the voxel centres of ``grid`` to within ``atol`` mm."""
    d = grid.ndim
    if points.ndim != d + 2 or tuple(points.shape[1:-1]) != grid.shape or points.shape[-1] != d:
        return False
    m = torch.tensor(grid.world_from_voxel, dtype=points.dtype, device=points.device)
    # points - origin - sum_k index_k * column_k, one broadcast subtraction per axis (no matmul)
    diff = points.detach() - m[:d, d]
    for k, n in enumerate(grid.shape):
        steps = torch.arange(n, dtype=points.dtype, device=points.device)[:, None] * m[:d, k]
        diff.sub_(steps.reshape(*[1] * k, n, *[1] * (d - 1 - k), d))
    return float(diff.abs_().amax()) <= atol


def grid_fast_path(points: Tensor, grid: Grid) -> bool:
    """Whether a transform may evaluate ``points`` as the voxel centres of ``grid`` (no sampling).

    Only for points that carry no gradient: the shortcut returns values at the voxel centres, so
    it has no derivative with respect to the points.
    """
    return not points.requires_grad and on_grid(points, grid)


class DenseDisplacement(SpatialTransform):
    """``T(x) = x + u(x)`` with ``u`` a learnable ``(B, D, *S')`` field, linearly interpolated.

    ``S'`` is the image grid shrunk by ``stride`` (the field grid keeps the image's extent); outside
    the field grid the edge value is used. ``field`` initialises it (default zeros).
    """

    def __init__(self, grid: Grid, stride: int | Sequence[int] = 1, batch: int = 1, field: Tensor | None = None):
        super().__init__(grid.ndim, batch if field is None else field.shape[0])
        self.grid = grid
        self.field_grid = strided_grid(grid, stride)
        shape = (self.batch, grid.ndim, *self.field_grid.shape)
        if field is None:
            field = torch.zeros(shape)
        elif tuple(field.shape) != shape or not field.is_floating_point():
            raise InputError(f"field must be a floating-point tensor of shape {shape}, got {tuple(field.shape)}")
        self.field = nn.Parameter(field)
        # set by inverse(): the fixed-point residual |T(T^-1(x)) - x| in mm of the field it holds
        self.residual: InversionResidual | None = None

    @classmethod
    def from_field(cls, field: Tensor, grid: Grid) -> DenseDisplacement:
        """Wrap an existing ``(B, D, *S)`` field lying on ``grid``."""
        return cls(grid, 1, field=field)

    def forward(self, points: Tensor) -> Tensor:
        if grid_fast_path(points, self.field_grid):
            return points + self.field.movedim(1, -1)
        return points + sample_field(self.field, self.field_grid, points)

    def displacement(self, grid: Grid) -> Tensor:
        """``(B, D, *S)`` on ``grid``: the field itself on its own grid, else linearly resampled."""
        return resample_field(self.field, self.field_grid, grid)

    def learnable_copy(self, grid: Grid) -> DenseDisplacement:
        return DenseDisplacement.from_field(self.field.detach().clone(), self.field_grid)

    def inverse(self, iterations: int = 30, tol: float = 1e-3) -> DenseDisplacement:
        """Fixed-point inverse on the field grid (detached); its ``residual`` reports the accuracy."""
        with torch.no_grad():
            field, residual = invert_field(self.field, self.field_grid, iterations, tol)
        out = DenseDisplacement.from_field(field, self.field_grid)
        out.residual = residual
        return out

    def extra_repr(self) -> str:
        return f"field_grid={self.field_grid}, batch={self.batch}"
