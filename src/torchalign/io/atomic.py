"""Atomic writes: write to a temporary sibling file, then rename over the target."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import InputError


def check_not_input(path: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Refuse to write over one of ``inputs``."""
    target = Path(path).resolve()
    for src in inputs:
        if Path(src).exists() and Path(src).resolve() == target:
            raise InputError(f"{path}: refusing to overwrite an input file")
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder (same suffixes); rename it to ``path`` on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name.split('.')[0]}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file a normal file's mode
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_files(path: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield ``path``'s name inside a hidden temporary folder next to it; on success move every file
    written there into ``path``'s folder, the named file (the header) last.

    For formats that write several files under one name (``.hdr/.img``, ``.mhd/.raw``,
    ``.nhdr`` + data file) each file gets its final name, so a header points at the final data file;
    each rename is atomic. A companion file that would replace one of ``inputs`` is refused.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield folder / target.name
        written = sorted((p for p in folder.iterdir() if p.name != target.name), key=lambda p: p.name)
        for p in written + [folder / target.name]:
            check_not_input(target.parent / p.name, inputs)
        mode = 0o666 & ~_umask()  # mkdtemp's files are the writer's; give them a normal file's mode
        for p in written + [folder / target.name]:
            os.chmod(p, mode)
            os.replace(p, target.parent / p.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
