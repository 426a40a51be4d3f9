"""A correlation backbone: shared descriptors, local cost volumes and a soft argmax (PDD-Net/PWC-Net style).

Both images get the same descriptors, unit vectors per voxel. For every integer offset ``d`` in
``[-radius, radius]^D`` the cost is the dot product of the fixed descriptor at ``x`` and the moving
one at ``x + d``; a softmax over the offsets (learned temperature) weighs them into the expected
offset, in voxels. Unlike a U-Net regressing the field from scratch, this registers before any
training, so the few hundred steps on synthetic pairs that these CPUs afford improve a working
matcher instead of starting one (measured: a U-Net trained that long still predicted ~0).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..functional.filters import gaussian_smooth
from ..functional.similarity import mind_ssc
from ..grid import Grid
from ..transforms.base import SpatialTransform
from ..transforms.velocity import StationaryVelocity
from .heads import bind, world_vectors
from .unet import conv


def shift_by(data: Tensor, offsets: Tensor) -> Tensor:
    """``data (B, C, *S)`` sampled at ``x + offsets(x)`` (offsets ``(B, D, *S)`` in voxels), linear, edge values."""
    d = offsets.ndim - 2
    shape = offsets.shape[2:]
    base = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=offsets.dtype, device=offsets.device) for n in shape],
                                      indexing="ij"))
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in shape], dtype=offsets.dtype, device=offsets.device)
    coords = ((base + offsets).movedim(1, -1) * scale - 1).flip(-1)  # grid_sample wants x, y(, z) last-first
    return F.grid_sample(data, coords, mode="bilinear", padding_mode="border", align_corners=True)


class CorrelationBackbone(nn.Module):
    """``(B, 2, *S)`` -> expected offset ``(B, D, *S)`` in voxels, from cost volumes of ``radius`` voxels.

    Descriptors: MIND-SSC (contrast-insensitive self-similarity, centred per voxel) concatenated with
    learned convolutional features whose last layer starts small, so the untrained network is mostly
    a MIND matcher and training adds what synthetic pairs teach. ``iterations`` > 1 warps the moving
    descriptors by the smoothed estimate and correlates again (a coarse-to-fine style cascade).
    """

    def __init__(self, ndim: int, features: Sequence[int] = (16, 16), radius: int = 4, iterations: int = 2,
                 sigma: float = 3.0):
        super().__init__()
        if ndim not in (2, 3) or radius < 1 or iterations < 1 or not features:
            raise InputError(f"a correlation backbone needs ndim 2 or 3, radius >= 1, iterations >= 1 and "
                             f"features, got {ndim}, {radius}, {iterations}, {list(features)}")
        chans = [1, *features]
        last = (nn.Conv2d if ndim == 2 else nn.Conv3d)(chans[-1], chans[-1], 1)
        with torch.no_grad():  # small, not zero: at zero the cost's gradient to either side's features is
            last.weight.mul_(0.1)  # the other side's features, zero too (a saddle training never leaves)
            last.bias.zero_()  # type: ignore[union-attr]
        self.encoder = nn.Sequential(*[conv(ndim, chans[i], chans[i + 1]) for i in range(len(features))], last)
        self.ndim, self.radius, self.iterations, self.sigma = ndim, radius, iterations, sigma
        self.in_channels, self.out_channels = 2, ndim
        self.log_temperature = nn.Parameter(torch.tensor(math.log(0.01)))
        offsets = list(itertools.product(range(-radius, radius + 1), repeat=ndim))
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.float32), persistent=False)

    def describe(self, image: Tensor) -> Tensor:
        """Unit descriptors ``(B, K + features[-1], *S)`` of one image ``(B, 1, *S)``."""
        mind = mind_ssc(image, 2, 2)
        return F.normalize(torch.cat([mind - mind.mean(1, keepdim=True), self.encoder(image)], 1), dim=1)

    def correlate(self, fixed: Tensor, moving: Tensor) -> Tensor:
        """Expected offset ``(B, D, *S)`` of ``moving`` against ``fixed`` over the cost volume."""
        r = self.radius
        windows = F.pad(moving, [r] * (2 * self.ndim), mode="replicate")
        for axis in range(self.ndim):  # a view (B, C, *S, 2r+1, ...): no copy until the product
            windows = windows.unfold(2 + axis, 2 * r + 1, 1)
        costs = (fixed[(..., *[None] * self.ndim)] * windows).sum(1).flatten(self.ndim + 1).movedim(-1, 1)
        weights = torch.softmax(costs / self.log_temperature.exp(), dim=1)
        return torch.einsum("bk...,kd->bd...", weights, self.offsets.to(weights.dtype))

    def forward(self, x: Tensor) -> Tensor:
        fixed, moving = self.describe(x[:, :1]), self.describe(x[:, 1:])
        total = torch.zeros_like(x[:, :self.ndim])
        for i in range(self.iterations):
            warped = moving if i == 0 else shift_by(moving, total)
            total = total + gaussian_smooth(self.correlate(fixed, warped), self.sigma)
        return total


class OffsetHead(nn.Module):
    """Smoothed offsets ``(B, D, *S)`` (voxels) -> velocity in mm along world axes ->
    :class:`~torchalign.transforms.velocity.StationaryVelocity` on the grid (diffeomorphic)."""

    def __init__(self, ndim: int, steps: int = 7):
        super().__init__()
        self.ndim, self.in_channels, self.steps = ndim, ndim, steps
        self.full_resolution = True

    def forward(self, offsets: Tensor, grid: Grid) -> SpatialTransform:
        spacing = torch.as_tensor(grid.spacing, dtype=offsets.dtype, device=offsets.device)
        vectors = world_vectors(offsets * spacing.reshape(1, -1, *[1] * self.ndim), grid)
        return bind(StationaryVelocity(grid, self.steps, velocity=vectors), "velocity", vectors)

    def extra_repr(self) -> str:
        return f"ndim={self.ndim}, steps={self.steps}"
