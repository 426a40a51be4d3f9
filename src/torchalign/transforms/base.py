"""Base class and composition of spatial transforms (world mm, fixed -> moving)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..grid import Grid


class SpatialTransform(nn.Module):
    """Maps fixed-space world points ``(B, *Q, D)`` to moving-space world points ``(B, *Q, D)``.

    ``batch`` is the number of independent transforms held (one per pair of a batch); points
    with a batch of 1 broadcast against it.
    """

    def __init__(self, ndim: int, batch: int = 1):
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"transforms are 2-D or 3-D, got ndim={ndim}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.ndim = ndim
        self.batch = batch

    def forward(self, points: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self) -> SpatialTransform:
        """The moving -> fixed transform (exact where the model allows)."""
        raise NotImplementedError(f"{type(self).__name__} has no inverse")

    def displacement(self, grid: Grid) -> Tensor:
        """Displacement ``T(x) - x`` in mm at the voxel centres of ``grid``: ``(B, D, *S)``."""
        x = grid.points(dtype=self._dtype(), device=self._device()).unsqueeze(0)
        u = self(x) - x
        return u.movedim(-1, 1)

    def _device(self) -> torch.device:
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")

    def _dtype(self) -> torch.dtype:
        for t in list(self.parameters()) + list(self.buffers()):
            if t.is_floating_point():
                return t.dtype
        return torch.float32


class Compose(SpatialTransform):
    """``Compose(t1, t2, ...)(x) = ... t2(t1(x))``: the first transform is applied to the points first.

    ANTs' ``fwdtransforms = [Warp, Affine]`` corresponds to ``Compose(warp, affine)``.
    """

    def __init__(self, *transforms: SpatialTransform):
        if not transforms:
            raise ValueError("Compose needs at least one transform")
        ndims = {t.ndim for t in transforms}
        if len(ndims) != 1:
            raise ValueError(f"cannot compose transforms of different dimensions {sorted(ndims)}")
        super().__init__(ndims.pop(), max(t.batch for t in transforms))
        self.transforms = nn.ModuleList(transforms)

    def forward(self, points: Tensor) -> Tensor:
        for t in self.transforms:
            points = t(points)
        return points

    def inverse(self) -> SpatialTransform:
        return Compose(*[t.inverse() for t in reversed(self.transforms)])
