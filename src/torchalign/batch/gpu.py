"""Pairs registered in batches on one device (a GPU when there is one; the CPU works too).

Pairs are read one at a time and grouped by size (:func:`~torchalign.batch.driver.batch_key`); a
group that reaches ``batch_size`` is registered at once with
:func:`~torchalign.batch.driver.register_batch` and written out, so memory holds at most one
batch per size. Each pair's outputs are those of the per-pair job. Should a batch fail on bad
input (a diverging loss) or run out of device memory, its pairs are registered one at a time, so
the failure is reported on the pair that caused it; any other error fails the batch's pairs.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, TorchalignError
from ..registration import Prepared, prepare_pair
from .driver import batch_key, check_batchable, register_batch
from .execute import Progress
from .local import run_sequential
from .marker import input_record
from .pairs import Pair
from .run import PairInputs, failure, read_inputs, skipped, torch_threads, write_outputs
from .settings import JobSettings
from .summary import DONE, PairResult


def default_device() -> str:
    """The first CUDA device when torch sees one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class _Item:
    pair: Pair
    data: PairInputs
    prepared: Prepared
    record: dict[str, dict[str, Any]]
    seconds: float  # spent reading and preparing


class _Batches:
    """Registers full batches as they fill up and records every pair's result."""

    def __init__(self, pairs: Sequence[Pair], outdir: Path, settings: JobSettings, retry: int,
                 progress: Progress | None):
        self.total, self.outdir, self.settings, self.retry, self.progress = len(pairs), outdir, settings, retry, progress
        self.results: dict[str, PairResult] = {}
        self.groups: dict[tuple, list[_Item]] = {}

    def settle(self, result: PairResult) -> None:
        self.results[result.id] = result
        if self.progress is not None:
            self.progress(result, len(self.results), self.total)

    def add(self, pair: Pair) -> None:
        start = time.perf_counter()
        try:
            done = skipped(pair, self.outdir / pair.id, self.settings, start)
            if done is not None:
                self.settle(done)
                return
            data = read_inputs(pair, self.settings)
            record = input_record(pair)
            prepared = prepare_pair(data.fixed, data.moving, self.settings.config, data.fixed_mask, data.moving_mask,
                                    self.settings.device)
        except Exception as exc:  # noqa: BLE001 - one pair's bad input must not stop the batch
            self.settle(failure(pair, exc, time.perf_counter() - start))
            return
        self.groups.setdefault(batch_key(prepared.fixed, prepared.moving, self.settings.config), []).append(
            _Item(pair, data, prepared, record, time.perf_counter() - start))

    def run(self, key: tuple) -> None:
        items = self.groups.pop(key, [])
        if not items:
            return
        start = time.perf_counter()
        try:
            results = register_batch([it.prepared for it in items], self.settings.config)
        except (TorchalignError, torch.OutOfMemoryError):
            # One pair's bad input (a diverging loss) or a batch too large for the device: one by one.
            for result in run_sequential([it.pair for it in items], self.outdir, self.settings, self.retry):
                self.settle(result)
            return
        except Exception as exc:  # noqa: BLE001 - reported on every pair of the batch, not hidden
            for it in items:
                self.settle(failure(it.pair, exc, it.seconds + time.perf_counter() - start))
            return
        share = (time.perf_counter() - start) / len(items)
        for it, result in zip(items, results):
            t0 = time.perf_counter()
            try:
                metrics = write_outputs(it.pair, self.outdir, it.data, result, self.settings, it.record,
                                        it.seconds + share)
                self.settle(PairResult(it.pair.id, DONE, it.seconds + share + time.perf_counter() - t0, it.pair.fixed,
                                       it.pair.moving, **metrics))
            except Exception as exc:  # noqa: BLE001 - a write error fails this pair only
                self.settle(failure(it.pair, exc, it.seconds + share + time.perf_counter() - t0))


def run_gpu_batch(pairs: Sequence[Pair], outdir: Path, settings: JobSettings, batch_size: int = 16, retry: int = 0,
                  progress: Progress | None = None) -> list[PairResult]:
    """Register the pairs in batches of up to ``batch_size`` equal-size pairs on ``settings.device``.

    The config must be batchable (see :func:`~torchalign.batch.driver.check_batchable`); this is checked
    before any work. ``retry`` applies when a failed batch is re-run pair by pair.
    """
    check_batchable(settings.config)
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    batches = _Batches(pairs, Path(outdir), settings, retry, progress)
    with torch_threads(settings.torch_threads):
        for pair in pairs:
            batches.add(pair)
            for key in [k for k, items in batches.groups.items() if len(items) >= batch_size]:
                batches.run(key)
        for key in list(batches.groups):
            batches.run(key)
    return [batches.results[pair.id] for pair in pairs]
