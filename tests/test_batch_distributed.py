"""Pairs as Dask tasks: an in-process cluster (default suite), and in the slow suite 40 pairs on a
LocalCluster of two worker processes and on a real `dask scheduler` with two `dask worker` processes
(127.0.0.1), one of which is killed mid-run; results equal the sequential run."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from distributed import Client, LocalCluster
from test_batch_data import corrupt, fast_settings, make_pairs, matrices, mtimes

from torchalign.batch import Execution, PairResult, read_pairs, run_batch
from torchalign.batch import run as run_module
from torchalign.batch.distributed import connect, run_on_client
from torchalign.errors import InputError

DASK = str(Path(sys.executable).with_name("dask"))


def test_tasks_on_an_in_process_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Failures stay with their pair, a transient failure is re-submitted, results equal the sequential run."""
    make_pairs(tmp_path / "in", 3)
    pairs, settings = read_pairs(tmp_path / "in" / "pairs.csv"), fast_settings(tmp_path / "in")
    run_batch(pairs, tmp_path / "seq", settings)
    corrupt(Path(pairs[2].moving))
    real, calls = run_module.register, []

    def flaky(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("stale file handle")
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "register", flaky)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        results = run_on_client(client, pairs, tmp_path / "dask", settings, retry=1)
    assert [r.status for r in results] == ["ok", "ok", "failed"]
    assert sorted(r.attempts for r in results[:2]) == [1, 2]
    assert pairs[2].moving in results[2].error and results[2].attempts == 1
    ids = [p.id for p in pairs[:2]]
    np.testing.assert_allclose(matrices(tmp_path / "dask", ids), matrices(tmp_path / "seq", ids), atol=1e-6)


def test_unreachable_scheduler_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"--scheduler tcp://127.0.0.1:9: cannot connect"):
        connect("tcp://127.0.0.1:9", timeout=1.0)


# ---- slow: real worker processes -------------------------------------------------------------
@pytest.fixture(scope="module")
def forty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 pairs and their sequential results in ``seq``."""
    folder = tmp_path_factory.mktemp("forty")
    make_pairs(folder / "in", 40)
    results = run_batch(read_pairs(folder / "in" / "pairs.csv"), folder / "seq", fast_settings(folder / "in"))
    assert all(r.status == "ok" for r in results)
    return folder


def _stop(process: subprocess.Popen) -> None:
    """Stop a process group started by the test: SIGTERM, then SIGKILL after 20 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


@contextmanager
def dask_cluster(folder: Path, workers: int) -> Iterator[tuple[Path, list[subprocess.Popen]]]:
    """``dask scheduler`` and ``workers`` ``dask worker`` processes on 127.0.0.1 (each in its own process
    group, so a test can kill one with its nanny); always torn down, and bounded by their own timeouts."""
    scheduler_file, processes = folder / "scheduler.json", []
    with open(folder / "dask.log", "w") as log:
        try:
            processes.append(subprocess.Popen(
                [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                 str(scheduler_file), "--idle-timeout", "900"], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))
            deadline = time.monotonic() + 120
            while not scheduler_file.exists():
                assert time.monotonic() < deadline and processes[0].poll() is None, "the scheduler did not start"
                time.sleep(0.2)
            for _ in range(workers):
                processes.append(subprocess.Popen(
                    [DASK, "worker", "--scheduler-file", str(scheduler_file), "--nworkers", "1", "--nthreads", "1",
                     "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "60"],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
                client.wait_for_workers(workers, timeout=240)
            yield scheduler_file, processes
        finally:
            for process in reversed(processes):
                _stop(process)


@pytest.mark.slow
def test_forty_pairs_on_a_local_cluster_equal_the_sequential_run(forty: Path) -> None:
    pairs = read_pairs(forty / "in" / "pairs.csv")
    results = run_batch(pairs, forty / "local", fast_settings(forty / "in"), Execution("dask", workers=2))
    assert [r.status for r in results] == ["ok"] * 40, [r.error for r in results]
    ids = [p.id for p in pairs]
    np.testing.assert_allclose(matrices(forty / "local", ids), matrices(forty / "seq", ids), atol=1e-6)


@pytest.mark.slow
def test_forty_pairs_on_a_scheduler_survive_a_killed_worker_and_a_corrupt_input(forty: Path, tmp_path: Path) -> None:
    pairs = read_pairs(forty / "in" / "pairs.csv")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(Path(pairs[7].moving).read_bytes())
    corrupt(broken)
    pairs[7] = type(pairs[7])(**{**pairs[7].__dict__, "moving": str(broken)})
    settings, out = fast_settings(forty / "in"), tmp_path / "out"
    with dask_cluster(tmp_path, workers=2) as (scheduler_file, processes):
        killed: list[int] = []

        def kill_a_worker(result: PairResult, finished: int, total: int) -> None:
            if finished == 3 and not killed:
                killed.append(processes[1].pid)
                os.killpg(processes[1].pid, signal.SIGKILL)

        results = run_batch(pairs, out, settings, Execution("dask", scheduler=str(scheduler_file)),
                            progress=kill_a_worker)
        assert killed and processes[1].wait(timeout=20) is not None
        statuses = [r.status for r in results]
        assert statuses == ["ok"] * 7 + ["failed"] + ["ok"] * 32, [r.error for r in results]
        assert str(broken) in results[7].error and "cannot read image" in results[7].error
        ids = [p.id for i, p in enumerate(pairs) if i != 7]
        np.testing.assert_allclose(matrices(out, ids), matrices(forty / "seq", ids), atol=1e-6)
        before = mtimes(out)
        again = run_batch(pairs, out, settings, Execution("dask", scheduler=f"tcp://{_address(scheduler_file)}"))
        assert [r.status for r in again] == ["skipped"] * 7 + ["failed"] + ["skipped"] * 32
        assert mtimes(out) == before


def _address(scheduler_file: Path) -> str:
    """``HOST:PORT`` of the scheduler written in its scheduler file."""
    return json.loads(scheduler_file.read_text())["address"].removeprefix("tcp://")
