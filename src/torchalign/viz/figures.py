"""QC figures (matplotlib, Agg canvas, no pyplot state): one row of panels per figure.

3-D images show three orthogonal slices (the centre by default, or through a chosen voxel
``index``); 2-D images show one panel. Comparisons take images on the *same* grid (resample first).
Every function returns a ``matplotlib.figure.Figure``; :func:`to_png` renders it.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, TwoSlopeNorm
from matplotlib.figure import Figure
from torch import Tensor

from ..errors import InputError
from ..grid import Grid
from ..image import Image
from ..io.atomic import atomic_path
from .views import View, views

PANEL_HEIGHT = 3.0  # inches
FOLD_COLOUR = "#111111"
BEFORE_COLOUR = "#8a8f98"
AFTER_COLOUR = "#d62728"


# ---- helpers ----------------------------------------------------------------------------------
def volume(image: Image) -> np.ndarray:
    """The ``(*S)`` float array of the first image of a batch (channels averaged)."""
    return image.data[0].detach().float().mean(0).cpu().numpy()


def display_range(values: np.ndarray, lower: float = 1.0, upper: float = 99.0) -> tuple[float, float]:
    """Robust intensity window (percentiles of the finite values); never empty."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [lower, upper])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def normalised(image: Image) -> np.ndarray:
    """``(*S)`` intensities windowed to [0, 1] by :func:`display_range`."""
    v = volume(image)
    lo, hi = display_range(v)
    return np.clip((v - lo) / (hi - lo), 0, 1)


def _same_grid(fixed: Image, other: Image, what: str) -> None:
    if not fixed.grid.same_as(other.grid):
        raise InputError(f"{what}: images must lie on the same grid (resample onto the fixed grid first); "
                         f"got {fixed.grid} and {other.grid}")


_MARGIN, _GAP, _TITLE_BAND, _SUPTITLE_BAND, _COLORBAR_BAND = 0.06, 0.08, 0.26, 0.3, 0.95  # inches


def _new_figure(panel_views: Sequence[View], rows: int = 1, colorbar: bool = False,
                title: str | None = None) -> tuple[Figure, np.ndarray]:
    """Rows of panels that keep the millimetre aspect of each view, placed by hand (no layout engine,
    which costs more than drawing); ``axes`` ``(rows, len(views))``. ``colorbar`` reserves room on
    the right for :func:`_colorbar`; ``title`` goes above everything."""
    height = PANEL_HEIGHT if len(panel_views) > 1 else 1.5 * PANEL_HEIGHT  # a lone 2-D view gets more room
    widths = [height * (v.extent[1] - v.extent[0]) / (v.extent[3] - v.extent[2]) for v in panel_views]
    panels_w = sum(widths) + _GAP * (len(widths) - 1)
    top = _SUPTITLE_BAND if title else 0.0
    fig_w = 2 * _MARGIN + panels_w + (_COLORBAR_BAND if colorbar else 0.0)
    fig_h = top + rows * (_TITLE_BAND + height) + (rows - 1) * _GAP + _MARGIN
    fig = Figure(figsize=(fig_w, fig_h), facecolor="white")
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title, fontsize=9.5, y=1 - 0.5 * _SUPTITLE_BAND / fig_h, va="center")
    axes = np.empty((rows, len(widths)), dtype=object)
    for r in range(rows):
        bottom = fig_h - top - (r + 1) * (_TITLE_BAND + height) - r * _GAP
        left = _MARGIN
        for i, w in enumerate(widths):
            ax = fig.add_axes((left / fig_w, bottom / fig_h, w / fig_w, height / fig_h))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("black")
            for spine in ax.spines.values():
                spine.set_visible(False)
            axes[r, i] = ax
            left += w + _GAP
    return fig, axes


def _colorbar(fig: Figure, axes: np.ndarray, mappable: Any, label: str, extend: str = "neither") -> None:
    """A vertical colour bar in the room :func:`_new_figure` reserved right of the panels."""
    boxes = [ax.get_position() for ax in axes.ravel()]
    x0 = max(b.x1 for b in boxes)
    y0, y1 = min(b.y0 for b in boxes), max(b.y1 for b in boxes)
    fig_w = fig.get_figwidth()
    pad = 0.05 * (y1 - y0)
    cax = fig.add_axes((x0 + 0.14 / fig_w, y0 + pad, 0.14 / fig_w, y1 - y0 - 2 * pad))
    cb = fig.colorbar(mappable, cax=cax, extend=extend)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)


