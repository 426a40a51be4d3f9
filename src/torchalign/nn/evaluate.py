"""Evaluate a registration network on a dataset of pairs: MSE before/after, folding, Dice, loss terms.

These are evaluation metrics (numbers to report and to select checkpoints with), kept apart from
the training losses.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..functional.jacobian import jacobian_det
from ..functional.sampling import sample_world
from ..metrics import dice
from ..transforms.base import SpatialTransform
from .data import Batch, collate
from .models import RegistrationNet, warp


def _predictions(model: RegistrationNet, dataset: Dataset,
                 batch_size: int) -> Iterator[tuple[Batch, SpatialTransform, Tensor]]:
    """``(batch, transform, displacement (B, D, *S))`` for every batch, in eval mode without gradients."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
                batch = batch.to(device)
                transform = model(batch.fixed, batch.moving, batch.grid)
                yield batch, transform, transform.displacement(batch.grid)
    finally:
        model.train(was_training)


def _label_dice(batch: Batch, disp: Tensor, labels: list[int] | None) -> list[tuple[float, float]]:
    """Per pair ``(Dice before, Dice after)``: mean over ``labels`` (default: the fixed map's non-zero ids)."""
    points = batch.grid.points(dtype=disp.dtype, device=disp.device).unsqueeze(0) + disp.movedim(1, -1)
    warped = sample_world(batch.moving_labels, batch.grid, points, "nearest", "zeros")
    out = []
    for f, m, w in zip(batch.fixed_labels.cpu().numpy(), batch.moving_labels.cpu().numpy(),  # type: ignore[union-attr]
                       warped.cpu().numpy()):
        ids = labels if labels is not None else [int(k) for k in np.unique(f) if k != 0]
        out.append((_mean_dice(f, m, ids), _mean_dice(f, w, ids)))
    return out


def evaluate_model(model: RegistrationNet, dataset: Dataset, batch_size: int = 16,
                   labels: list[int] | None = None) -> dict[str, Any]:
    """Per-pair metrics of ``model`` on ``dataset`` and their summary.

    For each pair: ``mse_before`` (fixed vs moving), ``mse_after`` (fixed vs warped, zero padding),
    ``folding`` (fraction of fixed voxels with det J <= 0) and, when the pairs carry label maps and
    ``labels`` is given, ``dice_before``/``dice_after`` (mean over ``labels``, nearest-neighbour
    warping). The summary has the means and ``mse_ratio`` = mean after / mean before.
    """
    rows: dict[str, list[float]] = {"mse_before": [], "mse_after": [], "folding": []}
    use_labels = labels is not None
    if use_labels:
        rows.update(dice_before=[], dice_after=[])
    for batch, transform, disp in _predictions(model, dataset, batch_size):
        warped = warp(batch.moving, batch.grid, transform, disp)
        rows["mse_before"] += ((batch.moving - batch.fixed) ** 2).flatten(1).mean(1).tolist()
        rows["mse_after"] += ((warped - batch.fixed) ** 2).flatten(1).mean(1).tolist()
        rows["folding"] += (jacobian_det(disp, batch.grid) <= 0).flatten(1).float().mean(1).tolist()
        if use_labels and batch.fixed_labels is not None:
            for before, after in _label_dice(batch, disp, labels):
                rows["dice_before"].append(before)
                rows["dice_after"].append(after)
    summary = {k: float(np.mean(v)) for k, v in rows.items() if v}
    summary["mse_ratio"] = summary["mse_after"] / summary["mse_before"]
    summary["pairs"] = len(rows["mse_before"])
    return {"summary": summary, "pairs": rows}


def validate(model: RegistrationNet, objective: torch.nn.Module, dataset: Dataset, batch_size: int,
             labels: list[int] | None = None) -> dict[str, float]:
    """Means over ``dataset`` of the training ``objective``'s terms, the % of folded voxels (det J <= 0)
    and, when the pairs carry label maps, the label Dice after warping (``dice``; NaN without labels)."""
    sums = {"loss": 0.0, "similarity": 0.0, "regulariser": 0.0, "supervised": 0.0, "folding_percent": 0.0}
    dices: list[float] = []
    n = 0
    for batch, transform, disp in _predictions(model, dataset, batch_size):
        terms = objective(transform, batch.fixed, batch.moving, batch.grid, batch.fixed_labels, batch.moving_labels,
                          batch.displacement)
        b = batch.fixed.shape[0]
        for key in ("loss", "similarity", "regulariser", "supervised"):
            sums[key] += float(getattr(terms, key)) * b
        sums["folding_percent"] += float((jacobian_det(disp, batch.grid) <= 0).float().mean()) * 100 * b
        if batch.fixed_labels is not None:
            dices += [after for _, after in _label_dice(batch, disp, labels)]
        n += b
    out = {k: v / n for k, v in sums.items()}
    out["dice"] = float(np.nanmean(dices)) if dices else float("nan")
    return out


def _mean_dice(fixed: np.ndarray, warped: np.ndarray, labels: list[int]) -> float:
    values = [dice(fixed == k, warped == k) for k in labels]
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else float("nan")
