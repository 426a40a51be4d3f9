"""RegistrationNet: an injected backbone and a head that returns a torchalign SpatialTransform.

Because the output is an ordinary transform (fixed world mm -> moving world mm), warping, export
(``write_displacement``, ``write_linear``), evaluation and fine-tuning are the library's own.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..functional.filters import downsample
from ..functional.sampling import Padding, sample_affine, sample_world
from ..grid import Grid
from ..registration import linear_center_radius
from ..transforms.base import SpatialTransform
from ..transforms.dense import DenseDisplacement
from ..transforms.linear import LinearTransform, MatrixTransform
from ..transforms.velocity import StationaryVelocity
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
         padding: Padding = "zeros") -> Tensor:
    """Differentiable linear warp of ``moving (B|1, C, *S)`` on ``grid`` onto ``grid``: ``(B, C, *S)``.

    Linear transforms go through one ``affine_grid`` (cheap). Others are sampled at ``x + u(x)``
    with ``disp`` = ``u`` ``(B, D, *S)`` when the caller already has it (default:
    ``transform.displacement(grid)``, which integrates a velocity once).
    """
    if isinstance(transform, (LinearTransform, MatrixTransform)):
        return sample_affine(moving, grid, transform.matrix(), grid, padding)
    if disp is None:
        disp = transform.displacement(grid)
    points = grid.points(dtype=disp.dtype, device=disp.device).unsqueeze(0) + disp.movedim(1, -1)
    return sample_world(moving, grid, points, "linear", padding)


def learnable(transform: SpatialTransform, grid: Grid) -> SpatialTransform:
    """A copy of a predicted transform whose values are trainable leaves (for per-pair fine-tuning).

    ``StationaryVelocity`` and ``DenseDisplacement`` keep their class with the predicted field as
    the starting point; a ``MatrixTransform`` becomes an affine ``LinearTransform`` on top of it
    (the classical driver's parametrisation about the grid centre).
    """
    if isinstance(transform, StationaryVelocity):
        return StationaryVelocity(transform.grid, transform.steps, transform.stride,
                                  velocity=transform.velocity.detach().clone())
    if isinstance(transform, DenseDisplacement):
        return DenseDisplacement.from_field(transform.field.detach().clone(), transform.field_grid)
    if isinstance(transform, MatrixTransform):
        matrix = transform.matrix().detach().clone()
        center, radius = linear_center_radius(grid)
        return LinearTransform(grid.ndim, "affine", center=center, radius=radius, base=matrix.cpu(),
                               batch=matrix.shape[0]).to(matrix.device)
    raise InputError(f"cannot fine-tune a {type(transform).__name__}")
