"""Apply a trained network to one pair of images, optionally fine-tune it, and write the outputs.

The outputs match ``torchalign register``: ``warped.nii.gz`` (the moving image on the fixed grid),
``result.json`` and the transform — ``warp.nii.gz`` (ANTs displacement field) for dense models,
``transform.txt`` (ITK affine) for affine models.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..functional.jacobian import jacobian_det
from ..grid import Grid
from ..image import Image
from ..io.atomic import check_not_input
from ..io.images import write_image
from ..io.transforms import write_displacement, write_linear
from ..metrics.fields import jacobian_stats
from ..outputs import versions, write_json
from ..resample import resample
from ..transforms.base import SpatialTransform
from ..transforms.dense import DenseDisplacement
from ..transforms.linear import LinearTransform, MatrixTransform
from .config import TrainConfig
from .data import prepare_image
from .models import RegistrationNet
from .train import Objective, finetune


def default_lr(grid: Grid) -> float:
    """Default fine-tuning learning rate: half the mean voxel size, mm (the classical presets' 0.5 voxel)."""
    return float(np.mean(grid.spacing)) / 2


@dataclass
class Prediction:
    """A predicted (and possibly fine-tuned) transform of one pair, fixed world mm -> moving world mm.

    ``displacement`` ``(1, D, *S)`` on the fixed grid for dense models, ``matrix`` ``(D+1, D+1)``
    for affine ones; ``losses`` of the fine-tuning steps; ``seconds`` per phase.
    """

    transform: SpatialTransform
    displacement: Tensor | None
    matrix: np.ndarray | None
    losses: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def predict_pair(model: RegistrationNet, config: TrainConfig, fixed: Image, moving: Image, finetune_steps: int = 0,
                 lr: float | None = None, grad_sigma: float = 2.0) -> Prediction:
    """Predict the transform registering ``moving`` to ``fixed`` (the device is the model's).

    The moving image is first resampled onto the fixed grid (identity in world space). With
    ``finetune_steps`` > 0 the prediction is optimised on this pair with the training losses
    (without the Dice term: there are no labels) at learning rate ``lr`` mm (default: half the
    mean voxel size), smoothing dense gradients by ``grad_sigma`` voxels (2 at full resolution is
    about what the ``syn`` preset's 1 voxel at half resolution amounts to).
    """
    if fixed.ndim != model.ndim or moving.ndim != model.ndim:
        raise InputError(f"the model registers {model.ndim}-D images; got a {fixed.ndim}-D fixed and a "
                         f"{moving.ndim}-D moving image")
    device = next(model.parameters()).device
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    grid = fixed.grid
    f = prepare_image(fixed.to(device), config.model.normalize).data
    if not moving.grid.same_as(grid):
        moving = resample(moving.float(), grid)
    m = prepare_image(moving.to(device), config.model.normalize).data
    with torch.no_grad():
        transform = model(f, m, grid)
    seconds["predict"] = time.perf_counter() - t0
    losses: list[float] = []
    if finetune_steps > 0:
        t1 = time.perf_counter()
        objective = Objective(config.loss.model_copy(update={"dice": 0.0})).to(device)
        transform, losses = finetune(transform, f, m, grid, objective, finetune_steps,
                                     default_lr(grid) if lr is None else lr, grad_sigma)
        seconds["finetune"] = time.perf_counter() - t1
    with torch.no_grad():
        if isinstance(transform, (LinearTransform, MatrixTransform)):
            return Prediction(transform, None, transform.matrix()[0].detach().cpu().numpy(), losses, seconds)
        disp = transform.displacement(grid).detach()
    return Prediction(transform, disp, None, losses, seconds)


def write_prediction(outdir: str | Path, fixed: Image, moving: Image, prediction: Prediction, config: TrainConfig,
                     inputs: Sequence[str | Path], extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write warped.nii.gz, warp.nii.gz or transform.txt, and result.json into ``outdir``; return their paths."""
    out = Path(outdir)
    dense = prediction.displacement is not None
    paths = {"warped": out / "warped.nii.gz", ("warp" if dense else "transform"): out / ("warp.nii.gz" if dense
                                                                                          else "transform.txt"),
             "result": out / "result.json"}
    for p in paths.values():
        check_not_input(p, inputs)
    out.mkdir(parents=True, exist_ok=True)
    grid = fixed.grid
    disp = prediction.displacement
    apply: SpatialTransform = (DenseDisplacement.from_field(disp.cpu(), grid) if disp is not None  # type: ignore[union-attr]
                               else MatrixTransform(prediction.matrix))  # type: ignore[arg-type]
    source = moving.with_data(moving.data.float().mean(1, keepdim=True) if moving.channels > 1 else moving.data.float())
    warped = resample(source, grid, apply)
    write_image(Image(warped.data, grid, dict(fixed.meta)), paths["warped"], dtype=np.float32, inputs=inputs)
    doc: dict[str, Any] = {"fixed": str(inputs[0]), "moving": str(inputs[1]), "settings": config.model_dump(mode="json")}
    if disp is not None:
        write_displacement(disp[:1].cpu(), grid, paths["warp"], inputs)
        doc["jacobian"] = jacobian_stats(jacobian_det(disp[:1].cpu(), grid).numpy())
    else:
        write_linear(prediction.matrix, paths["transform"], center=grid.center(), inputs=inputs)  # type: ignore[arg-type]
        doc["matrix"] = prediction.matrix
    if prediction.losses:
        doc["stages"] = [{"transform": f"finetune ({type(prediction.transform).__name__})",
                          "metric": config.loss.similarity,
                          "levels": [{"shrink": 1.0, "sigma": 0.0, "iterations": len(prediction.losses),
                                      "shape": list(grid.shape), "seconds": round(prediction.seconds["finetune"], 4),
                                      "losses": prediction.losses}]}]
    doc["timings"] = {k: round(v, 4) for k, v in prediction.seconds.items()}
    doc["versions"] = versions()
    doc.update(extra or {})
    doc["outputs"] = {k: p.name for k, p in paths.items()}
    write_json(doc, paths["result"], inputs)
    return paths
