"""RegistrationNet: an injected backbone and a head that returns a torchalign SpatialTransform.

Because the output is an ordinary transform (fixed world mm -> moving world mm), warping, export
(``write_displacement``, ``write_linear``), evaluation and fine-tuning are the library's own.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..functional.filters import downsample
from ..functional.sampling import sample_affine, sample_displaced
from ..grid import Grid
from ..transforms.base import Pullback, SpatialTransform
from .config import ModelConfig
from .correlation import CorrelationBackbone, OffsetHead
from .heads import AffineHead, DenseHead
from .unet import Encoder, UNet

Head = DenseHead | AffineHead | OffsetHead


def _shape(x: Tensor) -> str:
    return "(" + ", ".join(str(n) for n in x.shape) + ")"


class RegistrationNet(nn.Module):
    """``forward(fixed (B, 1, *S), moving (B, 1, *S), grid) -> SpatialTransform`` (batch B).

    Both images lie on ``grid`` (the fixed grid; resample the moving image onto it first, which is
    the identity in world space). The pair is concatenated to ``(B, 2, *S)`` and passed to
    ``backbone``, whose output must be ``(B, head.in_channels, *S)`` for a dense head (any spatial
    size for the affine head); a mismatch raises an error stating both shapes.
    """

    def __init__(self, backbone: nn.Module, head: Head, config: ModelConfig | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.ndim = head.ndim
        self.config = config

    def network_grid(self, grid: Grid) -> Grid:
        """The grid the network sees: ``grid`` shrunk to the model's ``spacing`` (never refined)."""
        spacing = self.config.spacing if self.config is not None else None
        factors = [1.0 if spacing is None else max(1.0, spacing / s) for s in grid.spacing]
        return grid if all(f < 1.01 for f in factors) else grid.downsample(factors)

    def forward(self, fixed: Tensor, moving: Tensor, grid: Grid) -> SpatialTransform:
        d = self.ndim
        if grid.ndim != d:
            raise InputError(f"this network registers {d}-D images; the grid is {grid.ndim}-D")
        expected = f"(B, 1, {', '.join(str(n) for n in grid.shape)})"
        for name, x in (("fixed", fixed), ("moving", moving)):
            if x.ndim != d + 2 or x.shape[1] != 1 or tuple(x.shape[2:]) != grid.shape:
                raise InputError(f"{name} must be {expected} on the grid, got {_shape(x)}")
        if fixed.shape[0] != moving.shape[0]:
            raise InputError(f"fixed and moving batches differ: {_shape(fixed)} vs {_shape(moving)}")
        pair = torch.cat([fixed, moving], 1)
        net_grid = self.network_grid(grid)
        if net_grid is not grid:
            pair = downsample(pair, [a / b for a, b in zip(grid.shape, net_grid.shape)])
        features = self.backbone(pair).float()
        spatial = net_grid.shape if self.head.full_resolution else tuple(features.shape[2:])
        want = (fixed.shape[0], self.head.in_channels, *spatial)
        if tuple(features.shape) != want:
            raise InputError(f"backbone output {_shape(features)} does not fit the {type(self.head).__name__}: "
                             f"expected ({', '.join(str(n) for n in want)})")
        with torch.autocast(features.device.type, enabled=False):  # fields and integration in float32
            return self.head(features, net_grid)


def build_model(config: ModelConfig) -> RegistrationNet:
    """A U-Net with a dense head, an encoder with an affine head, or a correlation backbone, as ``config`` says."""
    d = config.ndim
    if config.backbone == "correlation":
        backbone = CorrelationBackbone(d, config.features, config.radius, config.iterations, config.sigma)
        return RegistrationNet(backbone, OffsetHead(d, config.steps), config)
    if config.head == "dense":
        unet = UNet(d, 2, config.features)
        return RegistrationNet(unet, DenseHead(d, unet.out_channels, config.field, config.steps, config.stride), config)
    encoder = Encoder(d, 2, config.features)
    head = AffineHead(d, encoder.out_channels, config.linear, config.pool, config.hidden)
    return RegistrationNet(encoder, head, config)


def warp(moving: Tensor, grid: Grid, transform: SpatialTransform, disp: Tensor | None = None,
         padding: Literal["zeros", "border"] = "zeros") -> Tensor:
    """Differentiable linear warp of ``moving (B|1, C, *S)`` on ``grid`` onto ``grid``: ``(B, C, *S)``.

    The transform's own route: a matrix through one ``affine_grid`` (cheap), otherwise ``x + u(x)``
    then its matrix, with ``disp`` = the whole ``T(x) - x`` ``(B, D, *S)`` when the caller already
    has it (a velocity is then not integrated again).
    """
    route = transform.pullback(grid) if disp is None else Pullback(None, disp)
    if route.moving is None:
        return sample_affine(moving, grid, route.matrix, grid, padding)
    return sample_displaced(moving, grid, route.moving, grid, route.matrix, padding)


