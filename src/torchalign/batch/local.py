"""Pairs on this machine: one after another in this process, or in a pool of worker processes.

A pool divides the CPU cores between its workers (``torch`` threads per worker = cores // workers),
so the workers do not oversubscribe the machine. Workers are started with ``spawn`` (a forked
process would inherit torch's thread pools in an undefined state).
"""
from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from .execute import Progress, drive
from .pairs import Pair
from .run import run_pair
from .settings import JobSettings
from .summary import PairResult


def cpu_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_worker(workers: int) -> int:
    """``torch`` threads for each of ``workers`` processes sharing this machine's cores."""
    return max(1, cpu_cores() // workers)


class _Deferred:
    """A future that runs its pair when its result is first asked for (so progress shows pair by pair)."""

    def __init__(self, pair: Pair, outdir: Path, settings: JobSettings):
        self.pair, self.outdir, self.settings = pair, outdir, settings
        self._result: PairResult | None = None

    def result(self) -> PairResult:
        if self._result is None:
            self._result = run_pair(self.pair, self.outdir, self.settings)
        return self._result


def run_sequential(pairs: Sequence[Pair], outdir: Path, settings: JobSettings, retry: int = 0,
                   progress: Progress | None = None) -> list[PairResult]:
    """Register the pairs one after another in this process."""
    return drive(pairs, lambda pair: _Deferred(pair, outdir, settings), lambda futures: futures[:1], retry, progress)


class _Pool:
    """A process pool that starts afresh when one of its workers died (which breaks the whole pool)."""

    def __init__(self, workers: int, outdir: Path, settings: JobSettings):
        self.workers, self.outdir, self.settings = workers, outdir, settings
        self.executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, pair: Pair) -> Future:
        try:
            return self.executor.submit(run_pair, pair, self.outdir, self.settings)
        except BrokenProcessPool:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = self._start()
            return self.executor.submit(run_pair, pair, self.outdir, self.settings)


def run_pool(pairs: Sequence[Pair], outdir: Path, settings: JobSettings, workers: int, retry: int = 0,
             progress: Progress | None = None) -> list[PairResult]:
    """Register the pairs in ``workers`` processes, each with its share of the cores.

    A worker that dies breaks the pool: the pairs in flight fail as transient failures and, with
    ``retry``, are re-submitted to a new pool.
    """
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    if not pairs:
        return []
    workers = min(workers, len(pairs))
    settings = replace(settings, torch_threads=settings.torch_threads or threads_per_worker(workers))
    pool = _Pool(workers, outdir, settings)
    try:
        return drive(pairs, pool.submit, lambda futures: wait(futures, return_when=FIRST_COMPLETED).done, retry,
                     progress)
    finally:
        pool.executor.shutdown(wait=True, cancel_futures=True)
