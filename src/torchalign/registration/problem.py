"""Pairs ready to register, and one pyramid level of one or several pairs ("a problem").

Images and masks are kept apart: a problem holds the fixed and moving intensities on their level
grids and, when given, each image's binary mask. Several pairs of equal level shapes stack on the
batch dimension; they are computed on the first pair's grids, and the world maps between each
pair's grids and those (``left``, ``right``) conjugate the transforms (exact for linear maps).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..grid import Grid
from ..image import Image, normalize_intensity
from .pyramid import level_spacing, pyramid_grid, smooth_and_shrink


class Prepared(NamedTuple):
    """One pair ready to register: normalised images, binary masks and the initial matrix."""

    fixed: Image
    moving: Image
    fixed_mask: Image | None
    moving_mask: Image | None
    init: np.ndarray  # (D+1, D+1) float64 world matrix moving_from_fixed


@dataclass
class Problem:
    """One pyramid level of ``B`` pairs: fixed data on ``grid``, moving data on ``moving_grid``."""

    fixed: Tensor  # (B, C, *S)
    grid: Grid
    moving: Tensor  # (B, C, *S_m)
    moving_grid: Grid
    fixed_mask: Tensor | None = None  # (B, 1, *S) binary float
    moving_mask: Tensor | None = None  # (B, 1, *S_m) binary float


def prepare(image: Image, name: str, normalize: bool, mask: Image | None = None) -> Image:
    """Float32, one channel (mean of channels), finite, robustly normalised to [0, 1]."""
    image.check_finite(name)
    data = image.data.float()
    if data.shape[1] > 1:
        data = data.mean(1, keepdim=True)
    if normalize:
        try:
            data = normalize_intensity(data, mask=None if mask is None else mask.data)
        except InputError as exc:
            raise InputError(f"{name}: {exc}") from None
    elif float(data.max() - data.min()) == 0.0:
        raise InputError(f"{name}: image has zero intensity variance (constant image)")
    return image.with_data(data)


def prepare_mask(mask: Image | None, image: Image, name: str) -> Image | None:
    """A binary float mask on its own grid; empty masks and dimension mismatches are errors."""
    if mask is None:
        return None
    if mask.ndim != image.ndim:
        raise InputError(f"{name} is {mask.ndim}-D but its image is {image.ndim}-D")
    data = (mask.data[:, :1] > 0).float()
    if not bool(data.any()):
        raise InputError(f"{name} is empty (no non-zero voxel)")
    return mask.with_data(data.to(image.device))


def build_problem(fixed: Image, moving: Image, fixed_mask: Image | None, moving_mask: Image | None,
                  shrink: float, sigma: float, sigma_units: str, spacing: float | None = None) -> Problem:
    """Both images smoothed (sigma in mm, or in units of the fixed image's finest spacing) and
    shrunk per axis towards the level's voxel size (see :mod:`.pyramid`)."""
    target = level_spacing(fixed.grid, shrink, spacing)
    sigma_mm = sigma * float(fixed.grid.spacing.min()) if sigma_units == "vox" else float(sigma)
    f_grid, m_grid = pyramid_grid(fixed.grid, target), pyramid_grid(moving.grid, target)

    def binary(mask: Image | None, grid: Grid) -> Tensor | None:
        return None if mask is None else (smooth_and_shrink(mask, grid, 0.0).data > 0.5).float()

    return Problem(smooth_and_shrink(fixed, f_grid, sigma_mm).data, f_grid,
                   smooth_and_shrink(moving, m_grid, sigma_mm).data, m_grid,
                   binary(fixed_mask, f_grid), binary(moving_mask, m_grid))


def _world_maps(grids: Sequence[Grid], common: Grid, into_common: bool, device: torch.device) -> Tensor:
    """``(B, D+1, D+1)`` world maps between each grid and ``common`` (voxel for voxel)."""
    maps = [common.world_from_voxel @ g.voxel_from_world if into_common else g.world_from_voxel @ common.voxel_from_world
            for g in grids]
    return torch.as_tensor(np.stack(maps), dtype=torch.float64, device=device)


def stack_problems(problems: Sequence[Problem]) -> tuple[Problem, Tensor, Tensor | None]:
    """One batched problem on the first pair's grids, ``left`` (B, D+1, D+1) mapping each pair's moving
    world onto it and ``right`` mapping its fixed world to each pair's (None when every fixed grid is
    the first one: deformable models live on the fixed grid and need that)."""
    first = problems[0]
    shapes = {(p.grid.shape, p.moving_grid.shape) for p in problems}
    if len(shapes) != 1:
        raise InputError(f"pairs of one batch need equal level shapes, got {sorted(shapes)}")
    dev = first.fixed.device

    def masks(get: str, like: str) -> Tensor | None:
        if all(getattr(p, get) is None for p in problems):
            return None
        return torch.cat([getattr(p, get) if getattr(p, get) is not None else torch.ones_like(getattr(p, like)[:, :1])
                          for p in problems])

    stacked = Problem(torch.cat([p.fixed for p in problems]), first.grid, torch.cat([p.moving for p in problems]),
                      first.moving_grid, masks("fixed_mask", "fixed"), masks("moving_mask", "moving"))
    left = _world_maps([p.moving_grid for p in problems], first.moving_grid, True, dev)
    same = all(p.grid.same_as(first.grid, atol=1e-9) for p in problems)
    right = None if same else _world_maps([p.grid for p in problems], first.grid, False, dev)
    return stacked, left, right
