"""Display geometry: which slice of a grid is shown how, in on-screen millimetres.

Views follow the radiological convention of ITK-SNAP: the patient's left is on the right of the
screen; axial views have anterior up, coronal and sagittal views superior up, sagittal views
anterior on the left. A 2-D grid is shown like an axial slice, so a PNG read through SimpleITK
appears as in any picture viewer. Screen coordinates are signed world millimetres
(``sign_h * p[world_h]``, ``sign_v * p[world_v]``), so points, grid lines and images share one frame;
voxel axes are matched to the nearest world axes (``nibabel.orientations.io_orientation``), which
is exact for axis-aligned grids and a display approximation for oblique ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from nibabel.orientations import io_orientation

from ..errors import InputError
from ..grid import Grid

# name, (world axis, sign) shown horizontally, (world axis, sign) shown vertically, world axis sliced
_LAYOUTS_3D = (("axial", (0, -1), (1, 1), 2), ("coronal", (0, -1), (2, 1), 1), ("sagittal", (1, -1), (2, 1), 0))
_LAYOUT_2D = ("2-D", (0, -1), (1, 1), None)
_LETTERS = ("LR", "PA", "IS")  # (negative, positive) end of each world axis


@dataclass(frozen=True)
class View:
    """One 2-D view of a grid: a plane of ``(*S)`` arrays shown with ``origin="lower"`` and ``extent``."""

    name: str
    h_axis: int
    v_axis: int
    slice_axis: int | None
    index: int | None
    flip_h: bool
    flip_v: bool
    world_h: int
    sign_h: int
    world_v: int
    sign_v: int
    extent: tuple[float, float, float, float]

    def plane(self, volume: np.ndarray) -> np.ndarray:
        """The ``(rows = vertical, cols = horizontal)`` plane of a ``(*S)`` (or ``(*S, K)``) array."""
        a = volume if self.slice_axis is None else np.take(volume, self.index, axis=self.slice_axis)
        return self._orient(a, self.slice_axis)

    def project(self, volume: np.ndarray) -> np.ndarray:
        """Mean of a ``(*S)`` array along the sliced axis (an X-ray-like projection), oriented."""
        a = volume if self.slice_axis is None else volume.mean(axis=self.slice_axis)
        return self._orient(a, self.slice_axis)

    def _orient(self, a: np.ndarray, removed: int | None) -> np.ndarray:
        h = self.h_axis - (removed is not None and self.h_axis > removed)
        v = self.v_axis - (removed is not None and self.v_axis > removed)
        a = np.moveaxis(a, (v, h), (0, 1))
        if self.flip_v:
            a = a[::-1]
        if self.flip_h:
            a = a[:, ::-1]
        return a

    def screen(self, points: np.ndarray) -> np.ndarray:
        """``(..., D)`` world points -> ``(..., 2)`` screen millimetres (horizontal, vertical)."""
        p = np.asarray(points, dtype=np.float64)
        return np.stack([self.sign_h * p[..., self.world_h], self.sign_v * p[..., self.world_v]], axis=-1)

    def letters(self) -> tuple[str, str, str, str]:
        """Orientation letters at the left, right, bottom and top edges of the view."""
        h, v = _LETTERS[self.world_h], _LETTERS[self.world_v]
        left, right = (h[1], h[0]) if self.sign_h < 0 else (h[0], h[1])
        bottom, top = (v[1], v[0]) if self.sign_v < 0 else (v[0], v[1])
        return left, right, bottom, top

    @property
    def title(self) -> str:
        return self.name if self.index is None else f"{self.name} {self.index}"


def views(grid: Grid, index: Sequence[int] | None = None) -> list[View]:
    """Three orthogonal views (axial, coronal, sagittal) through voxel ``index`` of a 3-D grid, or the
    single view of a 2-D grid. ``index`` (one voxel index per array axis) defaults to the centre."""
    shape = np.asarray(grid.shape)
    centre = shape // 2 if index is None else np.asarray(index, dtype=np.int64)
    if centre.shape != shape.shape or np.any(centre < 0) or np.any(centre >= shape):
        raise InputError(f"slice index {np.asarray(index).tolist()} is outside the grid {grid.shape}")
    ornt = io_orientation(grid.world_from_voxel)
    array_axis = {int(w): a for a, w in enumerate(ornt[:, 0])}
    layouts = _LAYOUTS_3D if grid.ndim == 3 else (_LAYOUT_2D,)
    out = []
    for name, (wh, sh), (wv, sv), ws in layouts:
        ah, av = array_axis[wh], array_axis[wv]
        (h0, h1), (v0, v1) = (_screen_range(grid, centre, ah, wh, sh), _screen_range(grid, centre, av, wv, sv))
        out.append(View(name, ah, av, None if ws is None else array_axis[ws],
                        None if ws is None else int(centre[array_axis[ws]]), h1 < h0, v1 < v0,
                        wh, sh, wv, sv, (min(h0, h1), max(h0, h1), min(v0, v1), max(v0, v1))))
    return out


def _screen_range(grid: Grid, centre: np.ndarray, axis: int, world: int, sign: int) -> tuple[float, float]:
    """Screen coordinate of the two outer edges (-0.5 and n - 0.5) of array ``axis`` through ``centre``."""
    ends = []
    for edge in (-0.5, grid.shape[axis] - 0.5):
        idx = centre.astype(np.float64)
        idx[axis] = edge
        ends.append(sign * float(grid.world_from_voxel[world, :-1] @ idx + grid.world_from_voxel[world, -1]))
    return ends[0], ends[1]
