"""Read and write landmark files as ``(N, D)`` world points in RAS+ mm.

Formats (chosen by suffix and header):

* ``.csv`` with a header naming columns ``x, y[, z]`` (any case; other columns are ignored), e.g.
  ANTs' ``x,y,z,t,label,comment`` (LPS mm, as ``antsApplyTransformsToPoints`` reads them) and the
  ANHIR/BIRL ``,X,Y`` layout (an unnamed row-number column, then pixel indices).
* ``.txt``/``.pts``: the elastix point file -- a first line ``point`` (ITK physical, i.e. LPS mm)
  or ``index`` (voxel indices), a second line with the number of points, then one point per line --
  or plain whitespace-separated rows without a header.

``space`` says what the numbers in the file are: ``"ras"`` or ``"lps"`` world mm, or ``"voxel"``
indices of ``grid`` (array-axis order, as ``Grid.voxel_to_world``; for a 2-D image read through
SimpleITK the first index is the column, x, as ANHIR's ``X``). ``space=None`` takes the file's own
convention where its layout declares one (elastix ``point`` -> lps, ``index`` -> voxel; ANTs
``x,y,z,t`` -> lps; ANHIR ``,X,Y`` -> voxel) and raises otherwise, since a guess could be 2x wrong.
The lung-CT landmarks in the shared data (``3DCT_lung_baseline_landmarks.txt``) are elastix
``point`` files: LPS world mm of the CT's physical space.
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import InputError
from ..grid import Grid
from .atomic import atomic_path, check_not_input
from .lps import flip_points
from .spaces import SPACES

Space = Literal["ras", "lps", "voxel"]
CSV_SUFFIXES = (".csv",)
TEXT_SUFFIXES = (".txt", ".pts")
_AXES = ("x", "y", "z")


def read_points(path: str | os.PathLike, space: Space | None = None, grid: Grid | None = None) -> np.ndarray:
    """Read a landmark file -> ``(N, D)`` float64 RAS world mm (see the module doc for formats)."""
    p = Path(path)
    if space is not None and space not in SPACES:
        raise InputError(f"space must be one of {SPACES}, got {space!r}")
    if not p.is_file():
        raise InputError(f"{path}: no such landmark file")
    try:
        text = p.read_text()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text landmark file ({exc.reason})") from exc
    if not text.strip():
        raise InputError(f"{path}: empty landmark file")
    suffix = p.suffix.lower()
    if suffix in CSV_SUFFIXES:
        values, declared = _parse_csv(text, p)
    elif suffix in TEXT_SUFFIXES:
        values, declared = _parse_text(text, p, space)
    else:
        raise InputError(f"{path}: unknown landmark extension; expected {', '.join(CSV_SUFFIXES + TEXT_SUFFIXES)}")
    space = space or declared
    if space is None:
        raise InputError(f"{path}: the file does not say whether its points are RAS or LPS mm or voxel "
                         f"indices; pass space='ras', 'lps' or 'voxel' (with grid=)")
    return _to_ras(values, space, grid, p)


def _to_ras(values: np.ndarray, space: str, grid: Grid | None, p: Path) -> np.ndarray:
    d = values.shape[1]
    if space == "lps":
        return flip_points(values)
    if space == "ras":
        return values
    if grid is None:
        raise InputError(f"{p}: points are voxel indices; pass grid= (the image's Grid) to place them in world space")
    if grid.ndim != d:
        raise InputError(f"{p}: {d}-D points cannot be indices of a {grid.ndim}-D grid")
    return grid.voxel_to_world(torch.from_numpy(values)).numpy()


def _numbers(rows: list[list[str]], p: Path, first_line: int) -> np.ndarray:
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        bad = next(i for i, r in enumerate(rows) if len(r) != len(rows[0]))
        raise InputError(f"{p}: line {first_line + bad}: {len(rows[bad])} values where earlier lines have {len(rows[0])}")
    d = widths.pop()
    if d not in (2, 3):
        raise InputError(f"{p}: expected 2 or 3 coordinates per point, got {d}")
    values = np.empty((len(rows), d))
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            try:
                values[i, j] = float(v)
            except ValueError:
                raise InputError(f"{p}: line {first_line + i}: {v!r} is not a number") from None
    if not np.all(np.isfinite(values)):
        raise InputError(f"{p}: landmark coordinates contain NaN or Inf")
    return values


def _parse_csv(text: str, p: Path) -> tuple[np.ndarray, str | None]:
    table = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    header = [c.strip() for c in table[0]]
    names = [c.lower() for c in header]
    if "x" not in names or "y" not in names:
        raise InputError(f"{p}: the CSV header {header} must name columns x and y (and z for 3-D points)")
    columns = [names.index(a) for a in _AXES if a in names]
    rows = table[1:]
    if not rows:
        raise InputError(f"{p}: the CSV has a header but no points")
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise InputError(f"{p}: line {i + 2}: {len(r)} fields, the header has {len(header)}")
    values = _numbers([[r[c].strip() for c in columns] for r in rows], p, first_line=2)
    declared = None
    if "t" in names:
        declared = "lps"  # ANTs' point CSV (x, y, z, t, ...): ITK physical space
    elif names[0] == "" and all(h in ("X", "Y", "Z") for h in header[1:]):
        declared = "voxel"  # ANHIR/BIRL: unnamed index column, then pixel coordinates
    return values, declared


def _parse_text(text: str, p: Path, space: str | None) -> tuple[np.ndarray, str | None]:
    lines = [(i + 1, ln.split()) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    kind = lines[0][1][0].lower() if lines[0][1] else ""
    if kind not in ("point", "index"):
        return _numbers([r for _, r in lines], p, first_line=lines[0][0]), None
    declared = "lps" if kind == "point" else "voxel"
    if space is not None and space != declared:
        raise InputError(f"{p}: an elastix '{kind}' file holds {'LPS world mm' if kind == 'point' else 'voxel indices'},"
                         f" not {space!r} values")
    if len(lines) < 2 or len(lines[1][1]) != 1 or not lines[1][1][0].isdigit():
        raise InputError(f"{p}: elastix point file: line 2 must be the number of points")
    count = int(lines[1][1][0])
    rows = lines[2:]
    if count != len(rows):
        raise InputError(f"{p}: header says {count} points, the file has {len(rows)}")
    if not rows:
        raise InputError(f"{p}: no points in the file")
    return _numbers([r for _, r in rows], p, first_line=rows[0][0]), declared


def write_points(points: np.ndarray, path: str | os.PathLike, space: Space = "ras", grid: Grid | None = None,
                 inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Write ``(N, D)`` RAS world points atomically, converted to ``space`` (see the module doc).

    ``.csv``: header ``x,y[,z]`` for RAS, ANTs' ``x,y[,z],t`` (t = 0) for LPS, the ANHIR layout
    ``,X,Y[,Z]`` for voxel indices.
    ``.txt``/``.pts``: elastix ``point`` (lps) or ``index`` (voxel) files; ``ras`` writes plain rows.
    Refuses to overwrite any of ``inputs``.
    """
    values = np.asarray(points, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] not in (2, 3) or len(values) == 0:
        raise InputError(f"{path}: points must be a non-empty (N, 2) or (N, 3) array, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise InputError(f"{path}: points contain NaN or Inf")
    if space not in SPACES:
        raise InputError(f"space must be one of {SPACES}, got {space!r}")
    suffix = Path(path).suffix.lower()
    if suffix not in CSV_SUFFIXES + TEXT_SUFFIXES:
        raise InputError(f"{path}: unknown landmark extension; expected {', '.join(CSV_SUFFIXES + TEXT_SUFFIXES)}")
    target = check_not_input(path, inputs)
    d = values.shape[1]
    if space == "lps":
        values = flip_points(values)
    elif space == "voxel":
        if grid is None or grid.ndim != d:
            raise InputError(f"{path}: writing voxel indices needs the {d}-D grid of the image (grid=)")
        values = grid.world_to_voxel(torch.from_numpy(values)).numpy()
    rows = [" ".join(repr(float(v)) for v in row) for row in values]
    if suffix in CSV_SUFFIXES:
        if space == "voxel":  # the ANHIR layout
            lines = [",".join(["", *(a.upper() for a in _AXES[:d])])]
            lines += [",".join([str(i), *r.split()]) for i, r in enumerate(rows)]
        elif space == "lps":  # the ANTs layout: a time column t = 0
            lines = [",".join([*_AXES[:d], "t"])] + [",".join([*r.split(), "0"]) for r in rows]
        else:
            lines = [",".join(_AXES[:d])] + [",".join(r.split()) for r in rows]
    else:
        header = {"lps": ["point", str(len(rows))], "voxel": ["index", str(len(rows))], "ras": []}[space]
        lines = header + rows
    with atomic_path(target) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return target
