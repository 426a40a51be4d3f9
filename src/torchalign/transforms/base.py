"""Base class and composition of spatial transforms (world mm, fixed -> moving)."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..grid import Grid, apply_matrix


class Pullback(NamedTuple):
    """How a transform pulls images onto a grid's voxel centres ``x``: the moving image is sampled at
    ``matrix (x + moving(x))`` and the fixed image at ``x + fixed(x)`` (mid-space models; None: at
    ``x``). ``matrix`` is ``(B, D+1, D+1)`` world, the displacements ``(B, D, *S)`` world mm on the
    grid; ``fields`` are the learnable displacement fields to regularise, each with its own grid."""

    matrix: Tensor | None
    moving: Tensor | None
    fixed: Tensor | None = None
    fields: tuple[tuple[Tensor, Grid], ...] = ()


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

    def linear_matrix(self) -> Tensor | None:
        """The world matrix ``(B, D+1, D+1)`` float64 when the whole transform is linear, else None."""
        return None

    def pullback(self, grid: Grid) -> Pullback:
        """The warp route onto ``grid`` (see :class:`Pullback`): by default the displacement on ``grid``,
        regularised when the transform has learnable parameters. Models override it with cheaper routes."""
        matrix = self.linear_matrix()
        if matrix is not None:
            return Pullback(matrix, None)
        u = self.displacement(grid)
        learnable = any(p.requires_grad for p in self.parameters())
        return Pullback(None, u, None, ((u, grid),) if learnable else ())

    def learnable_copy(self, grid: Grid) -> SpatialTransform:
        """A copy whose values are trainable leaves, starting where this one is (per-pair fine-tuning
        of a predicted transform; ``grid`` is the image grid it is tuned on)."""
        raise InputError(f"cannot fine-tune a {type(self).__name__}")

    def select(self, index: int) -> SpatialTransform:
        """Pair ``index`` of a batch of frozen transforms, as a batch of one."""
        raise NotImplementedError(f"{type(self).__name__} cannot select one pair of its batch")

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
        flat = [p for t in transforms for p in (t.transforms if isinstance(t, Compose) else [t])]
        super().__init__(ndims.pop(), max(t.batch for t in flat))
        self.transforms = nn.ModuleList(flat)

    def forward(self, points: Tensor) -> Tensor:
        for t in self.transforms:
            points = t(points)
        return points

    def inverse(self) -> SpatialTransform:
        return Compose(*[t.inverse() for t in reversed(self.transforms)])

    def linear_matrix(self) -> Tensor | None:
        matrices = [t.linear_matrix() for t in self.transforms]
        if any(m is None for m in matrices):
            return None
        out = matrices[0]
        for m in matrices[1:]:
            out = m @ out
        return out

    def pullback(self, grid: Grid) -> Pullback:
        """The first part's route; the linear parts that end the chain fold into its matrix, and the
        parts between are applied to the points the first part gives (gradients flow through them)."""
        first, rest = self.transforms[0], list(self.transforms[1:])
        trailing: list[Tensor] = []
        while rest and rest[-1].linear_matrix() is not None:
            trailing.insert(0, rest.pop().linear_matrix())
        route = first.pullback(grid)
        matrix, moving = route.matrix, route.moving
        if rest:
            like = moving if moving is not None else matrix
            x = grid.points(dtype=moving.dtype if moving is not None else torch.float32, device=like.device)[None]
            points = x if moving is None else x + moving.movedim(1, -1)
            if matrix is not None:
                points = apply_matrix(matrix.to(points.dtype), points.expand(matrix.shape[0], *points.shape[1:]))
            for t in rest:
                points = t(points)
            moving, matrix = (points - x).movedim(-1, 1), None
        for m in trailing:
            matrix = m if matrix is None else m.to(matrix) @ matrix
        return Pullback(matrix, moving, route.fixed, route.fields)

    def select(self, index: int) -> Compose:
        return Compose(*[t.select(index) for t in self.transforms])
