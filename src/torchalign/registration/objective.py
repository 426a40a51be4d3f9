"""The one registration objective: ``similarity(fixed, warped, overlap) + sum(w * reg(u))`` per pair.

The transform gives its own warp route (:meth:`~torchalign.transforms.base.SpatialTransform.pullback`):
a matrix, a field before a matrix, or mid-space halves that pull both images. The overlap weight is
where the pulled points fall inside each image (and its mask), so voxels pulled from outside an
image do not count.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..functional.filters import thin_axes
from ..functional.sampling import affine_coordinates, displaced_coordinates, sample_inside
from ..grid import Grid
from ..transforms.base import SpatialTransform
from .deformable import regularisation
from .problem import Problem


def pull(data: Tensor, mask: Tensor | None, grid: Grid, onto: Grid, matrix: Tensor | None,
         disp: Tensor | None) -> tuple[Tensor, Tensor]:
    """``data (B|1, C, *S)`` on ``grid`` (with its optional ``mask (B|1, 1, *S)``) sampled at
    ``matrix (x + disp(x))`` for the voxel centres ``x`` of ``onto`` -> ``(values (B, C, *S'), weight (B, 1, *S'))``.

    The weight is where the points fall inside the grid (and the mask); along an axis of at most
    ``THIN`` voxels the image is taken to extend without limit, so a slab tilted by the optimiser
    keeps its overlap (ANTs' 2-D-in-3-D)."""
    if disp is not None:
        coords = displaced_coordinates(disp, onto, grid, matrix)
    elif matrix is not None:
        coords = affine_coordinates(grid, matrix, onto, data.dtype)
    else:
        return data, mask if mask is not None else data.new_ones(data.shape[0], 1, *data.shape[2:])
    c, thin = data.shape[1], thin_axes(grid.shape)  # a slab's thin axis extends without limit (2-D in 3-D)
    if mask is None:
        return sample_inside(data, grid, coords, thin)
    b = max(data.shape[0], mask.shape[0])
    both = torch.cat([data.expand(b, *data.shape[1:]), mask.to(data.dtype).expand(b, *mask.shape[1:])], 1)
    values, inside = sample_inside(both, grid, coords, thin)
    return values[:, :c], values[:, c:] * inside


def objective(problem: Problem, transform: SpatialTransform, similarity: Callable[..., Tensor],
              regularisers: Sequence[nn.Module] = ()) -> Tensor:
    """Per-pair loss ``(B,)`` of ``transform`` on ``problem``: similarity over the overlap (and masks)
    of the pulled images, plus the weighted regularisers of the transform's learnable fields."""
    route = transform.pullback(problem.grid)
    fixed, fixed_weight = pull(problem.fixed, problem.fixed_mask, problem.grid, problem.grid, None, route.fixed)
    moving, moving_weight = pull(problem.moving, problem.moving_mask, problem.moving_grid, problem.grid,
                                 route.matrix, route.moving)
    # linear interpolation of a mask can overshoot 1 by rounding
    loss = similarity(fixed, moving.to(fixed.dtype), (fixed_weight * moving_weight).clamp(0.0, 1.0))
    for u, grid in route.fields:
        loss = loss + regularisation(list(regularisers), u, grid)
    return loss
