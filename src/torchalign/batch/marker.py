"""The completion marker ``OUTDIR/<id>/done.json``, written after every other output of a pair.

It records the checksums of the pair's inputs and outputs and the settings' fingerprint; a pair
counts as finished only when the marker parses and all of these still match (checked, not guessed
from file times).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any

from ..outputs import write_json
from .pairs import Pair
from .settings import JobSettings

MARKER = "done.json"
FORMAT = 1


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def input_record(pair: Pair) -> dict[str, dict[str, Any]]:
    """Path, size, modification time and checksum of each input file of ``pair``."""
    out = {}
    for name, value in pair.inputs().items():
        p = Path(value)
        stat = p.stat()
        out[name] = {"path": str(p), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256(p)}
    return out


def output_record(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and checksum of every file in ``folder`` except the marker (file names sorted)."""
    return {p.name: {"size": p.stat().st_size, "sha256": sha256(p)}
            for p in sorted(folder.iterdir()) if p.is_file() and p.name != MARKER}


def write_marker(folder: Path, pair: Pair, settings: JobSettings, inputs: dict[str, dict[str, Any]],
                 summary: dict[str, Any], seconds: float) -> Path:
    """Write ``folder/done.json`` (atomically); call it after every other output is in place."""
    doc = {"format": FORMAT, "id": pair.id, "settings": settings.fingerprint(), "inputs": inputs,
           "outputs": output_record(folder), "summary": summary, "seconds": round(seconds, 4),
           "finished": _dt.datetime.now().isoformat(timespec="seconds")}
    return write_json(doc, folder / MARKER)


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker document, or None when it is absent or unreadable."""
    try:
        doc = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _outputs_match(folder: Path, recorded: Any) -> bool:
    if not isinstance(recorded, dict) or not recorded:
        return False
    for name, entry in recorded.items():
        p = folder / name
        if not (isinstance(entry, dict) and p.is_file() and p.stat().st_size == entry.get("size")
                and sha256(p) == entry.get("sha256")):
            return False
    return True


def _inputs_match(pair: Pair, recorded: Any) -> bool:
    given = pair.inputs()
    if not isinstance(recorded, dict) or set(recorded) != set(given):
        return False
    for name, value in given.items():
        entry, p = recorded[name], Path(value)
        if not (isinstance(entry, dict) and entry.get("path") == str(p) and p.is_file()
                and p.stat().st_size == entry.get("size") and sha256(p) == entry.get("sha256")):
            return False
    return True


def finished(folder: Path, pair: Pair, settings: JobSettings) -> dict[str, Any] | None:
    """The marker of ``folder`` when the pair is finished with these inputs and settings, else None."""
    doc = read_marker(folder)
    if doc is None or doc.get("format") != FORMAT or doc.get("id") != pair.id \
            or doc.get("settings") != settings.fingerprint():
        return None
    if not (_inputs_match(pair, doc.get("inputs")) and _outputs_match(folder, doc.get("outputs"))):
        return None
    return doc
