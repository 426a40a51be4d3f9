"""Backbones: a convolutional encoder and a U-Net, 2-D or 3-D, for any input size.

Both take ``(B, C_in, *S)`` and are built from ``features``: level 0 works at full resolution and
each further level halves the size with a stride-2 convolution (the VoxelMorph design). The U-Net
pads its input at the far end of each axis to a multiple of ``2**(len(features) - 1)`` and crops
its output back, so every size works and the output lies on the input's voxels.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError


def conv(ndim: int, in_channels: int, out_channels: int, stride: int = 1) -> nn.Module:
    """3x3(x3) convolution (padding 1) followed by LeakyReLU(0.2).

    He initialisation for that activation (zero bias) keeps the features' scale through the
    levels; PyTorch's default shrinks it about threefold per layer, so a head predicting mm would
    need hundreds of steps to reach millimetres.
    """
    cls = nn.Conv2d if ndim == 2 else nn.Conv3d
    layer = cls(in_channels, out_channels, 3, stride=stride, padding=1)
    nn.init.kaiming_normal_(layer.weight, a=0.2, nonlinearity="leaky_relu")
    nn.init.zeros_(layer.bias)  # type: ignore[arg-type]
    return nn.Sequential(layer, nn.LeakyReLU(0.2))


def _check_input(x: Tensor, ndim: int, channels: int, who: str) -> None:
    if x.ndim != ndim + 2 or x.shape[1] != channels:
        raise InputError(f"{who} expects (B, {channels}, *S) with {ndim} spatial axes, got {tuple(x.shape)}")


class Encoder(nn.Module):
    """Stride-2 convolutional encoder: ``(B, C_in, *S)`` -> one map per level, the last ``(B, features[-1], *S/2^L)``.

    ``forward`` returns the deepest map; :meth:`levels` returns them all (the U-Net's skips).
    """

    def __init__(self, ndim: int, in_channels: int = 2, features: Sequence[int] = (16, 32, 32, 32)):
        super().__init__()
        if ndim not in (2, 3):
            raise InputError(f"networks are 2-D or 3-D, got ndim={ndim}")
        if not features or any(int(f) < 1 for f in features):
            raise InputError(f"features must be a non-empty list of positive channel counts, got {list(features)}")
        self.ndim, self.in_channels = ndim, in_channels
        self.features = [int(f) for f in features]
        chans = [in_channels, *self.features]
        self.blocks = nn.ModuleList(conv(ndim, chans[i], chans[i + 1], stride=1 if i == 0 else 2)
                                    for i in range(len(self.features)))
        self.out_channels = self.features[-1]

    def levels(self, x: Tensor) -> list[Tensor]:
        """Feature maps of every level, full resolution first."""
        _check_input(x, self.ndim, self.in_channels, type(self).__name__)
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.levels(x)[-1]


class UNet(nn.Module):
    """U-Net: ``(B, C_in, *S)`` -> ``(B, features[0], *S)`` for any ``S``.

    The decoder upsamples by 2 (nearest), concatenates the encoder map of the same level and
    convolves to that level's width; one more convolution at full resolution ends it.
    """

    def __init__(self, ndim: int, in_channels: int = 2, features: Sequence[int] = (16, 32, 32, 32)):
        super().__init__()
        self.encoder = Encoder(ndim, in_channels, features)
        f = self.encoder.features
        self.ndim, self.in_channels = ndim, in_channels
        self.decoder = nn.ModuleList(conv(ndim, f[i + 1] + f[i], f[i]) for i in reversed(range(len(f) - 1)))
        self.final = conv(ndim, f[0], f[0])
        self.out_channels = f[0]
        self.multiple = 2 ** (len(f) - 1)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.ndim, self.in_channels, "UNet")
        shape = tuple(x.shape[2:])
        pad = [(-n) % self.multiple for n in shape]
        if any(pad):
            # F.pad lists (before, after) pairs from the last axis backwards.
            x = F.pad(x, [p for n in reversed(pad) for p in (0, n)])
        skips = self.encoder.levels(x)
        y = skips[-1]
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            y = F.interpolate(y, size=skip.shape[2:], mode="nearest")
            y = block(torch.cat([y, skip], 1))
        y = self.final(y)
        return y[(slice(None), slice(None), *(slice(0, n) for n in shape))]
