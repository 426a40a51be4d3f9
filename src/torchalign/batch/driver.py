"""Batched registration on one device: which pairs can share a batch, and the engine call.

The optimisation itself is the engine's (:func:`torchalign.registration.register_many`): ``B``
pairs stacked on the batch dimension, one loop, each pair stopping on its own plateau and ending
with its own best parameters, so (with an element-wise optimiser such as Adam) each pair follows
the path it would follow alone. Linear pairs may lie on different world grids of equal shape and
spacing; deformable pairs share their fixed grid (their fields live on it).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import RegistrationConfig
from ..errors import InputError
from ..image import Image
from ..registration import Prepared, Result, register_many


def check_batchable(config: RegistrationConfig) -> None:
    """InputError unless every stage is optimised element-wise (LBFGS's line search couples the pairs)."""
    for i, stage in enumerate(config.stages, start=1):
        if stage.optimizer == "LBFGS":
            raise InputError(f"stage {i}: LBFGS's line search couples the pairs of a batch; use Adam (or another "
                             "element-wise optimizer) or --mode sequential, pool or dask")


def batch_key(fixed: Image, moving: Image, config: RegistrationConfig) -> tuple:
    """Pairs with equal keys have equal pyramid shapes at every level and can share a batch; with a
    deformable stage they also share the fixed grid."""
    def geometry(image: Image, whole: bool) -> tuple:
        where = tuple(np.round(image.grid.world_from_voxel, 6).ravel()) if whole else ()
        return image.grid.shape, tuple(np.round(image.grid.spacing, 6)), where

    deformable = not all(stage.is_linear for stage in config.stages)
    return geometry(fixed, deformable), geometry(moving, False), str(fixed.device)


def register_batch(pairs: Sequence[Prepared], config: RegistrationConfig) -> list[Result]:
    """Register the prepared pairs together; one :class:`Result` per pair (see the module doc)."""
    check_batchable(config)
    if len({batch_key(p.fixed, p.moving, config) for p in pairs}) > 1:
        raise InputError("pairs of one batch need equal fixed and moving shapes and spacings"
                         " (and, with deformable stages, one fixed grid)")
    return register_many(pairs, config)
