"""Training pairs without real images (SynthMorph-style): random label maps, images and deformations.

One draw: a random label map of smooth shapes (the argmax of ``K`` smooth noise channels), carried
by two random smooth diffeomorphisms (stationary velocities integrated by scaling and squaring,
plus a random affine) to a fixed and a moving label map; each map becomes an image with its own
random intensity per label, noise, blur, multiplicative bias and gamma. The two images of a pair
share no contrast (but for a ``same_contrast`` fraction of pairs, which share the label means and
make the first steps of training easier), so a network trained to align their labels (soft Dice)
is contrast-agnostic.

Every random number comes from a ``torch.Generator`` on the CPU seeded by the caller, so a draw is
the same on every device; the arithmetic runs on ``device``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..functional.filters import gaussian_smooth
from ..functional.flow import integrate_velocity, sample_field
from ..functional.sampling import sample_world
from ..grid import Grid, apply_matrix
from .config import SynthConfig
from .data import random_affine


def _uniform(gen: torch.Generator, low: float, high: float, size: tuple[int, ...] = ()) -> Tensor:
    return low + (high - low) * torch.rand(size, generator=gen, dtype=torch.float64)


def smooth_noise(shape: tuple[int, ...], channels: int, scale: float, gen: torch.Generator,
                 device: torch.device) -> Tensor:
    """``(1, channels, *shape)`` float32 Gaussian noise drawn every ``scale`` voxels, upsampled (linear)."""
    coarse = tuple(max(2, math.ceil(n / scale) + 1) for n in shape)
    noise = torch.randn((1, channels, *coarse), generator=gen).to(device)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return F.interpolate(noise, size=shape, mode=mode, align_corners=True)


def label_map(grid: Grid, config: SynthConfig, gen: torch.Generator, device: torch.device) -> Tensor:
    """``(1, 1, *S)`` int64 labels ``0 .. labels-1``: the argmax of smooth noise channels."""
    scale = float(_uniform(gen, *config.label_scale))
    return smooth_noise(grid.shape, config.labels, scale, gen, device).argmax(1, keepdim=True)


def random_deformation(grid: Grid, config: SynthConfig, gen: torch.Generator,
                       device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """A random map ``phi = A o exp(v)``: ``(A (D+1, D+1), exp(v), exp(-v))``, the fields ``(1, D, *S)`` float32 mm.

    ``v`` is smooth noise (every ``deform_scale`` voxels) scaled to a standard deviation drawn
    uniformly in ``[0, deform]`` mm; ``A`` is an affine about the grid centre within the bounds.
    """
    scale = float(_uniform(gen, 0.0, config.deform))
    velocity = smooth_noise(grid.shape, grid.ndim, config.deform_scale, gen, device) * scale
    seed = int(torch.randint(0, 2**31 - 1, (), generator=gen))
    matrix = random_affine(grid, np.random.default_rng(seed), config.rotate, config.scale, config.translate)
    return (torch.as_tensor(matrix, dtype=torch.float32, device=device),
            integrate_velocity(velocity, grid, 7), integrate_velocity(-velocity, grid, 7))


def synth_image(labels: Tensor, config: SynthConfig, gen: torch.Generator, means: Tensor) -> Tensor:
    """``(1, 1, *S)`` float32 image in [0, 1] of the label map ``labels`` ``(1, 1, *S)``.

    Per label: the mean intensity ``means`` ``(labels,)`` and a random noise level; then Gaussian
    blur, a smooth multiplicative bias field, min-max normalisation and a random gamma.
    """
    device = labels.device
    k = config.labels
    means = means.to(device)
    stds = (torch.rand(k, generator=gen) * config.noise).to(device)
    noise = torch.randn(labels.shape, generator=gen).to(device)
    image = means[labels] + stds[labels] * noise
    sigma = float(_uniform(gen, 0.0, config.blur))
    if sigma > 0:
        image = gaussian_smooth(image, sigma)
    bias = smooth_noise(tuple(labels.shape[2:]), 1, config.bias_scale, gen, device)
    image = image * torch.exp(bias * float(_uniform(gen, 0.0, config.bias)))
    lo, hi = image.amin(), image.amax()
    image = (image - lo) / (hi - lo).clamp_min(1e-6)
    gamma = math.exp(float(_uniform(gen, -config.gamma, config.gamma)))
    return image.clamp_min(0.0) ** gamma


def synth_pair(grid: Grid, config: SynthConfig, gen: torch.Generator,
               device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """One synthetic pair on ``grid``: ``fixed``/``moving`` ``(1, *S)`` float32, ``*_labels`` ``(1, *S)`` int64
    and ``displacement`` ``(D, *S)`` float32 mm, the true fixed -> moving map ``phi_m^-1 o phi_f`` minus identity.

    Each side's labels are the label map at ``phi(x)``; so ``moving(T(x)) = fixed(x)`` for that ``T``.
    """
    device = torch.device(device)
    labels = label_map(grid, config, gen, device).float()
    x = grid.points(dtype=torch.float32, device=device).unsqueeze(0)
    means = torch.rand(config.labels, generator=gen)
    same = bool(torch.rand((), generator=gen) < config.same_contrast)
    out: dict[str, Tensor] = {}
    for side in ("fixed", "moving"):
        if side == "moving" and not same:
            means = torch.rand(config.labels, generator=gen)
        matrix, forward, backward = random_deformation(grid, config, gen, device)
        points = apply_matrix(matrix, x + forward.movedim(1, -1))
        warped = sample_world(labels, grid, points, "nearest", "border").long()
        out[f"{side}_labels"] = warped[0]
        out[side] = synth_image(warped, config, gen, means)[0]
        if side == "fixed":
            fixed_points = points
        else:
            z = apply_matrix(torch.linalg.inv(matrix), fixed_points)
            out["displacement"] = (z + sample_field(backward, grid, z) - x)[0].movedim(-1, 0)
    return out


class SynthDataset(Dataset):
    """``pairs`` synthetic pairs per epoch on a ``config.shape`` grid of ``config.spacing`` mm.

    Item ``i`` of epoch ``e`` is drawn from a generator seeded by ``(seed, e, i)``: reproducible,
    and data-loader workers agree. A ``validation`` set draws from another stream, the same pairs
    every epoch (drawn once, then kept).
    """

    def __init__(self, config: SynthConfig, pairs: int, seed: int = 0, validation: bool = False):
        self.config = config
        self.grid = Grid.from_geometry(config.shape, spacing=[config.spacing] * len(config.shape))
        self.pairs = pairs
        self.seed = seed
        self.validation = validation
        self.epoch = 0
        self._kept: dict[int, dict[str, Tensor]] = {}

    def set_epoch(self, epoch: int) -> None:
        if not self.validation:
            self.epoch = epoch

    def __len__(self) -> int:
        return self.pairs

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if index in self._kept:
            return self._kept[index]
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, int(self.validation), self.epoch, index])
                                                .generate_state(1)[0]))
        item = synth_pair(self.grid, self.config, gen)
        item["world_from_voxel"] = torch.tensor(self.grid.world_from_voxel)
        if self.validation:
            self._kept[index] = item
        return item
