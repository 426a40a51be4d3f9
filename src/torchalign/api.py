"""The top-level face of torchalign: ``import torchalign as ta``.

A thin layer over the modules that do the work: :func:`torchalign.config.resolve_config` builds the
settings, :func:`torchalign.registration.register` runs them, :func:`torchalign.resample.resample`
warps, :mod:`torchalign.outputs` writes files and :func:`torchalign.metrics.evaluate` measures.

```python
import torchalign as ta
r = ta.register("fixed.nii.gz", "moving.nii.gz", preset="affine")
warped = r.warp()                                    # the moving image on the fixed grid
labels = r.warp("moving_seg.nii.gz", interp="label")
r.warp_points([[10.0, -20.0, 5.0]])                  # fixed-space world points -> moving space
r.inverse.warp("fixed.nii.gz")                       # the fixed image on the moving grid
r.save("out/")                                       # warped.nii.gz, transform.txt, result.json ...
r.evaluate(fixed_labels="fixed_seg.nii.gz", moving_labels="moving_seg.nii.gz")
```
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .config import RegistrationConfig, resolve_config
from .errors import InputError
from .functional.sampling import Interp, Padding
from .grid import Grid
from .image import Image
from .io import read_image, write_image
from .metrics.evaluate import evaluate as evaluate_document
from .outputs import evaluation, write_outputs
from .registration import Result
from .registration import register as register_images
from .resample import resample
from .transforms.base import SpatialTransform

ImageLike = Union[str, os.PathLike, Image, Tensor, np.ndarray]
"""A path (anything :func:`read_image` reads), an :class:`Image`, or an array of shape ``(*S)`` or
``(B, C, *S)`` (2-D or 3-D) placed on a grid of the given spacing, origin 0 and identity direction."""

DEFAULT_PRESET = "syn"


def as_image(x: ImageLike, spacing: Sequence[float] | float | None = None, name: str = "image") -> Image:
    """An :class:`Image` from a path, an Image, or a ``(*S)`` / ``(B, C, *S)`` array with ``spacing`` (mm)."""
    if isinstance(x, Image):
        return x
    if isinstance(x, (str, os.PathLike)):
        return read_image(x, spacing=spacing)
    if not isinstance(x, (Tensor, np.ndarray)):
        raise InputError(f"{name}: expected a path, an Image or an array, got {type(x).__name__}")
    data = torch.as_tensor(x)
    if data.ndim in (2, 3):
        data = data[None, None]
    elif data.ndim not in (4, 5):
        raise InputError(f"{name}: an array must be (*S) or (B, C, *S) for a 2-D or 3-D image, "
                         f"got shape {tuple(data.shape)}")
    ndim = data.ndim - 2
    if spacing is not None and np.ndim(spacing) == 0:
        spacing = [float(spacing)] * ndim  # type: ignore[arg-type]
    return Image(data, Grid.from_geometry(data.shape[2:], spacing=spacing))


def _points(points: Tensor | np.ndarray | Sequence[Sequence[float]]) -> Tensor:
    p = torch.as_tensor(points, dtype=torch.float64)
    if p.ndim < 2:
        raise InputError(f"points must be (N, D) or (B, N, D) world coordinates, got shape {tuple(p.shape)}")
    return p


def _on(x: ImageLike, grid: Grid, name: str) -> Image:
    """``x`` as an Image; a bare array is taken to lie on ``grid``."""
    if isinstance(x, (Tensor, np.ndarray)):
        data = torch.as_tensor(x)
        return Image(data[None, None] if data.ndim == grid.ndim else data, grid)
    return as_image(x, name=name)


def _source(image: Image) -> str | None:
    """The file an image was read from, when it still exists."""
    src = image.meta.get("source")
    return str(src) if src and Path(src).is_file() else None


@dataclass(frozen=True)
class Registration:
    """The outcome of :func:`register`: the images, the settings and the engine's
    :class:`~torchalign.registration.Result` (``transform`` maps fixed world points to moving ones)."""

    fixed: Image
    moving: Image
    config: RegistrationConfig
    result: Result

    @property
    def transform(self) -> SpatialTransform:
        """Fixed-space world points ``(B, N, D)`` -> moving-space world points (RAS mm)."""
        return self.result.transform

    @property
    def matrix(self) -> np.ndarray:
        """The linear stages as a ``(D+1, D+1)`` RAS world matrix (moving_from_fixed)."""
        return self.result.linear[0].cpu().numpy()

    @property
    def inverse(self) -> Registration:
        """The same registration read the other way: moving is fixed and fixed is moving.

        ``r.inverse.warp()`` puts the fixed image on the moving grid; ``r.inverse.warp_points``
        carries moving-space points into fixed space.
        """
        res = self.result
        flipped = replace(res, transform=res.inverse, inverse=res.transform, linear=torch.linalg.inv(res.linear),
                          init=np.linalg.inv(res.init))
        return Registration(self.moving, self.fixed, self.config, flipped)

    def warp(self, image: ImageLike | None = None, interp: Interp = "linear", padding: Padding = "zeros") -> Image:
        """Resample ``image`` (default: the moving image; an array lies on the moving grid) onto the
        fixed grid: ``out(x) = image(T(x))``. ``interp``: nearest, linear, cubic or label."""
        img = self.moving if image is None else _on(image, self.moving.grid, "image to warp")
        return resample(img.to(self.result.linear.device), self.fixed.grid, self.transform, interp, padding)

    def warp_points(self, points: Tensor | np.ndarray | Sequence[Sequence[float]]) -> Tensor:
        """Carry fixed-space world points ``(N, D)`` or ``(B, N, D)`` (RAS mm) to moving space (same shape)."""
        p = _points(points).to(self.result.linear.device)
        with torch.no_grad():
            out = self.transform(p if p.ndim > 2 else p[None])
        return out if p.ndim > 2 else out[0]

    def evaluate(self, fixed_labels: ImageLike | None = None, moving_labels: ImageLike | None = None,
                 labels: Sequence[int] | None = None, fixed_points: Any = None, moving_points: Any = None
                 ) -> dict[str, Any]:
        """Overlap (Dice, HD95, ...) of the warped moving labels with the fixed labels, TRE of landmarks
        (fixed points carried by the transform against moving points) and, for deformable results,
        Jacobian and curl statistics: the document of :func:`torchalign.metrics.evaluate`."""
        if (fixed_labels is None) != (moving_labels is None):
            raise InputError("give both fixed_labels and moving_labels, or neither")
        fl = None if fixed_labels is None else _on(fixed_labels, self.fixed.grid, "fixed_labels")
        ml = None if moving_labels is None else _on(moving_labels, self.moving.grid, "moving_labels")
        return evaluation(self.fixed, self.result, fixed_labels=fl, moving_labels=ml, labels=labels,
                          fixed_points=None if fixed_points is None else _points(fixed_points),
                          moving_points=None if moving_points is None else _points(moving_points))[0]

    def save(self, outdir: str | os.PathLike, *, fixed_labels: ImageLike | None = None,
             moving_labels: ImageLike | None = None, labels: Sequence[int] | None = None,
             fixed_points: Any = None, moving_points: Any = None, write_inverse: bool = False,
             write_jacobian: bool = False, report: bool = False) -> dict[str, Path]:
        """Write what ``torchalign register`` writes (see *outputs*) into ``outdir``; return the paths.

        Images that were not read from files are first written there as ``fixed.nii.gz`` and
        ``moving.nii.gz``, so ``result.json`` names real files and the report can be built.
        ``write_inverse``/``write_jacobian`` add ``inverse_warp.nii.gz``/``jacobian.nii.gz``.
        """
        out = Path(outdir)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        sources = []
        for name, image in (("fixed", self.fixed), ("moving", self.moving)):
            src = _source(image)
            if src is None:
                paths[name] = write_image(image.to("cpu"), out / f"{name}.nii.gz")
                src = str(paths[name])
            sources.append(src)
        optional = [name for name, wanted in (("inverse_warp", write_inverse), ("jacobian", write_jacobian)) if wanted]
        paths.update(write_outputs(
            out, self.fixed, self.moving, self.result, self.config, sources, optional=optional,
            fixed_labels=None if fixed_labels is None else _on(fixed_labels, self.fixed.grid, "fixed_labels"),
            moving_labels=None if moving_labels is None else _on(moving_labels, self.moving.grid, "moving_labels"),
            labels=labels, fixed_points=None if fixed_points is None else _points(fixed_points).numpy(),
            moving_points=None if moving_points is None else _points(moving_points).numpy()))
        if report:
            from .report import build_report

            paths["report"] = build_report(out)
        return paths


def register(fixed: ImageLike, moving: ImageLike, preset: str | None = None, *,
             config: str | os.PathLike | RegistrationConfig | None = None, spacing: Sequence[float] | None = None,
             fixed_mask: ImageLike | None = None, moving_mask: ImageLike | None = None,
             init: str | np.ndarray | None = None, device: str | torch.device | None = None, progress: bool = False,
             **overrides: Any) -> Registration:
    """Register ``moving`` to ``fixed`` and return a :class:`Registration`.

    Args:
        fixed: a path, an :class:`Image`, or an array (then ``spacing`` in mm places it).
        moving: the image to align with ``fixed``, given the same ways.
        preset: a preset name (``rigid``, ``affine``, ``syn``, ``svf``, ``ffd``, ...); ``syn`` when
            neither ``preset`` nor ``config`` is given.
        config: a YAML file (on top of ``preset``) or a ready :class:`RegistrationConfig`.
        spacing: voxel size in mm of array inputs (default 1).
        fixed_mask: where to measure the similarity on the fixed grid (non-zero = use).
        moving_mask: the same on the moving grid.
        overrides: top-level settings (``init``, ``seed``, ``normalize``, ``stages``) and ``metric``
            (applied to every stage), as on the command line.
        init: an initialisation method (``none``, ``geometry``, ``com``, ``moments``, ``search``), or a
            ``(D+1, D+1)`` RAS world matrix (moving_from_fixed) to start from.
        device: where to run (default: where the fixed image lies).
        progress: show progress bars.

    Example:
        `r = ta.register("fixed.png", "moving.png", preset="affine", metric="mse")`
    """
    if isinstance(init, str):
        overrides["init"], init = init, None
    if isinstance(config, RegistrationConfig):
        if preset is not None or overrides:
            raise InputError("give either a RegistrationConfig or a preset with overrides, not both")
        settings = config
    else:
        if preset is None and config is None:
            preset = DEFAULT_PRESET
        settings = resolve_config(preset, config, overrides)
    f = as_image(fixed, spacing, "fixed")
    m = as_image(moving, spacing, "moving")
    fm = None if fixed_mask is None else as_image(fixed_mask, spacing, "fixed_mask")
    mm = None if moving_mask is None else as_image(moving_mask, spacing, "moving_mask")
    result = register_images(f, m, settings, fixed_mask=fm, moving_mask=mm, init=init, device=device,
                             progress=progress)
    return Registration(f, m, settings, result)


def evaluate(fixed_labels: ImageLike | None = None, warped_labels: ImageLike | None = None,
             labels: Sequence[int] | None = None, *, fixed_points: Any = None, moving_points: Any = None,
             warp: tuple[Tensor, Grid] | None = None, resample_labels: bool = False) -> dict[str, Any]:
    """:func:`torchalign.metrics.evaluate` on paths, Images or arrays: label maps on one grid (Dice,
    Jaccard, HD, HD95, ASSD per label and their means), ``(N, D)`` world points (TRE, fixed points
    carried through ``warp`` = ``(displacement (1, D, *S), grid)`` when given) and field statistics
    (det J, folding, SDlogJ, curl)."""
    fl = None if fixed_labels is None else as_image(fixed_labels, name="fixed_labels")
    wl = None
    if warped_labels is not None:  # a bare array lies on the fixed labels' grid
        wl = _on(warped_labels, fl.grid, "warped_labels") if fl is not None else as_image(warped_labels)
    return evaluate_document(fl, wl, labels=labels, warp=warp, resample_labels=resample_labels,
                             fixed_points=None if fixed_points is None else _points(fixed_points),
                             moving_points=None if moving_points is None else _points(moving_points))
