"""Validated settings of learning-based registration: the network, the data, the losses and the run.

Everything is a pydantic model with ``extra="forbid"``, so a misspelt key is an error that names
it. A checkpoint stores the whole :class:`TrainConfig` (``model_dump(mode="json")``), so a model
rebuilds itself and ``predict`` knows the normalisation and losses it was trained with.
Relative paths in a YAML file are resolved against the file's folder (:func:`load_train_config`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..config import Regulariser, _read_yaml, validation_problems
from ..errors import InputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    """The network: a U-Net (dense head) or a convolutional encoder (affine head)."""

    ndim: Literal[2, 3]
    head: Literal["dense", "affine"] = "dense"
    features: list[int] = Field(default_factory=lambda: [16, 32, 32, 32],
                                description="Channels per level; each level after the first halves the size.")
    field: Literal["velocity", "displacement"] = Field(
        "velocity", description="Dense head: a stationary velocity (diffeomorphic, integrated by scaling and "
                                "squaring) or a displacement, in mm.")
    steps: int = Field(7, ge=0, le=12, description="Scaling-and-squaring steps for velocity fields.")
    linear: Literal["rigid", "similarity", "affine"] = Field("affine", description="Affine head: the model.")
    pool: int = Field(4, ge=1, description="Affine head: features are average-pooled to pool^D cells.")
    hidden: int = Field(64, ge=1, description="Affine head: width of the hidden layer.")
    normalize: Literal["percentile", "minmax", "none"] = Field(
        "percentile", description="Intensity normalisation of the inputs (0.5/99.5 percentiles or min/max to "
                                  "[0, 1]), applied by datasets built from a config and by predict.")

    @field_validator("features")
    @classmethod
    def _features(cls, v: list[int]) -> list[int]:
        if not v or any(f < 1 for f in v):
            raise ValueError("features must be a non-empty list of positive channel counts")
        return v


class AugmentConfig(_Strict):
    """On-the-fly augmentation. Flips and the joint affine move both images (and labels) alike."""

    rotate: float = Field(0.0, ge=0.0, le=180.0, description="Largest rotation, degrees (uniform +-).")
    scale: float = Field(0.0, ge=0.0, lt=1.0, description="Largest relative scale change (uniform +-).")
    translate: float = Field(0.0, ge=0.0, description="Largest translation per axis, mm (uniform +-).")
    flip: list[int] = Field(default_factory=list, description="Voxel axes flipped (both images) with p = 0.5.")
    independent: bool = Field(False, description="Also give the moving image its own random affine.")

    @property
    def active(self) -> bool:
        return bool(self.rotate or self.scale or self.translate or self.flip)


class DataConfig(_Strict):
    """Training pairs from a folder of images or a CSV (``image[,labels]`` or ``fixed,moving[,...]``)."""

    folder: Path | None = None
    csv: Path | None = None
    labels_suffix: str = Field("_seg", description="In a folder, NAME<suffix>.<ext> is the label map of NAME.<ext>.")
    pairs: Literal["random", "all", "atlas"] = Field(
        "random", description="random: each subject as moving with a random other as fixed (redrawn every "
                              "epoch); all: every ordered pair; atlas: the atlas as fixed. Ignored for a CSV "
                              "of explicit fixed,moving pairs.")
    atlas: Path | None = None
    atlas_labels: Path | None = None
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    num_workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _sources(self) -> DataConfig:
        if (self.folder is None) == (self.csv is None):
            raise ValueError("give exactly one of `folder` and `csv`")
        if (self.pairs == "atlas") != (self.atlas is not None):
            raise ValueError("`atlas` is required with pairs: atlas, and only then")
        if self.atlas_labels is not None and self.atlas is None:
            raise ValueError("`atlas_labels` needs `atlas`")
        return self


class LossConfig(_Strict):
    """``similarity(fixed, warped) + sum(weight * regulariser(displacement)) + dice * (1 - soft Dice)``."""

    similarity: str = "mse"
    similarity_options: dict[str, Any] = Field(default_factory=dict)
    regularisers: list[Regulariser] = Field(default_factory=list)
    overlap: bool = Field(False, description="Measure the similarity only where the warped moving image is "
                                             "defined, as the classical driver does. Off by default: a network "
                                             "can then lower the loss by moving the image out of view; outside, "
                                             "the moving image is 0.")
    dice: float = Field(0.0, ge=0.0, description="Weight of the soft-Dice term (needs label maps and `labels`).")
    labels: list[int] | None = Field(None, description="Label ids for the Dice term.")

    @model_validator(mode="after")
    def _dice(self) -> LossConfig:
        if self.dice > 0 and not self.labels:
            raise ValueError("a Dice term (dice > 0) needs the list of `labels`")
        return self


class TrainConfig(_Strict):
    """One training run."""

    model: ModelConfig
    data: DataConfig | None = Field(None, description="Required by `torchalign train`; the Python API may "
                                                      "pass a dataset instead.")
    loss: LossConfig = Field(default_factory=LossConfig)
    output: Path = Path("training")
    optimizer: str = "Adam"
    lr: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(4, ge=1)
    epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimiser steps.")
    seed: int = 0
    device: str = "cpu"
    tensorboard: bool = Field(True, description="Also log to OUTPUT/tensorboard when tensorboard is installed.")


def validate_train_config(data: Any, source: str) -> TrainConfig:
    """``TrainConfig`` from a mapping; errors become one InputError naming ``source`` and each bad key."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{source}: invalid training configuration: {validation_problems(exc)}") from None


def _resolve(path: Path | None, base: Path) -> Path | None:
    return path if path is None or path.is_absolute() else base / path


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and validate a YAML training config; relative paths are taken from the file's folder."""
    path = Path(path)
    config = validate_train_config(_read_yaml(path), str(path))
    base = path.resolve().parent
    update: dict[str, Any] = {"output": _resolve(config.output, base)}
    if config.data is not None:
        data = config.data
        update["data"] = data.model_copy(update={k: _resolve(getattr(data, k), base)
                                                 for k in ("folder", "csv", "atlas", "atlas_labels")})
    return config.model_copy(update=update)