def _decorate(ax: Axes, view: View, title: str | None = None) -> None:
    """Orientation letters on the edges and the view's title."""
    left, right, bottom, top = view.letters()
    style: dict[str, Any] = {"color": "#f5d442", "fontsize": 8, "fontweight": "bold", "transform": ax.transAxes}
    ax.text(0.015, 0.5, left, ha="left", va="center", **style)
    ax.text(0.985, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.015, bottom, ha="center", va="bottom", **style)
    ax.text(0.5, 0.985, top, ha="center", va="top", **style)
    ax.set_title(title or view.title, fontsize=9, color="#333333")
    ax.set_xlim(view.extent[0], view.extent[1])
    ax.set_ylim(view.extent[2], view.extent[3])


def _show(ax: Axes, view: View, plane: np.ndarray, **kwargs: Any) -> Any:
    return ax.imshow(plane, origin="lower", extent=view.extent, interpolation="nearest", **kwargs)


def to_png(fig: Figure, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return buf.getvalue()


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write a figure to ``path`` as PNG, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(to_png(fig, dpi))
    return Path(path)


# ---- image comparisons ------------------------------------------------------------------------
def image_slices(image: Image, index: Sequence[int] | None = None, title: str | None = None) -> Figure:
    """Grey-scale slices of one image."""
    vs = views(image.grid, index)
    fig, axes = _new_figure(vs, title=title)
    data = normalised(image)
    for ax, v in zip(axes[0], vs):
        _show(ax, v, v.plane(data), cmap="gray", vmin=0, vmax=1)
        _decorate(ax, v)
    return fig


def checkerboard(fixed: Image, warped: Image, tiles: int = 8, index: Sequence[int] | None = None) -> Figure:
    """Alternating square tiles (``tiles`` across the longest side of each view) of fixed and warped."""
    _same_grid(fixed, warped, "checkerboard")
    if tiles < 1:
        raise InputError(f"tiles must be >= 1, got {tiles}")
    vs = views(fixed.grid, index)
    fig, axes = _new_figure(vs)
    a, b = normalised(fixed), normalised(warped)
    for ax, v in zip(axes[0], vs):
        pa, pb = v.plane(a), v.plane(b)
        side = max(pa.shape) / tiles
        rows, cols = np.indices(pa.shape)
        board = ((rows // side).astype(int) + (cols // side).astype(int)) % 2 == 0
        _show(ax, v, np.where(board, pa, pb), cmap="gray", vmin=0, vmax=1)
        _decorate(ax, v)
    return fig


def overlay(fixed: Image, warped: Image, index: Sequence[int] | None = None) -> Figure:
    """Colour overlay: fixed in magenta, warped in green; aligned structures appear grey/white."""
    _same_grid(fixed, warped, "overlay")
    vs = views(fixed.grid, index)
    fig, axes = _new_figure(vs)
    a, b = normalised(fixed), normalised(warped)
    for ax, v in zip(axes[0], vs):
        pa, pb = v.plane(a), v.plane(b)
        _show(ax, v, np.stack([pa, pb, pa], axis=-1))
        _decorate(ax, v)
    return fig


def difference(fixed: Image, rows: Mapping[str, Image], index: Sequence[int] | None = None) -> Figure:
    """``fixed - image`` after windowing both to [0, 1], one row per entry of ``rows`` (e.g. before and
    after), on one diverging colour scale centred at 0."""
    if not rows:
        raise InputError("difference: no images given")
    for name, img in rows.items():
        _same_grid(fixed, img, f"difference ({name})")
    vs = views(fixed.grid, index)
    fig, axes = _new_figure(vs, rows=len(rows), colorbar=True)
    a = normalised(fixed)
    diffs = {name: a - normalised(img) for name, img in rows.items()}
    limit = max(display_range(np.abs(d), 0, 99.5)[1] for d in diffs.values())
    im = None
    for r, (name, d) in enumerate(diffs.items()):
        for ax, v in zip(axes[r], vs):
            im = _show(ax, v, v.plane(d), cmap="RdBu_r", vmin=-limit, vmax=limit)
            _decorate(ax, v, f"{name}: {v.title}")
    _colorbar(fig, axes, im, "fixed − image (windowed)")
    return fig


def _boundaries(plane: np.ndarray) -> np.ndarray:
    """Pixels of a 2-D label plane whose label differs from a face neighbour's (label > 0 only)."""
    edge = np.zeros(plane.shape, dtype=bool)
    for axis in (0, 1):
        diff = np.diff(plane, axis=axis) != 0
        lead = [slice(None)] * 2
        lead[axis] = slice(1, None)
        edge[tuple(lead)] |= diff
        lag = [slice(None)] * 2
        lag[axis] = slice(None, -1)
        edge[tuple(lag)] |= diff
    return edge & (plane != 0)


def label_contours(image: Image, fixed_labels: Image, warped_labels: Image,
                   index: Sequence[int] | None = None) -> Figure:
    """Label boundaries over ``image``: fixed labels in yellow, warped labels in cyan, white where both
    coincide (all three images on one grid)."""
    _same_grid(image, fixed_labels, "label contours (fixed labels)")
    _same_grid(image, warped_labels, "label contours (warped labels)")
    vs = views(image.grid, index)
    fig, axes = _new_figure(vs)
    bg = normalised(image)
    fl, wl = (lab.data[0, 0].cpu().numpy() for lab in (fixed_labels, warped_labels))
    for ax, v in zip(axes[0], vs):
        _show(ax, v, v.plane(bg), cmap="gray", vmin=0, vmax=1)
        ef, ew = _boundaries(v.plane(fl)), _boundaries(v.plane(wl))
        rgba = np.zeros((*ef.shape, 4))
        rgba[ef & ~ew] = (1.0, 0.83, 0.0, 1.0)
        rgba[ew & ~ef] = (0.0, 0.85, 1.0, 1.0)
        rgba[ef & ew] = (1.0, 1.0, 1.0, 1.0)
        _show(ax, v, rgba)
        _decorate(ax, v)
    return fig


# ---- deformation fields -----------------------------------------------------------------------
def _field_array(field: Tensor, grid: Grid) -> np.ndarray:
    if field.ndim != grid.ndim + 2 or field.shape[1] != grid.ndim or tuple(field.shape[2:]) != grid.shape:
        raise InputError(f"expected a displacement field (1, {grid.ndim}, *{grid.shape}), got {tuple(field.shape)}")
    return field[0].detach().double().cpu().movedim(0, -1).numpy()  # (*S, D)


def grid_lines(field: Tensor, grid: Grid, background: Image | None = None, lines: int = 24,
               index: Sequence[int] | None = None) -> Figure:
    """The fixed grid's lines (about ``lines`` per side) mapped through ``x -> x + u(x)``.

    ``field`` ``(1, D, *S)`` mm on ``grid``. In-plane components are drawn; the out-of-plane
    component moves points off the slice and is not shown.
    """
    u = _field_array(field, grid)
    positions = grid.points(torch.float64).numpy() + u
    vs = views(grid, index)
    fig, axes = _new_figure(vs)
    if background is not None and not background.grid.same_as(grid):
        raise InputError(f"grid lines: the background lies on {background.grid}, the field on {grid}")
    bg = normalised(background) if background is not None else None
    for ax, v in zip(axes[0], vs):
        if bg is not None:
            _show(ax, v, v.plane(bg), cmap="gray", vmin=0, vmax=1, alpha=0.75)
        xy = v.screen(v.plane(positions))  # (rows, cols, 2)
        step_r, step_c = max(1, xy.shape[0] // lines), max(1, xy.shape[1] // lines)
        style = {"color": "#39d0ff", "linewidth": 0.6}
        for r in range(0, xy.shape[0], step_r):
            ax.plot(xy[r, :, 0], xy[r, :, 1], **style)
        for c in range(0, xy.shape[1], step_c):
            ax.plot(xy[:, c, 0], xy[:, c, 1], **style)
        _decorate(ax, v)
    return fig


def jacobian_map(det: Tensor | np.ndarray, grid: Grid, index: Sequence[int] | None = None) -> Figure:
    """Jacobian determinant ``(*S)`` (or ``(1, *S)``) on a diverging scale centred at 1 (white);
    blue < 1 (contraction), red > 1 (expansion); folded voxels (det J <= 0) in black.

    The scale is ``1 ± w`` with ``w`` the 99.5th percentile of ``|det J - 1|`` (at least 0.05; the
    lower end stops at 0), so small changes of volume stay visible; the title gives the extremes.
    """
    d = det.detach().double().cpu().numpy() if isinstance(det, Tensor) else np.asarray(det, dtype=np.float64)
    d = d.reshape(d.shape[-grid.ndim:]) if d.ndim == grid.ndim + 1 and d.shape[0] == 1 else d
    if d.shape != grid.shape:
        raise InputError(f"jacobian map of shape {d.shape} does not match the grid {grid.shape}")
    vs = views(grid, index)
    percent = 100.0 * float((d <= 0).mean())
    fig, axes = _new_figure(vs, colorbar=True, title=f"Jacobian determinant: min {d.min():.3g}, max {d.max():.3g}, "
                                                     f"folded {percent:.3g} %")
    half = max(float(np.percentile(np.abs(d - 1.0), 99.5)), 0.05)
    norm = TwoSlopeNorm(vmin=max(1.0 - half, 0.0), vcenter=1.0, vmax=1.0 + half)
    folds = ListedColormap([FOLD_COLOUR])
    im = None
    for ax, v in zip(axes[0], vs):
        plane = v.plane(d)
        im = _show(ax, v, plane, cmap="RdBu_r", norm=norm)
        folded = np.ma.masked_where(plane > 0, np.zeros_like(plane))
        _show(ax, v, folded, cmap=folds, vmin=0, vmax=1)
        _decorate(ax, v)
    _colorbar(fig, axes, im, "det J (black: ≤ 0)", extend="both")
    return fig


# ---- optimisation and landmarks ---------------------------------------------------------------
def loss_curves(stages: Sequence[Mapping[str, Any]]) -> Figure:
    """One panel per stage: the loss per iteration, each pyramid level in its own colour.

    ``stages``: ``[{name?, transform, metric, levels: [{shrink, sigma, losses: [...]}, ...]}, ...]``.
    """
    if not stages:
        raise InputError("loss curves: no stages")
    fig = Figure(figsize=(min(4.2 * len(stages), 13), 2.9), layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(stages), squeeze=False)[0]
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    for ax, stage in zip(axes, stages):
        start = 0
        for k, level in enumerate(stage.get("levels", [])):
            losses = np.asarray(level.get("losses", []), dtype=np.float64)
            if losses.size:
                ax.plot(np.arange(start, start + losses.size), losses, color=palette[k % len(palette)], linewidth=1.2,
                        label=f"shrink {level.get('shrink', '?')}, σ {level.get('sigma', '?')}")
                start += losses.size
                ax.axvline(start - 0.5, color="#dddddd", linewidth=0.8, zorder=0)
        name = stage.get("name") or stage.get("transform", "stage")
        ax.set_title(f"{name} ({stage.get('metric', '?')})", fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, color="#eeeeee")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, frameon=False)
    return fig


def landmarks(fixed_points: np.ndarray | Tensor, moving_points: np.ndarray | Tensor, grid: Grid,
              mapped_points: np.ndarray | Tensor | None = None, background: Image | None = None) -> Figure:
    """Landmark displacements: grey arrows from each fixed point to its moving point (before) and red
    arrows from the mapped fixed point to the moving point (the residual after registration).

    Points ``(N, D)`` world mm. 3-D points are projected onto the three views; ``background`` (on
    ``grid``) is shown as a mean-intensity projection (3-D) or the image (2-D).
    """
    arrays = [np.asarray(p.detach().cpu() if isinstance(p, Tensor) else p, dtype=np.float64)
              for p in (fixed_points, moving_points)]
    if mapped_points is not None:
        arrays.append(np.asarray(mapped_points.detach().cpu() if isinstance(mapped_points, Tensor) else mapped_points,
                                 dtype=np.float64))
    if any(a.ndim != 2 or a.shape != arrays[0].shape or a.shape[1] != grid.ndim for a in arrays):
        raise InputError(f"landmarks: expected point sets of equal shape (N, {grid.ndim}), "
                         f"got {[a.shape for a in arrays]}")
    vs = views(grid)
    fig, axes = _new_figure(vs)
    bg = normalised(background) if background is not None else None
    for ax, v in zip(axes[0], vs):
        if bg is not None:
            _show(ax, v, v.project(bg) if grid.ndim == 3 else v.plane(bg), cmap="gray", vmin=0, vmax=1, alpha=0.8)
        p, q = v.screen(arrays[0]), v.screen(arrays[1])
        ax.quiver(p[:, 0], p[:, 1], q[:, 0] - p[:, 0], q[:, 1] - p[:, 1], angles="xy", scale_units="xy", scale=1,
                  color=BEFORE_COLOUR, width=0.004, label="before")
        if mapped_points is not None:
            m = v.screen(arrays[2])
            ax.quiver(m[:, 0], m[:, 1], q[:, 0] - m[:, 0], q[:, 1] - m[:, 1], angles="xy", scale_units="xy",
                      scale=1, color=AFTER_COLOUR, width=0.004, label="after")
        ax.scatter(q[:, 0], q[:, 1], s=6, color="#2ca02c", zorder=3, label="moving")
        _decorate(ax, v, v.name)
    axes[0, 0].legend(fontsize=7, loc="lower left", framealpha=0.8)
    return fig
