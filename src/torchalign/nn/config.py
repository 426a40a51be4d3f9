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
    backbone: Literal["unet", "correlation"] = Field(
        "unet", description="unet: regress the field (VoxelMorph); correlation: MIND + learned descriptors, "
                            "local cost volumes and a soft argmax (nn/correlation.py), dense velocity only.")
    radius: int = Field(4, ge=1, le=8, description="Correlation: search radius, voxels of the network grid.")
    iterations: int = Field(2, ge=1, le=4, description="Correlation: warp-and-correlate passes.")
    sigma: float = Field(3.0, ge=0.0, description="Correlation: Gaussian smoothing of each pass's offsets, voxels.")
    head: Literal["dense", "affine"] = "dense"
    features: list[int] = Field(default_factory=lambda: [16, 32, 32, 32],
                                description="Channels per level; each level after the first halves the size.")
    field: Literal["velocity", "displacement"] = Field(
        "velocity", description="Dense head: a stationary velocity (diffeomorphic, integrated by scaling and "
                                "squaring) or a displacement, in mm.")
    steps: int = Field(7, ge=0, le=12, description="Scaling-and-squaring steps for velocity fields.")
    stride: int = Field(1, ge=1, le=4, description="Dense head: the field lives on the grid shrunk by this "
                                                  "factor (2 integrates at half resolution, as VoxelMorph).")
    linear: Literal["rigid", "similarity", "affine"] = Field("affine", description="Affine head: the model.")
    pool: int = Field(4, ge=1, description="Affine head: features are average-pooled to pool^D cells.")
    hidden: int = Field(64, ge=1, description="Affine head: width of the hidden layer.")
    spacing: float | None = Field(None, gt=0.0, description="The network works at this voxel size, mm: finer "
                                                            "inputs are shrunk (anti-aliased) to it and the field "
                                                            "lives on that grid, evaluated on the input grid.")
    normalize: Literal["percentile", "minmax", "none"] = Field(
        "percentile", description="Intensity normalisation of the inputs (0.5/99.5 percentiles or min/max to "
                                  "[0, 1]), applied by datasets built from a config and by predict.")

    @field_validator("features")
    @classmethod
    def _features(cls, v: list[int]) -> list[int]:
        if not v or any(f < 1 for f in v):
            raise ValueError("features must be a non-empty list of positive channel counts")
        return v

    @model_validator(mode="after")
    def _correlation(self) -> ModelConfig:
        if self.backbone == "correlation" and (self.head != "dense" or self.field != "velocity" or self.stride != 1):
            raise ValueError("the correlation backbone predicts a dense velocity at stride 1")
        return self


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


class SynthConfig(_Strict):
    """Synthetic pairs (SynthMorph-style, :mod:`~torchalign.nn.synth`): no images needed."""

    shape: list[int] = Field(description="Grid size in voxels (2 or 3 numbers).")
    spacing: float = Field(1.0, gt=0.0, description="Voxel size, mm.")
    pairs: int = Field(64, ge=1, description="Pairs drawn per epoch.")
    labels: int = Field(16, ge=2, le=64, description="Labels of the random label maps (ids 0 .. labels-1).")
    label_scale: tuple[float, float] = Field((8.0, 24.0), description="Range of the label shapes' size, voxels.")
    deform: float = Field(3.0, ge=0.0, description="Largest std of each side's random velocity, mm.")
    deform_scale: float = Field(16.0, gt=1.0, description="Smoothness of the random velocities, voxels.")
    rotate: float = Field(0.0, ge=0.0, le=180.0, description="Largest random rotation per side, degrees.")
    scale: float = Field(0.0, ge=0.0, lt=1.0, description="Largest random relative scaling per side.")
    translate: float = Field(0.0, ge=0.0, description="Largest random translation per side and axis, mm.")
    noise: float = Field(0.1, ge=0.0, description="Largest per-label noise std (intensities in [0, 1]).")
    blur: float = Field(1.0, ge=0.0, description="Largest Gaussian blur sigma, voxels.")
    bias: float = Field(0.3, ge=0.0, description="Largest amplitude of the log bias field.")
    bias_scale: float = Field(32.0, gt=1.0, description="Smoothness of the bias field, voxels.")
    gamma: float = Field(0.25, ge=0.0, description="Gamma drawn as exp(U(-gamma, gamma)).")
    same_contrast: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of pairs whose two images share "
                                                                  "the per-label means (noise, bias and gamma "
                                                                  "still differ).")

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: list[int]) -> list[int]:
        if len(v) not in (2, 3) or any(n < 8 for n in v):
            raise ValueError("shape must be 2 or 3 sizes of at least 8 voxels")
        return v

    @field_validator("label_scale")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 1.0 < v[0] <= v[1]:
            raise ValueError("label_scale must be (low, high) with 1 < low <= high")
        return v


