"""The per-pair job: read a pair's files, register, write the same outputs as ``torchalign register``.

Outputs, the report and last the completion marker (``done.json``) go to a hidden staging folder
next to ``OUTDIR/<id>/`` that replaces it in one rename (``io.folders.staged_folder``, shared with
``torchalign register``), so a pair's folder never mixes files of two runs. :func:`run_pair` is the task that pool and Dask workers run:
it takes paths and returns a :class:`PairResult`, turning every exception into a failed row.
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import TorchalignError
from ..image import Image
from ..io import read_image
from ..io.folders import staged_folder
from ..io.points import read_points
from ..metrics.evaluate import check_inputs
from ..outputs import write_outputs as write_all
from ..registration import Result, register
from . import marker
from .pairs import Pair
from .settings import JobSettings
from .summary import DONE, FAILED, SKIPPED, PairResult


@dataclass
class PairInputs:
    """A pair's images, masks, label maps and points, read and checked."""

    fixed: Image
    moving: Image
    fixed_mask: Image | None = None
    moving_mask: Image | None = None
    fixed_labels: Image | None = None
    moving_labels: Image | None = None
    fixed_points: np.ndarray | None = None
    moving_points: np.ndarray | None = None


def read_inputs(pair: Pair, settings: JobSettings) -> PairInputs:
    """Read every file of ``pair`` before any work (InputError naming the file on bad input)."""
    fixed = read_image(pair.fixed, nan_to=settings.nan_to)
    moving = read_image(pair.moving, nan_to=settings.nan_to)
    optional = {name: read_image(getattr(pair, name)) if getattr(pair, name) else None
                for name in ("fixed_mask", "moving_mask", "fixed_labels", "moving_labels")}
    fp = read_points(pair.fixed_points, space=settings.points_space, grid=fixed.grid) if pair.fixed_points else None
    mp = read_points(pair.moving_points, space=settings.points_space, grid=moving.grid) if pair.moving_points else None
    check_inputs(fixed, fixed_labels=optional["fixed_labels"], moving_labels=optional["moving_labels"], fixed_points=fp,
                 moving_points=mp, names={k: str(v) for k, v in pair.inputs().items()})
    return PairInputs(fixed, moving, **optional, fixed_points=fp, moving_points=mp)


def _summary_metrics(metrics_path: Path | None) -> dict[str, float | None]:
    """Mean Dice and mean TRE from a ``metrics.json`` (None where not evaluated)."""
    if metrics_path is None:
        return {"dice_mean": None, "tre_mean": None}
    doc = json.loads(metrics_path.read_text())
    return {"dice_mean": (doc.get("mean") or {}).get("dice"), "tre_mean": (doc.get("points") or {}).get("tre_mean")}


def write_outputs(pair: Pair, outdir: Path, data: PairInputs, result: Result, settings: JobSettings,
                  input_record: dict[str, dict[str, Any]], seconds: float) -> dict[str, float | None]:
    """Write ``outdir/<pair.id>/`` whole, as ``torchalign register`` would, with ``done.json`` last;
    return the summary metrics."""
    target = outdir / pair.id
    with staged_folder(target) as staging:
        paths = write_all(staging, data.fixed, data.moving, result, settings.config, list(pair.inputs().values()),
                          fixed_labels_path=pair.fixed_labels, fixed_labels=data.fixed_labels,
                          moving_labels=data.moving_labels, labels=settings.labels, fixed_points=data.fixed_points,
                          moving_points=data.moving_points)
        summary = _summary_metrics(paths.get("metrics"))
        if settings.report:
            from ..report import build_report

            build_report(staging, shown_as=target)
        marker.write_marker(staging, pair, settings, input_record, summary, seconds)
    return summary


def failure(pair: Pair, exc: BaseException, seconds: float) -> PairResult:
    """A failed row: bad input is final, anything else (a crash, a lost worker) is worth retrying."""
    if isinstance(exc, TorchalignError):
        return PairResult(pair.id, FAILED, seconds, pair.fixed, pair.moving, error=str(exc))
    return PairResult(pair.id, FAILED, seconds, pair.fixed, pair.moving, error=f"{type(exc).__name__}: {exc}",
                      transient=True)


def skipped(pair: Pair, folder: Path, settings: JobSettings, seconds_from: float) -> PairResult | None:
    """A ``skipped`` row carrying the earlier run's metrics when ``folder`` holds the finished pair."""
    doc = marker.finished(folder, pair, settings)
    if doc is None:
        return None
    summary = doc.get("summary") or {}
    return PairResult(pair.id, SKIPPED, time.perf_counter() - seconds_from, pair.fixed, pair.moving,
                      dice_mean=summary.get("dice_mean"), tre_mean=summary.get("tre_mean"))


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch threads (None: unchanged), then restore the previous count."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_pair(pair: Pair, outdir: str | Path, settings: JobSettings) -> PairResult:
    """Register one pair into ``outdir/<id>/`` unless it is already finished; never raises an Exception."""
    with torch_threads(settings.torch_threads):
        return _run_pair(pair, Path(outdir), settings)


def _run_pair(pair: Pair, outdir: Path, settings: JobSettings) -> PairResult:
    start = time.perf_counter()
    try:
        done = skipped(pair, outdir / pair.id, settings, start)
        if done is not None:
            return done
        data = read_inputs(pair, settings)
        record = marker.input_record(pair)
        result = register(data.fixed, data.moving, settings.config, fixed_mask=data.fixed_mask,
                          moving_mask=data.moving_mask, device=settings.device)
        metrics = write_outputs(pair, outdir, data, result, settings, record, time.perf_counter() - start)
        return PairResult(pair.id, DONE, time.perf_counter() - start, pair.fixed, pair.moving, **metrics)
    except Exception as exc:  # noqa: BLE001 - one pair's failure must not stop the batch
        return failure(pair, exc, time.perf_counter() - start)
