"""Output folders written whole: a folder holding outputs is refused unless overwriting, and a run
writes into a hidden staging folder next to its target that is swapped in by one rename.

A reader therefore sees either the previous folder or the complete new one, never a mix of two
runs or the partial output of a failed run.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

from ..errors import InputError


def check_output_folder(folder: str | os.PathLike, overwrite: bool, inputs: Sequence[str | os.PathLike] = (),
                        replaceable: Collection[str] = (), option: str = "--output") -> Path:
    """Refuse ``folder`` (InputError naming ``option``) when it is a file, when it already holds
    something and ``overwrite`` is off, when it holds an entry not named in ``replaceable`` (the
    files the command writes: ``--overwrite`` never deletes anything else), or when it holds one of
    ``inputs``. Call it before any work; returns the folder's absolute path."""
    path = Path(folder).resolve()
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {folder}: is a file, not a folder")
    if not path.is_dir():
        return path
    entries = sorted(p.name for p in path.iterdir())
    if entries and not overwrite:
        shown = ", ".join(entries[:3]) + (" ..." if len(entries) > 3 else "")
        raise InputError(f"{option} {folder}: already holds {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} ({shown}); pass --overwrite to "
                         "replace its content, or choose another folder")
    for src in inputs:
        if Path(src).exists() and Path(src).resolve().is_relative_to(path):
            raise InputError(f"{option} {folder}: holds the input {src}, which replacing the folder would delete")
    foreign = [name for name in entries if name not in replaceable]
    if foreign:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise InputError(f"{option} {folder}: holds {shown}, which this command does not write; --overwrite "
                         "replaces only an earlier output folder, so choose an empty or new folder")
    return path


def replace_folder(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``, moving an earlier ``target`` aside first and deleting it after."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden folder next to ``target``; on success it replaces ``target`` whole, on
    failure it is deleted and ``target`` is left as it was."""
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.staging")
    staging.mkdir()  # with the umask's normal mode (mkdtemp would make it private)
    try:
        yield staging
        replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
