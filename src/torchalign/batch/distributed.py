"""Pairs on a Dask cluster: an existing scheduler (``tcp://HOST:PORT`` or a scheduler file) or a LocalCluster.

Each pair is one task (:func:`~torchalign.batch.run.run_pair`: paths in, a summary row out), so the
workers need the package installed and the input and output folders on a shared file system. A
pair's bad input comes back as a failed row; a worker that dies has its tasks moved to the other
workers by Dask itself (up to ``distributed.scheduler.allowed-failures`` times), and a task Dask
gives up on fails only its own pair (re-submitted with ``retry``).
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import InputError
from .execute import Progress, drive
from .local import threads_per_worker
from .pairs import Pair
from .run import run_pair
from .settings import JobSettings
from .summary import PairResult


def connect(scheduler: str, timeout: float = 30.0) -> Any:
    """A ``distributed.Client`` of the scheduler at ``scheduler`` (an address, or a scheduler JSON file)."""
    from distributed import Client

    try:
        if Path(scheduler).is_file():
            return Client(scheduler_file=scheduler, timeout=timeout)
        return Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"--scheduler {scheduler}: cannot connect ({type(exc).__name__}: {exc})") from None


def run_on_client(client: Any, pairs: Sequence[Pair], outdir: Path, settings: JobSettings, retry: int = 0,
                  progress: Progress | None = None) -> list[PairResult]:
    """Register the pairs as tasks of a connected ``distributed.Client``, one task per pair."""
    from distributed import wait

    def submit(pair: Pair) -> Any:
        key = f"torchalign-pair-{pair.id}-{uuid.uuid4().hex[:8]}"
        return client.submit(run_pair, pair, str(outdir), settings, key=key, pure=False)

    return drive(pairs, submit, lambda futures: wait(futures, return_when="FIRST_COMPLETED").done, retry, progress)


def run_dask(pairs: Sequence[Pair], outdir: Path, settings: JobSettings, scheduler: str | None = None,
             workers: int = 2, retry: int = 0, progress: Progress | None = None) -> list[PairResult]:
    """Register the pairs as Dask tasks on ``scheduler``, or on a LocalCluster of ``workers`` processes.

    A LocalCluster binds to 127.0.0.1, runs one task per worker and gives each worker its share of
    the cores as torch threads; on an existing cluster torch threads stay as ``settings`` says.
    """
    outdir = Path(outdir).resolve()
    if scheduler is not None:
        with connect(scheduler) as client:
            return run_on_client(client, pairs, outdir, settings, retry, progress)
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    from distributed import Client, LocalCluster

    settings = replace(settings, torch_threads=settings.torch_threads or threads_per_worker(workers))
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        return run_on_client(client, pairs, outdir, settings, retry, progress)
