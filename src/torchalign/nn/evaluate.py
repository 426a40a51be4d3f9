"""Evaluate a registration network on a dataset of pairs: MSE before/after, folding, Dice.

These are evaluation metrics (numbers to report), kept apart from the training losses.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..functional.jacobian import jacobian_det
from ..functional.sampling import sample_world
from ..metrics import dice
from .data import collate
from .models import RegistrationNet, warp


def evaluate_model(model: RegistrationNet, dataset: Dataset, batch_size: int = 16,
                   labels: list[int] | None = None) -> dict[str, Any]:
    """Per-pair metrics of ``model`` on ``dataset`` and their summary.

    For each pair: ``mse_before`` (fixed vs moving), ``mse_after`` (fixed vs warped, zero padding),
    ``folding`` (fraction of fixed voxels with det J <= 0) and, when the pairs carry label maps and
    ``labels`` is given, ``dice_before``/``dice_after`` (mean over ``labels``, nearest-neighbour
    warping). The summary has the means and ``mse_ratio`` = mean after / mean before.
    """
    device = next(model.parameters()).device
    rows: dict[str, list[float]] = {"mse_before": [], "mse_after": [], "folding": []}
    use_labels = labels is not None
    if use_labels:
        rows.update(dice_before=[], dice_after=[])
    model.eval()
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
            batch = batch.to(device)
            transform = model(batch.fixed, batch.moving, batch.grid)
            disp = transform.displacement(batch.grid)
            warped = warp(batch.moving, batch.grid, transform, disp)
            rows["mse_before"] += ((batch.moving - batch.fixed) ** 2).flatten(1).mean(1).tolist()
            rows["mse_after"] += ((warped - batch.fixed) ** 2).flatten(1).mean(1).tolist()
            rows["folding"] += (jacobian_det(disp, batch.grid) <= 0).flatten(1).float().mean(1).tolist()
            if use_labels and batch.fixed_labels is not None:
                points = batch.grid.points(dtype=disp.dtype, device=device).unsqueeze(0) + disp.movedim(1, -1)
                warped_labels = sample_world(batch.moving_labels, batch.grid, points, "nearest", "zeros")
                for f, m, w in zip(batch.fixed_labels.cpu().numpy(), batch.moving_labels.cpu().numpy(),
                                   warped_labels.cpu().numpy()):
                    rows["dice_before"].append(_mean_dice(f, m, labels))  # type: ignore[arg-type]
                    rows["dice_after"].append(_mean_dice(f, w, labels))  # type: ignore[arg-type]
    summary = {k: float(np.mean(v)) for k, v in rows.items() if v}
    summary["mse_ratio"] = summary["mse_after"] / summary["mse_before"]
    summary["pairs"] = len(rows["mse_before"])
    return {"summary": summary, "pairs": rows}


def _mean_dice(fixed: np.ndarray, warped: np.ndarray, labels: list[int]) -> float:
    values = [dice(fixed == k, warped == k) for k in labels]
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else float("nan")
