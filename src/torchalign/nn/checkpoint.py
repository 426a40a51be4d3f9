"""Checkpoints: ``{format, version, config, state_dict, optimizer, epoch, step, progress}`` in a torch zip file.

``progress`` (optional) holds what a resumed run needs beyond the optimizer: the schedule's and
the gradient scaler's states, the best validation score and the epochs since it improved.

Written atomically (a crash never leaves a half-written file under the final name) and read with
``torch.load(weights_only=True)``, whose unpickler accepts tensors and plain containers only: a
file holding arbitrary pickled objects (and therefore possibly code) is refused, not executed.
As in voxelmorph's ``modelio``, the config travels with the weights so the model rebuilds itself.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..io.atomic import atomic_path
from .config import TrainConfig, validate_train_config
from .models import RegistrationNet, build_model

FORMAT = "torchalign-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, config: TrainConfig, model: RegistrationNet,
                    optimizer: torch.optim.Optimizer | None = None, epoch: int = 0, step: int = 0,
                    progress: dict[str, Any] | None = None) -> Path:
    """Atomically write the checkpoint of ``model`` (and ``optimizer``, ``progress``) trained with ``config``."""
    state = {
        "format": FORMAT, "version": VERSION,
        "config": config.model_dump(mode="json"),
        "state_dict": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "epoch": int(epoch), "step": int(step), "progress": progress,
    }
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.save(state, tmp)
    return target


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; InputError for a missing, corrupted, foreign or unsafe file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        reason = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0].split(". ")[0]
        if "Unsupported global" in text:
            raise InputError(f"{path}: refused: the file holds pickled objects other than tensors and plain data, "
                             f"which could run code when loaded ({reason})") from None
        raise InputError(f"{path}: not a readable checkpoint (corrupted, or not a torch file: the safe loader "
                         f"stopped at: {reason})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable checkpoint (corrupted, truncated or not a torch file: "
                         f"{first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        keys = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
        raise InputError(f"{path}: not a torchalign checkpoint (a foreign torch file; found {keys})")
    if state.get("version") != VERSION:
        raise InputError(f"{path}: checkpoint format version {state.get('version')!r} is not supported "
                         f"(this torchalign reads version {VERSION})")
    missing = [k for k in ("config", "state_dict", "epoch", "step") if k not in state]
    if missing:
        raise InputError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return state


def checkpoint_config(state: dict[str, Any], path: str | os.PathLike) -> TrainConfig:
    """The validated training config stored in a loaded checkpoint."""
    return validate_train_config(state["config"], f"{path} (stored config)")


def model_from_checkpoint(path: str | os.PathLike,
                          map_location: str | torch.device = "cpu") -> tuple[RegistrationNet, TrainConfig]:
    """Rebuild the model from the checkpoint's config and load its weights (in eval mode)."""
    state = load_checkpoint(path, map_location)
    config = checkpoint_config(state, path)
    model = build_model(config.model)
    try:
        model.load_state_dict(state["state_dict"])
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{path}: weights do not match the stored model config ({first})") from None
    return model.to(map_location).eval(), config
