"""The process pool: same results as the sequential run, cores divided between workers, and a worker
that dies mid-run costs only a retry. (Starting spawned workers takes tens of seconds on a loaded
2-core machine, so the pool run is in the slow suite.)"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import psutil
import pytest
from test_batch_data import fast_settings, make_pairs, matrices

from torchalign.batch import Execution, PairResult, read_pairs, run_batch
from torchalign.batch.local import threads_per_worker
from torchalign.errors import InputError


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pool")
    make_pairs(folder / "in", 6)
    results = run_batch(read_pairs(folder / "in" / "pairs.csv"), folder / "seq", fast_settings(folder / "in"))
    assert all(r.status == "ok" for r in results)
    return folder


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # exited meanwhile
        return []


def test_threads_are_divided_between_workers() -> None:
    cores = len(os.sched_getaffinity(0))
    assert threads_per_worker(1) == cores and threads_per_worker(cores * 4) == 1
    assert threads_per_worker(2) == max(1, cores // 2)


@pytest.mark.slow
def test_pool_equals_sequential_and_survives_a_killed_worker(study: Path) -> None:
    pairs = read_pairs(study / "in" / "pairs.csv")
    killed: list[int] = []

    def kill_one_worker(result: PairResult, finished: int, total: int) -> None:
        if killed:
            return
        workers = [p for p in psutil.Process().children() if "spawn_main" in " ".join(_cmdline(p))]
        if workers:
            killed.append(workers[0].pid)
            os.kill(workers[0].pid, signal.SIGKILL)

    results = run_batch(pairs, study / "pool", fast_settings(study / "in"), Execution("pool", workers=2, retry=2),
                        progress=kill_one_worker)
    assert killed, "no worker process was found to kill"
    assert [r.status for r in results] == ["ok"] * len(pairs), [r.error for r in results]
    assert any(r.attempts > 1 for r in results)  # the pairs in flight were re-submitted to a new pool
    ids = [p.id for p in pairs]
    np.testing.assert_allclose(matrices(study / "pool", ids), matrices(study / "seq", ids), atol=1e-6)


def test_bad_worker_count() -> None:
    with pytest.raises(InputError, match="--workers must be at least 1"):
        run_batch([], "unused", None, Execution("pool", workers=0))  # type: ignore[arg-type]