class DataConfig(_Strict):
    """Training pairs from a folder of images, a CSV (``image[,labels]`` or ``fixed,moving[,...]``) or synthesis."""

    folder: Path | None = None
    csv: Path | None = None
    synth: SynthConfig | None = None
    validation: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction held out for validation: of the subjects "
                                                                "(of the explicit pairs of a CSV, of `synth.pairs`).")
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
        if sum(x is not None for x in (self.folder, self.csv, self.synth)) != 1:
            raise ValueError("give exactly one of `folder`, `csv` and `synth`")
        if (self.pairs == "atlas") != (self.atlas is not None):
            raise ValueError("`atlas` is required with pairs: atlas, and only then")
        if self.atlas_labels is not None and self.atlas is None:
            raise ValueError("`atlas_labels` needs `atlas`")
        return self


class LossConfig(_Strict):
    """``w * similarity(fixed, warped) + sum(weight * regulariser(displacement)) + dice * (1 - soft Dice)``."""

    similarity: str = "mse"
    similarity_options: dict[str, Any] = Field(default_factory=dict)
    similarity_weight: float = Field(1.0, ge=0.0, description="w; 0 trains on the labels alone (SynthMorph). "
                                                              "Fine-tuning at prediction always uses w = 1.")
    regularisers: list[Regulariser] = Field(default_factory=list)
    overlap: bool = Field(False, description="Measure the similarity only where the warped moving image is "
                                             "defined, as the classical driver does. Off by default: a network "
                                             "can then lower the loss by moving the image out of view; outside, "
                                             "the moving image is 0.")
    dice: float = Field(0.0, ge=0.0, description="Weight of the soft-Dice term (needs label maps and `labels`).")
    supervised: float = Field(0.0, ge=0.0, description="Weight of the mean squared error (mm^2) between the "
                                                       "predicted and the true displacement (synthetic pairs).")
    labels: list[int] | None = Field(None, description="Label ids for the Dice term.")

    @model_validator(mode="after")
    def _dice(self) -> LossConfig:
        if self.dice > 0 and not self.labels:
            raise ValueError("a Dice term (dice > 0) needs the list of `labels`")
        return self


class ScheduleConfig(_Strict):
    """Learning-rate schedule: ``cosine`` anneals to ``min_lr`` over ``epochs``; ``plateau`` multiplies the
    rate by ``factor`` after ``patience`` epochs without a better validation score."""

    name: Literal["constant", "cosine", "plateau"] = "constant"
    min_lr: float = Field(0.0, ge=0.0)
    factor: float = Field(0.5, gt=0.0, lt=1.0)
    patience: int = Field(5, ge=0)


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
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    monitor: Literal["loss", "dice"] = Field("loss", description="Validation score that selects the best "
                                                                 "checkpoint: the loss (lower) or label Dice (higher).")
    early_stop: int | None = Field(None, ge=1, description="Stop after this many epochs without a better "
                                                           "validation score.")
    amp: bool = Field(False, description="Mixed precision for the network (float16 on CUDA, bfloat16 on the CPU); "
                                         "fields, integration and losses stay float32.")
    seed: int = Field(0, ge=0)
    device: str = "cpu"
    tensorboard: bool = Field(True, description="Also log to OUTPUT/tensorboard when tensorboard is installed.")


    @model_validator(mode="after")
    def _synth(self) -> TrainConfig:
        synth = self.data.synth if self.data is not None else None
        if synth is not None:
            if len(synth.shape) != self.model.ndim:
                raise ValueError(f"data.synth.shape has {len(synth.shape)} sizes but the model is {self.model.ndim}-D")
            if any(not 0 <= k < synth.labels for k in self.loss.labels or []):
                raise ValueError(f"loss.labels must be synthetic label ids 0 .. {synth.labels - 1}")
        return self

    @property
    def preset(self) -> None:
        """No registration preset (``outputs.result_document`` reads it; the model's name goes in ``extra``)."""
        return None


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
