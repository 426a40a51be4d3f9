"""Assemble the evaluation document (``metrics.json``) from label maps, a warp and landmarks.

Shape (sections present when their inputs are)::

    {"labels": {"<id>": {"status": "ok", "dice", "jaccard", "hd", "hd95", "assd",
                         "volume_fixed_mm3", "volume_warped_mm3"}, ...},
     "mean": {"dice", "jaccard", "hd", "hd95", "assd", "n", "n_missing"},
     "points": {"tre_mean", "tre_median", "tre_max", "tre_std", "n", "initial": {...}},
     "jacobian": {"fold_percent", "sdlogj", "min", "max", "mean", "n", "n_folded"},
     "field": {"curl_mean", "curl_p95", "curl_max", "displacement_mean", "displacement_max"}}

A label absent from one side gets a ``status`` ("missing in warped", "missing in fixed", "missing in
both"). Its Dice and Jaccard are 0 when it is present on one side (the warp lost or invented it)
and null when it is absent from both; its distances are null. The mean Dice and Jaccard are over
the labels whose Dice is defined (``metrics.overlap.mean_of``, the one mean used everywhere), the
mean distances over the labels with status "ok"; ``n`` counts the labels in the mean Dice and
``n_missing`` those without status "ok".
Distances are mm, volumes mm³.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..functional.jacobian import jacobian_det
from ..grid import Grid
from ..image import Image
from ..io.atomic import atomic_path, check_not_input
from ..resample import resample
from .fields import curl_magnitude, error_summary, jacobian_stats
from .overlap import OK, dice, jaccard, label_array, mean_of, presence_status
from .points import map_points, require_inside, tre, tre_summary
from .surface import surface_metrics

LABEL_METRICS = ("dice", "jaccard", "hd", "hd95", "assd")
OVERLAP_METRICS = ("dice", "jaccard")


def _name(image: Image, default: str) -> str:
    return str(image.meta.get("source", default))


def label_volume(image: Image, name: str) -> np.ndarray:
    """The ``(*S)`` integer array of a single-image, single-channel label map (InputError otherwise)."""
    if image.batch_size != 1 or image.channels != 1:
        raise InputError(f"{name}: a label map must be one single-channel image, got data {tuple(image.data.shape)}")
    return label_array(image.data[0, 0], name)


def _check_orthogonal(grid: Grid, name: str) -> None:
    d = grid.direction
    if not np.allclose(d.T @ d, np.eye(grid.ndim), atol=1e-6):
        raise InputError(f"{name}: the voxel axes are not orthogonal (sheared grid); surface distances need an "
                         "orthogonal grid, resample the label maps first")


def check_inputs(fixed: Image, *, fixed_labels: Image | None = None, moving_labels: Image | None = None,
                 fixed_points: np.ndarray | None = None, moving_points: np.ndarray | None = None,
                 names: dict[str, str] | None = None) -> None:
    """Check, before any work, what evaluating a registration onto ``fixed`` will need: integer label
    maps of the image's dimension, fixed points ``(N, D)`` RAS mm inside the fixed image (the complete
    map is sampled there) and as many moving points. ``names`` maps the keyword names to the file
    names used in errors."""
    names = names or {}
    for key, image in (("fixed_labels", fixed_labels), ("moving_labels", moving_labels)):
        if image is not None:
            name = names.get(key, key)
            label_volume(image, name)
            if image.ndim != fixed.ndim:
                raise InputError(f"{name}: a {image.ndim}-D label map for a {fixed.ndim}-D image")
    if (fixed_points is None) != (moving_points is None):
        raise InputError("give both the fixed and the moving points, or neither")
    if fixed_points is not None and moving_points is not None:
        fname, mname = names.get("fixed_points", "fixed points"), names.get("moving_points", "moving points")
        require_inside(torch.as_tensor(fixed_points, dtype=torch.float64), fixed.grid, fname, "the fixed image")
        if moving_points.shape != fixed_points.shape:
            raise InputError(f"{mname}: holds {moving_points.shape[0]} {moving_points.shape[1]}-D points but {fname} "
                             f"holds {fixed_points.shape[0]} {fixed_points.shape[1]}-D points; landmarks must "
                             "correspond one to one")


def parse_labels(text: str, name: str = "--labels") -> list[int]:
    """Label ids from ``"2,3 4"`` (commas and/or whitespace); InputError for anything else."""
    tokens = [t for t in text.replace(",", " ").split() if t]
    try:
        ids = [int(t) for t in tokens]
    except ValueError:
        raise InputError(f"{name}: expected integer label ids separated by commas or spaces, got {text!r}") from None
    if not ids:
        raise InputError(f"{name}: no label ids given")
    return list(dict.fromkeys(ids))


def read_labels_file(path: str | os.PathLike) -> list[int]:
    """Label ids from a text file (one or more per line, commas/whitespace; ``#`` starts a comment)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such labels file")
    lines = [line.split("#", 1)[0] for line in p.read_text().splitlines()]
    return parse_labels(" ".join(lines), str(path))


def label_metrics(fixed: np.ndarray, warped: np.ndarray, spacing: Sequence[float],
                  labels: Sequence[int] | None = None) -> dict[str, dict[str, Any]]:
    """Per-label overlap and surface metrics of two integer ``(*S)`` label maps on one grid.

    ``labels`` defaults to every non-zero label present in either map. Keys are label ids as strings.
    """
    if fixed.shape != warped.shape:
        raise InputError(f"label maps differ in shape: {fixed.shape} vs {warped.shape}")
    if labels is None:
        labels = [int(v) for v in np.union1d(np.unique(fixed), np.unique(warped)) if v != 0]
    voxel_mm3 = float(np.prod(spacing))
    out: dict[str, dict[str, Any]] = {}
    for label in labels:
        a, b = fixed == label, warped == label
        na, nb = int(a.sum()), int(b.sum())
        entry: dict[str, Any] = {"status": presence_status(na > 0, nb > 0)}
        entry.update(dict.fromkeys(LABEL_METRICS))
        entry.update(dice=dice(a, b), jaccard=jaccard(a, b))
        if entry["status"] == OK:
            entry.update(surface_metrics(a, b, spacing))
        entry.update(volume_fixed_mm3=na * voxel_mm3, volume_warped_mm3=nb * voxel_mm3)
        out[str(label)] = entry
    return out


def summarise_labels(per_label: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean Dice and Jaccard over the labels where they are defined (a lost label counts 0), mean
    distances over the labels with status "ok"; ``n`` (labels in the mean Dice), ``n_missing``."""
    entries = list(per_label.values())
    ok = [v for v in entries if v["status"] == OK]
    mean: dict[str, Any] = {k: mean_of(v[k] for v in entries) for k in OVERLAP_METRICS}
    mean.update({k: mean_of(v[k] for v in ok) for k in LABEL_METRICS if k not in OVERLAP_METRICS})
    mean.update(n=sum(v["dice"] is not None for v in entries), n_missing=len(entries) - len(ok))
    return mean


def field_sections(field: Tensor, grid: Grid) -> dict[str, dict[str, Any]]:
    """``jacobian`` and ``field`` sections for a ``(1, D, *S)`` displacement field on ``grid``."""
    curl = curl_magnitude(field, grid)
    magnitude = field.norm(dim=1)
    fld = {f"curl_{k}": v for k, v in error_summary(curl).items() if k != "median"}
    fld.update(displacement_mean=float(magnitude.mean()), displacement_max=float(magnitude.max()))
    return {"jacobian": jacobian_stats(jacobian_det(field, grid)), "field": fld}


def point_section(fixed_points: Tensor, moving_points: Tensor, warp: tuple[Tensor, Grid] | None = None,
                  fixed_name: str = "fixed points") -> dict[str, Any]:
    """TRE of ``(N, D)`` fixed points mapped through ``warp`` (identity if None) against moving points.

    With a warp, ``initial`` holds the TRE before it (the identity).
    """
    initial = tre(fixed_points, moving_points)
    if warp is None:
        return tre_summary(initial)
    field, grid = warp
    mapped = map_points(fixed_points.to(field.device), field, grid, fixed_name)
    section: dict[str, Any] = tre_summary(tre(mapped, moving_points))
    section["initial"] = tre_summary(initial)
    return section


def evaluate(fixed_labels: Image | None = None, warped_labels: Image | None = None,
             labels: Sequence[int] | None = None, warp: tuple[Tensor, Grid] | None = None,
             fixed_points: Tensor | None = None, moving_points: Tensor | None = None,
             resample_labels: bool = False, points_name: str = "fixed points") -> dict[str, Any]:
    """The evaluation document (see the module doc) from whichever inputs are given.

    Label maps must share a grid unless ``resample_labels``, which resamples ``warped_labels`` onto
    the fixed grid with nearest-neighbour interpolation. Points are ``(N, D)`` world RAS mm; fixed
    points must lie inside the warp's grid (or, without a warp, the fixed label map's grid).
    ``points_name`` names the fixed points in error messages.
    """
    doc: dict[str, Any] = {}
    if (fixed_labels is None) != (warped_labels is None):
        raise InputError("give both the fixed and the warped label maps, or neither")
    if (fixed_points is None) != (moving_points is None):
        raise InputError("give both the fixed and the moving points, or neither")
    if fixed_labels is not None and warped_labels is not None:
        fname, wname = _name(fixed_labels, "fixed labels"), _name(warped_labels, "warped labels")
        fixed, warped = label_volume(fixed_labels, fname), label_volume(warped_labels, wname)
        if not warped_labels.grid.same_as(fixed_labels.grid):
            if not resample_labels:
                raise InputError(f"{wname} lies on {warped_labels.grid} but {fname} on {fixed_labels.grid}; "
                                 "pass --resample to resample the warped labels onto the fixed grid (nearest)")
            warped = label_volume(resample(warped_labels, fixed_labels.grid, interp="nearest"), wname)
        _check_orthogonal(fixed_labels.grid, fname)
        per_label = label_metrics(fixed, warped, fixed_labels.grid.spacing, labels)
        doc["labels"] = per_label
        doc["mean"] = summarise_labels(per_label)
    if fixed_points is not None and moving_points is not None:
        if warp is None and fixed_labels is not None:
            require_inside(fixed_points.double(), fixed_labels.grid, points_name, "the fixed label map's grid")
        doc["points"] = point_section(fixed_points, moving_points, warp, points_name)
    if warp is not None:
        doc.update(field_sections(*warp))
    return doc


def write_metrics(doc: dict[str, Any], path: str | os.PathLike, csv_path: str | os.PathLike | None = None,
                  inputs: Sequence[str | os.PathLike] = ()) -> None:
    """Write the document as JSON (and the label table as CSV), atomically, never over an input."""
    check_not_input(path, inputs)
    table = None
    if csv_path is not None:
        check_not_input(csv_path, inputs)
        table = label_table_csv(doc)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    if csv_path is not None and table is not None:
        with atomic_path(csv_path) as tmp:
            tmp.write_text(table)


def label_table_csv(doc: dict[str, Any]) -> str:
    """CSV text: one row per label (``label,status,dice,...``) and a final ``mean`` row."""
    if "labels" not in doc:
        raise InputError("a CSV table needs label maps (--fixed-labels and --warped-labels)")
    columns = ["label", "status", *LABEL_METRICS, "volume_fixed_mm3", "volume_warped_mm3"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    fmt = lambda v: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)  # noqa: E731
    for label, entry in doc["labels"].items():
        writer.writerow([label] + [fmt(entry[c]) for c in columns[1:]])
    mean = doc["mean"]
    writer.writerow(["mean", f"n={mean['n']}", *(fmt(mean[k]) for k in LABEL_METRICS), "", ""])
    return buf.getvalue()
