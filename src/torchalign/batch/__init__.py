"""Many pairs: one after another, in a process pool, on a Dask cluster, or in batches on one device.

``run_batch(pairs, outdir, settings, mode=...)`` writes each pair's outputs to ``OUTDIR/<id>/``
(those of ``torchalign register`` plus the completion marker ``done.json``), then
``OUTDIR/summary.csv`` and ``OUTDIR/index.html``. A rerun skips the pairs whose marker still
matches their inputs, settings and outputs.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from .pairs import Pair, glob_pairs, read_pairs
from .settings import JobSettings
from .summary import PairResult, write_index, write_summary

if TYPE_CHECKING:  # the runners (and torch) are imported when a batch runs, not by `torchalign batch --help`
    from .execute import Progress

MODES = ("sequential", "pool", "dask", "gpu-batch")


@dataclass(frozen=True)
class Execution:
    """How to run the pairs: ``mode`` and its options (unused ones are ignored)."""

    mode: str = "sequential"
    workers: int = 2
    scheduler: str | None = None
    retry: int = 0
    batch_size: int = 16


def _sequential(pairs: Sequence[Pair], outdir: Path, settings: JobSettings, how: Execution,
                progress: Progress | None) -> list[PairResult]:
    from .local import run_sequential

    return run_sequential(pairs, outdir, settings, how.retry, progress)


def _pool(pairs: Sequence[Pair], outdir: Path, settings: JobSettings, how: Execution,
          progress: Progress | None) -> list[PairResult]:
    from .local import run_pool

    return run_pool(pairs, outdir, settings, how.workers, how.retry, progress)


def _dask(pairs: Sequence[Pair], outdir: Path, settings: JobSettings, how: Execution,
          progress: Progress | None) -> list[PairResult]:
    from .distributed import run_dask

    return run_dask(pairs, outdir, settings, how.scheduler, how.workers, how.retry, progress)


def _gpu_batch(pairs: Sequence[Pair], outdir: Path, settings: JobSettings, how: Execution,
               progress: Progress | None) -> list[PairResult]:
    from .gpu import run_gpu_batch

    return run_gpu_batch(pairs, outdir, settings, how.batch_size, how.retry, progress)


RUNNERS: dict[str, Callable[..., list[PairResult]]] = {
    "sequential": _sequential, "pool": _pool, "dask": _dask, "gpu-batch": _gpu_batch}


def run_batch(pairs: Sequence[Pair], outdir: str | Path, settings: JobSettings, how: Execution = Execution(),
              progress: Progress | None = None) -> list[PairResult]:
    """Register every pair as ``how`` says; write ``summary.csv`` and ``index.html``; return the rows."""
    if how.mode not in RUNNERS:
        raise InputError(f"unknown mode {how.mode!r}; expected one of {', '.join(MODES)}")
    if how.retry < 0:
        raise InputError(f"--retry must be >= 0, got {how.retry}")
    if how.scheduler is not None and how.mode != "dask":
        raise InputError(f"--scheduler needs --mode dask (got --mode {how.mode})")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    results = RUNNERS[how.mode](pairs, out, settings, how, progress)
    write_summary(results, out)
    write_index(results, out)
    return results


__all__ = ["MODES", "Execution", "JobSettings", "Pair", "PairResult", "glob_pairs", "read_pairs", "run_batch"]
