"""Grid: the spatial shape of an image and its voxel-to-world (RAS+ mm) matrix.

Voxel indices follow the array axes exactly as nibabel loads them. World points are ``(..., D)``.
A voxel is a cell centred on its index; the extent of a grid is ``[-0.5, n - 0.5]`` in voxel
units, and resizing keeps that extent (the ITK convention).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from nibabel.orientations import aff2axcodes
from torch import Tensor

from .errors import InputError


def _homogeneous(matrix: np.ndarray, ndim: int) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (ndim + 1, ndim + 1):
        raise InputError(f"world_from_voxel must be {(ndim + 1, ndim + 1)} for a {ndim}-D grid, got {m.shape}")
    if not np.allclose(m[ndim], np.eye(ndim + 1)[ndim]):
        raise InputError(f"world_from_voxel must be affine (last row 0 ... 0 1), got last row {m[ndim].tolist()}")
    if not np.all(np.isfinite(m)):
        raise InputError("world_from_voxel contains NaN or Inf")
    if abs(np.linalg.det(m[:ndim, :ndim])) < 1e-12:
        raise InputError("world_from_voxel is singular (a zero spacing or degenerate direction)")
    return m


@dataclass(frozen=True, eq=False)
class Grid:
    """Spatial shape ``S`` (2-D or 3-D) and ``world_from_voxel`` ((D+1)x(D+1), float64, RAS+ mm)."""

    shape: tuple[int, ...]
    world_from_voxel: np.ndarray

    def __init__(self, shape: Sequence[int], world_from_voxel: np.ndarray | None = None):
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (2, 3):
            raise InputError(f"a grid must be 2-D or 3-D, got shape {shape}")
        if any(s < 1 for s in shape):
            raise InputError(f"grid shape has a zero-size dimension: {shape}")
        d = len(shape)
        m = np.eye(d + 1) if world_from_voxel is None else _homogeneous(world_from_voxel, d)
        m = m.copy()
        m.setflags(write=False)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "world_from_voxel", m)

    @classmethod
    def from_geometry(cls, shape: Sequence[int], spacing: Sequence[float] | None = None,
                      origin: Sequence[float] | None = None, direction: np.ndarray | None = None) -> Grid:
        """Build from spacing (mm), origin (world of voxel 0) and direction (columns = axis unit vectors)."""
        d = len(shape)
        spacing = np.ones(d) if spacing is None else np.asarray(spacing, dtype=np.float64)
        origin = np.zeros(d) if origin is None else np.asarray(origin, dtype=np.float64)
        direction = np.eye(d) if direction is None else np.asarray(direction, dtype=np.float64)
        if spacing.shape != (d,) or origin.shape != (d,) or direction.shape != (d, d):
            raise InputError(f"spacing/origin/direction do not match a {d}-D grid")
        if np.any(spacing <= 0):
            raise InputError(f"spacing must be positive, got {spacing.tolist()}")
        m = np.eye(d + 1)
        m[:d, :d] = direction * spacing[None, :]
        m[:d, d] = origin
        return cls(shape, m)

    # ---- derived geometry -------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.world_from_voxel[: self.ndim, : self.ndim], axis=0)

    @property
    def origin(self) -> np.ndarray:
        return self.world_from_voxel[: self.ndim, self.ndim].copy()

    @property
    def direction(self) -> np.ndarray:
        """(D, D) matrix whose columns are the world directions of the voxel axes."""
        return self.world_from_voxel[: self.ndim, : self.ndim] / self.spacing[None, :]

    @property
    def voxel_from_world(self) -> np.ndarray:
        return np.linalg.inv(self.world_from_voxel)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    def orientation(self) -> str:
        """Axis codes such as ``RAS`` or ``LPI`` (nibabel's ``aff2axcodes``): where each voxel axis points."""
        return "".join(aff2axcodes(self.world_from_voxel))

    def center(self) -> np.ndarray:
        """World coordinates of the geometric centre of the grid."""
        c = (np.asarray(self.shape, dtype=np.float64) - 1) / 2
        return self.world_from_voxel[: self.ndim, : self.ndim] @ c + self.origin

    def same_as(self, other: Grid, atol: float = 1e-4) -> bool:
        return self.shape == other.shape and np.allclose(self.world_from_voxel, other.world_from_voxel, atol=atol)

    # ---- points -----------------------------------------------------------------------------
    def voxel_points(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
        """Voxel indices of every voxel, ``(*S, D)``."""
        axes = [torch.arange(n, dtype=dtype, device=device) for n in self.shape]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)

    def points(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
        """World coordinates (mm) of every voxel centre, ``(*S, D)``."""
        return self.voxel_to_world(self.voxel_points(torch.float64, device)).to(dtype)

    def voxel_to_world(self, voxels: Tensor) -> Tensor:
        """``(..., D)`` voxel indices to ``(..., D)`` world mm."""
        return apply_matrix(self.world_from_voxel, voxels)

    def world_to_voxel(self, points: Tensor) -> Tensor:
        """``(..., D)`` world mm to ``(..., D)`` (fractional) voxel indices."""
        return apply_matrix(self.voxel_from_world, points)

    # ---- resizing ---------------------------------------------------------------------------
    def resize(self, shape: Sequence[int]) -> Grid:
        """Same world extent sampled with ``shape`` voxels (voxel size scales accordingly)."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != self.ndim:
            raise InputError(f"resize needs {self.ndim} sizes, got {shape}")
        scale = np.asarray(self.shape, dtype=np.float64) / np.asarray(shape, dtype=np.float64)
        old_from_new = np.eye(self.ndim + 1)
        old_from_new[: self.ndim, : self.ndim] = np.diag(scale)
        old_from_new[: self.ndim, self.ndim] = 0.5 * scale - 0.5
        return Grid(shape, self.world_from_voxel @ old_from_new)

    def downsample(self, factor: float | Sequence[float]) -> Grid:
        """Shrink by ``factor`` per axis (ANTs' shrink factor); sizes are rounded half up, at least 1."""
        f = np.broadcast_to(np.asarray(factor, dtype=np.float64), (self.ndim,))
        if np.any(f < 1):
            raise InputError(f"shrink factors must be >= 1, got {f.tolist()}")
        return self.resize([max(1, int(np.floor(n / k + 0.5))) for n, k in zip(self.shape, f)])

    def pyramid(self, levels: int | Sequence[float | Sequence[float]]) -> list[Grid]:
        """Grids of a multi-resolution pyramid, coarsest first, each keeping the world extent.

        ``levels=n`` means shrink factors ``2**(n-1), ..., 2, 1``; a sequence gives the factors
        themselves (ANTs' ``--shrink-factors 8x4x2x1``), each a number or one per axis.
        """
        if isinstance(levels, int):
            if levels < 1:
                raise InputError(f"a pyramid needs at least one level, got {levels}")
            levels = [2.0 ** k for k in range(levels - 1, -1, -1)]
        return [self.downsample(f) for f in levels]

    def crop(self, start: Sequence[int], shape: Sequence[int]) -> Grid:
        """Sub-grid of ``shape`` voxels starting at voxel index ``start``."""
        shift = np.eye(self.ndim + 1)
        shift[: self.ndim, self.ndim] = np.asarray(start, dtype=np.float64)
        return Grid(shape, self.world_from_voxel @ shift)

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.4g}" for s in self.spacing)
        org = ", ".join(f"{o:.4g}" for o in self.origin)
        return f"Grid(shape={self.shape}, spacing=({sp}), origin=({org}), orientation={self.orientation()})"


def apply_matrix(matrix: np.ndarray | Tensor, points: Tensor) -> Tensor:
    """Apply a homogeneous ``(D+1, D+1)`` (or batched ``(B, D+1, D+1)``) matrix to ``(..., D)`` points.

    A batched matrix needs points ``(B, ..., D)``.
    """
    m = matrix.to(points.device, points.dtype) if isinstance(matrix, Tensor) else \
        torch.tensor(matrix, dtype=points.dtype, device=points.device)
    d = points.shape[-1]
    # ``A @ P^T`` (a wide product) and a transposed view back: ~5x faster than the tall ``P @ A^T``.
    if m.ndim == 2:
        flat = points.reshape(-1, d)
        return torch.addmm(m[:d, d, None], m[:d, :d], flat.T).T.reshape(points.shape)
    b = m.shape[0]
    flat = points.reshape(b, -1, d)
    out = torch.baddbmm(m[:, :d, d, None], m[:, :d, :d], flat.transpose(1, 2)).transpose(1, 2)
    return out.reshape(points.shape)
