"""The pairs of a batch: rows of a ``PAIRS.csv`` file, or one fixed template with a glob of moving images.

``PAIRS.csv`` has a header naming at least ``fixed,moving``; optional columns are ``id``,
``fixed_labels,moving_labels`` (evaluated with Dice), ``fixed_mask,moving_mask`` and
``fixed_points,moving_points`` (TRE). Relative paths are relative to the CSV file's folder. An
empty ``id`` (or no ``id`` column) gives the row number (1 for the first data row). Ids name the
output folders ``OUTDIR/<id>/``, so they must be unique and safe as folder names.
"""
from __future__ import annotations

import csv
import glob
import re
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import InputError

REQUIRED = ("fixed", "moving")
FILE_COLUMNS = ("fixed", "moving", "fixed_labels", "moving_labels", "fixed_mask", "moving_mask",
                "fixed_points", "moving_points")
COLUMNS = ("id",) + FILE_COLUMNS
_TOGETHER = (("fixed_labels", "moving_labels"), ("fixed_points", "moving_points"))
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclass(frozen=True)
class Pair:
    """One registration job: absolute input paths (``None`` when not given) and the output folder name."""

    id: str
    fixed: str
    moving: str
    fixed_labels: str | None = None
    moving_labels: str | None = None
    fixed_mask: str | None = None
    moving_mask: str | None = None
    fixed_points: str | None = None
    moving_points: str | None = None

    def inputs(self) -> dict[str, str]:
        """The given input files by column name, in column order."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "id" and getattr(self, f.name) is not None}


def check_id(pair_id: str, where: str) -> str:
    """``pair_id`` if it is a safe folder name; InputError naming ``where`` otherwise."""
    if not _SAFE_ID.fullmatch(pair_id):
        raise InputError(f"{where}: id {pair_id!r} cannot name an output folder; use letters, digits and . _ + - "
                         "(not starting with . _ + -)")
    return pair_id


def _absolute(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _check_unique(pairs: list[Pair], places: list[str]) -> None:
    """InputError naming both places of the first repeated id (``places[i]`` says where pair ``i`` came from)."""
    seen: dict[str, str] = {}
    for pair, place in zip(pairs, places):
        if pair.id in seen:
            raise InputError(f"duplicate id {pair.id!r}: {seen[pair.id]} and {place}")
        seen[pair.id] = place


def read_pairs(path: str | Path) -> list[Pair]:
    """The pairs listed in a CSV file (see the module doc); InputError naming the file and line on bad input."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such pairs file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not a UTF-8 text file ({exc.reason})") from None
    reader = csv.reader(text.splitlines())
    rows = [(i + 1, row) for i, row in enumerate(reader) if any(cell.strip() for cell in row)]
    if not rows:
        raise InputError(f"{p}: empty file; expected a header line naming the columns fixed,moving")
    header_line, header = rows[0]
    names = [h.strip() for h in header]
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise InputError(f"{p}: missing column(s) {', '.join(missing)}; the header line must name at least "
                         "fixed,moving")
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise InputError(f"{p}: unknown column(s) {', '.join(map(repr, unknown))} on line {header_line}; "
                         f"valid columns: {', '.join(COLUMNS)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"{p}: column(s) {', '.join(repeated)} appear more than once in the header")
    base = p.resolve().parent
    pairs: list[Pair] = []
    places: list[str] = []
    for number, (line, row) in enumerate(rows[1:], start=1):
        if len(row) > len(names):
            raise InputError(f"{p}, line {line}: {len(row)} cells but the header names {len(names)} columns")
        cells = {n: (row[i].strip() if i < len(row) else "") for i, n in enumerate(names)}
        for column in REQUIRED:
            if not cells[column]:
                raise InputError(f"{p}, line {line}: the {column} cell is empty")
        for a, b in _TOGETHER:
            if bool(cells.get(a)) != bool(cells.get(b)):
                raise InputError(f"{p}, line {line}: give both {a} and {b}, or neither")
        pair_id = check_id(cells.get("id") or str(number), f"{p}, line {line}")
        files = {c: _absolute(cells[c], base) for c in FILE_COLUMNS if cells.get(c)}
        pairs.append(Pair(id=pair_id, **files))
        places.append(f"{p}, line {line}")
    if not pairs:
        raise InputError(f"{p}: no pairs (only a header line)")
    _check_unique(pairs, places)
    return pairs


def image_stem(path: str | Path) -> str:
    """A file's name without its image extension: ``sub-01.nii.gz`` -> ``sub-01``."""
    p = Path(path)
    name = p.stem if p.suffix.lower() != ".gz" else Path(p.stem).stem
    return name or p.name


def glob_pairs(fixed: str | Path, pattern: str) -> list[Pair]:
    """One pair per file matching ``pattern`` (sorted; ``**`` recurses), all registered to ``fixed``.

    Ids are the moving files' names without extension; a match that is the fixed file itself is left out.
    """
    fixed_path = Path(fixed).expanduser().resolve()
    if not fixed_path.is_file():
        raise InputError(f"--fixed {fixed}: no such file")
    matches = sorted(Path(m).resolve() for m in glob.glob(str(Path(pattern).expanduser()), recursive=True))
    matches = [m for m in matches if m.is_file() and m != fixed_path]
    if not matches:
        raise InputError(f"--moving {pattern!r}: matches no file (other than the fixed image)")
    pairs = [Pair(id=check_id(image_stem(m), f"--moving {m}"), fixed=str(fixed_path), moving=str(m)) for m in matches]
    _check_unique(pairs, [pair.moving for pair in pairs])
    return pairs
