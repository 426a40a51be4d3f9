"""Drive per-pair tasks on any executor: submit, collect as they finish, re-submit transient failures.

An executor is given as two functions: ``submit(pair)`` returns a future (``concurrent.futures`` or
``distributed``), and ``wait(futures)`` returns the ones that have finished. A future that raises
(a worker process that died, a task Dask gave up on) becomes a transient failure of its pair.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .pairs import Pair
from .run import failure
from .summary import FAILED, PairResult

Submit = Callable[[Pair], Any]
Wait = Callable[[list[Any]], Iterable[Any]]
Progress = Callable[[PairResult, int, int], None]


def _outcome(future: Any, pair: Pair, started: float) -> PairResult:
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - a lost worker or a cancelled task fails this pair only
        return failure(pair, exc, time.perf_counter() - started)


def drive(pairs: Sequence[Pair], submit: Submit, wait: Wait, retry: int = 0,
          progress: Progress | None = None) -> list[PairResult]:
    """Run every pair; a transient failure is re-submitted up to ``retry`` times. Results in ``pairs`` order.

    ``progress(result, finished, total)`` is called as each pair settles.
    """
    results: dict[str, PairResult] = {}
    pending: dict[Any, tuple[Pair, int, float]] = {}
    for pair in pairs:
        pending[submit(pair)] = (pair, 1, time.perf_counter())
    while pending:
        for future in wait(list(pending)):
            pair, attempt, started = pending.pop(future)
            result = _outcome(future, pair, started)
            result.attempts = attempt
            if result.status == FAILED and result.transient and attempt <= retry:
                pending[submit(pair)] = (pair, attempt + 1, time.perf_counter())
                continue
            results[pair.id] = result
            if progress is not None:
                progress(result, len(results), len(pairs))
    return [results[pair.id] for pair in pairs]
