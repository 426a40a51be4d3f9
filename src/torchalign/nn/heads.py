"""Heads: turn backbone features into a torchalign :class:`~torchalign.transforms.base.SpatialTransform`.

* :class:`DenseHead` predicts a stationary velocity or a displacement in mm, wrapped in
  :class:`~torchalign.transforms.velocity.StationaryVelocity` (integrated by the classical SVF's
  scaling and squaring) or :class:`~torchalign.transforms.dense.DenseDisplacement`.
* :class:`AffineHead` regresses the parameters of a rigid/similarity/affine
  :class:`~torchalign.transforms.linear.LinearTransform` (zero = identity at initialisation, as in
  AIRNet) and returns the world matrix as a :class:`~torchalign.transforms.linear.MatrixTransform`.

Frames: the network sees arrays in voxel order, so both heads predict along the *voxel axes* of
the fixed grid (in mm, about the grid centre for the affine head) and rotate the result to world
axes with the grid's direction. A network trained on RAS images therefore gives consistent world
transforms on LAS or oblique images of the same anatomy.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..grid import Grid
from ..transforms.base import SpatialTransform
from ..transforms.dense import DenseDisplacement, strided_grid
from ..transforms.linear import GROUPS, LinearTransform, MatrixTransform, linear_center_radius
from ..transforms.velocity import StationaryVelocity


def bind(transform: SpatialTransform, name: str, value: Tensor) -> SpatialTransform:
    """Replace the parameter ``name`` of ``transform`` by the tensor ``value`` (a network output).

    The transform classes wrap given values in ``nn.Parameter``, a new leaf that would cut the
    gradient to the network; binding keeps the graph (as ``torch.func.functional_call`` does). The
    value becomes a non-persistent buffer, so it still follows ``.to(device)``.
    """
    del transform._parameters[name]
    transform.register_buffer(name, value, persistent=False)
    return transform


def world_vectors(field: Tensor, grid: Grid) -> Tensor:
    """Voxel-axis vectors ``(B, D, *S)`` (mm along each voxel axis) -> world-axis vectors ``(B, D, *S)``."""
    direction = torch.as_tensor(grid.direction, dtype=field.dtype, device=field.device)
    if torch.equal(direction, torch.eye(grid.ndim, dtype=field.dtype, device=field.device)):
        return field
    return torch.einsum("ik,bk...->bi...", direction, field)


class DenseHead(nn.Module):
    """Convolution ``(B, C, *S) -> (B, D, *S)`` predicting a velocity or displacement in mm.

    With ``stride`` > 1 the field is area-averaged onto the grid shrunk by ``stride`` and lives
    (and is integrated) there, as VoxelMorph integrates at half resolution; it is linearly
    upsampled where evaluated. The last convolution starts near zero (normal, std 1e-5, as
    VoxelMorph), so an untrained model is close to the identity.
    """

    def __init__(self, ndim: int, in_channels: int, field: str = "velocity", steps: int = 7, stride: int = 1):
        super().__init__()
        if field not in ("velocity", "displacement"):
            raise ValueError(f"field must be 'velocity' or 'displacement', got {field!r}")
        self.ndim, self.in_channels, self.field, self.steps = ndim, in_channels, field, steps
        self.stride = stride
        self.conv = (nn.Conv2d if ndim == 2 else nn.Conv3d)(in_channels, ndim, 3, padding=1)
        nn.init.normal_(self.conv.weight, std=1e-5)
        nn.init.zeros_(self.conv.bias)
        self.full_resolution = True

    def forward(self, features: Tensor, grid: Grid) -> SpatialTransform:
        """``features (B, C, *S)`` on ``grid`` -> ``StationaryVelocity`` or ``DenseDisplacement`` (batch B)."""
        vectors = self.conv(features)
        if self.stride > 1:
            vectors = F.interpolate(vectors, size=strided_grid(grid, self.stride).shape, mode="area")
        vectors = world_vectors(vectors, grid)
        if self.field == "velocity":
            return bind(StationaryVelocity(grid, self.steps, self.stride, velocity=vectors), "velocity", vectors)
        return bind(DenseDisplacement(grid, self.stride, field=vectors), "field", vectors)

    def extra_repr(self) -> str:
        return f"ndim={self.ndim}, field={self.field!r}, steps={self.steps}, stride={self.stride}"


def _parameter_sizes(ndim: int, model: str) -> dict[str, int]:
    sizes = {"translation": ndim, "rotation": 1 if ndim == 2 else 3,
             "scale": 1 if model == "similarity" else ndim, "shear": ndim * (ndim - 1) // 2}
    return {name: sizes[name] for name in GROUPS[model]}


def world_matrix(params: Tensor, grid: Grid, model: str) -> Tensor:
    """World matrices ``(B, D+1, D+1)`` float64 moving_from_fixed from parameters ``(B, P)``.

    The parameters are those of ``LinearTransform(model)`` (mm at the grid's radius) in the frame of
    the grid's voxel axes centred on the grid: ``world = C R P R^T C^-1`` with ``C`` the shift to
    the centre and ``R`` the direction.
    """
    d = grid.ndim
    center, radius = linear_center_radius(grid)
    local = LinearTransform(d, model, radius=radius, batch=params.shape[0]).to(params.device)
    start = 0
    for name, size in _parameter_sizes(d, model).items():
        bind(local, name, params[:, start:start + size])
        start += size
    frame = np.eye(d + 1)
    frame[:d, :d] = grid.direction
    frame[:d, d] = center
    world_from_frame = torch.as_tensor(frame, dtype=torch.float64, device=params.device)
    return world_from_frame @ local.local_matrix() @ torch.linalg.inv(world_from_frame)


class AffineHead(nn.Module):
    """Average-pool ``(B, C, *S')`` to ``pool^D`` cells, then an MLP -> linear parameters -> MatrixTransform.

    The last layer is zero-initialised: an untrained head predicts the identity.
    """

    def __init__(self, ndim: int, in_channels: int, model: str = "affine", pool: int = 4, hidden: int = 64):
        super().__init__()
        if model not in ("rigid", "similarity", "affine"):
            raise ValueError(f"model must be rigid, similarity or affine, got {model!r}")
        self.ndim, self.in_channels, self.model = ndim, in_channels, model
        self.pool = (nn.AdaptiveAvgPool2d if ndim == 2 else nn.AdaptiveAvgPool3d)(pool)
        n_params = sum(_parameter_sizes(ndim, model).values())
        last = nn.Linear(hidden, n_params)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * pool**ndim, hidden), nn.LeakyReLU(0.2), last)
        self.full_resolution = False

    def forward(self, features: Tensor, grid: Grid) -> MatrixTransform:
        """``features (B, C, *S')`` -> ``MatrixTransform`` holding ``(B, D+1, D+1)`` world matrices."""
        params = self.mlp(self.pool(features)).double()
        return MatrixTransform(world_matrix(params, grid, self.model))

    def extra_repr(self) -> str:
        return f"ndim={self.ndim}, model={self.model!r}"
