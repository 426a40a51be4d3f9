"""Apply a trained network to one pair of images, optionally fine-tune it, and write the outputs.

The result is the engine's :class:`~torchalign.registration.Result`, so the outputs are those of
``torchalign register``, written by the same code (:func:`torchalign.outputs.write_registration`):
``warped.nii.gz``, ``transform.txt``, ``result.json`` and, for dense models, ``warp.nii.gz``,
``inverse_warp.nii.gz`` and ``jacobian.nii.gz``. Models are checkpoint files or the names of the
models bundled with the package (``synth2d``).
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..grid import Grid
from ..image import Image
from ..outputs import write_registration
from ..registration import LevelRecord, Result, StageRecord
from ..resample import resample
from ..transforms.base import SpatialTransform
from .checkpoint import model_from_checkpoint
from .config import TrainConfig
from .data import prepare_image
from .models import RegistrationNet
from .train import Objective, finetune

BUNDLED = Path(__file__).resolve().parents[1] / "data" / "models"


def bundled_models() -> list[str]:
    """Names of the models shipped with the package."""
    return sorted(p.stem for p in BUNDLED.glob("*.pt"))


def resolve_model(model: str | os.PathLike) -> Path:
    """The checkpoint file of ``model``: an existing path, or the name of a bundled model."""
    path = Path(model)
    if path.is_file():
        return path
    if str(model) in bundled_models():
        return BUNDLED / f"{model}.pt"
    raise InputError(f"--model {model}: no such checkpoint file or bundled model "
                     f"(bundled: {', '.join(bundled_models()) or 'none'})")


def load_model(model: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[RegistrationNet, TrainConfig]:
    """Rebuild a checkpoint's or bundled model's network (eval mode, on ``device``) and its config."""
    return model_from_checkpoint(resolve_model(model), device)


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
    grid_shape: tuple[int, ...]
    losses: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def finetune_objective(config: TrainConfig, metric: str | None = None) -> Objective:
    """The per-pair objective: the training similarity (or ``metric`` with its default options) at weight 1
    and the training regularisers; no Dice or supervised term (a new pair has no labels or true field)."""
    update: dict[str, Any] = {"dice": 0.0, "supervised": 0.0, "similarity_weight": 1.0}
    if metric is not None and metric != config.loss.similarity:
        update.update(similarity=metric, similarity_options={})
    return Objective(config.loss.model_copy(update=update))


def predict_pair(model: RegistrationNet, config: TrainConfig, fixed: Image, moving: Image, finetune_steps: int = 0,
                 lr: float | None = None, grad_sigma: float = 2.0, metric: str | None = None) -> Prediction:
    """Predict the transform registering ``moving`` to ``fixed`` (the device is the model's).

    The moving image is first resampled onto the fixed grid (identity in world space). With
    ``finetune_steps`` > 0 the prediction is optimised on this pair with :func:`finetune_objective`
    at learning rate ``lr`` mm (default: half the mean voxel size), smoothing dense gradients by
    ``grad_sigma`` voxels (2 at full resolution is about what the ``syn`` preset's 1 voxel at half
    resolution amounts to).
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
        objective = finetune_objective(config, metric).to(device)
        transform, losses = finetune(transform, f, m, grid, objective, finetune_steps,
                                     default_lr(grid) if lr is None else lr, grad_sigma)
        seconds["finetune"] = time.perf_counter() - t1
    with torch.no_grad():
        matrix = transform.linear_matrix()
        if matrix is not None:
            return Prediction(transform, None, matrix[0].detach().cpu().numpy(), grid.shape, losses, seconds)
        disp = transform.displacement(grid).detach()
    return Prediction(transform, disp, None, grid.shape, losses, seconds)


def to_result(prediction: Prediction, metric: str) -> Result:
    """The engine's :class:`~torchalign.registration.Result` of a prediction (fine-tuning as its one stage).

    Its ``linear`` is the affine model's matrix or the identity, on the CPU (where outputs are written).
    """
    transform = prediction.transform
    if prediction.matrix is not None:
        linear = torch.as_tensor(prediction.matrix, dtype=torch.float64)[None]
    else:
        d = transform.ndim
        linear = torch.eye(d + 1, dtype=torch.float64)[None]
    stages = []
    if prediction.losses:
        level = LevelRecord(1.0, 0.0, len(prediction.losses), prediction.losses, prediction.seconds["finetune"],
                            tuple(prediction.grid_shape))
        stages.append(StageRecord(f"finetune ({type(transform).__name__})", metric, [level]))
    return Result(transform, transform.inverse(), linear, np.eye(linear.shape[-1]), stages,
                  sum(v for k, v in prediction.seconds.items() if k in ("predict", "finetune")))


def write_prediction(outdir: str | Path, fixed: Image, moving: Image, prediction: Prediction, config: TrainConfig,
                     inputs: Sequence[str | Path], extra: dict[str, Any] | None = None,
                     metric: str | None = None, optional: Sequence[str] = ()) -> dict[str, Path]:
    """Write the outputs of ``torchalign register`` for a prediction into ``outdir`` (``optional``:
    ``inverse_warp``, ``jacobian``); return their paths."""
    result = to_result(prediction, metric or config.loss.similarity)
    doc = {"timings": {k: round(v, 4) for k, v in prediction.seconds.items()}, **(extra or {})}
    with torch.no_grad():
        return write_registration(Path(outdir), fixed, moving, result, config, inputs, doc,  # type: ignore[arg-type]
                                  optional=optional)


def register_network(fixed: Image, moving: Image, model: str | os.PathLike = "synth2d", *, finetune_steps: int = 0,
                     metric: str | None = None, lr: float | None = None, device: torch.device | str = "cpu") -> Result:
    """``register`` with a network: ``Result`` of the bundled or checkpointed ``model`` on one pair.

    ``register_network(fixed, moving)`` uses the bundled ``synth2d``; ``finetune_steps`` adds
    instance optimisation with ``metric`` (default: the model's similarity; ``mi`` across contrasts).
    """
    net, config = load_model(model, device)
    prediction = predict_pair(net, config, fixed, moving, finetune_steps, lr, metric=metric)
    return to_result(prediction, metric or config.loss.similarity)
