"""Validated registration settings: presets (YAML data) and user config files share these models."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InputError

TransformName = Literal["translation", "rigid", "similarity", "affine", "ffd", "dense", "svf", "svffd", "syn"]
InitName = Literal["none", "geometry", "com", "moments", "search"]
LINEAR = ("translation", "rigid", "similarity", "affine")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Level(_Strict):
    """One pyramid level: its voxel size (a shrink factor or mm), Gaussian smoothing sigma and iterations.

    The level's voxels are ``spacing`` mm, or ``shrink`` times the fixed image's finest spacing, on
    every axis; an axis already coarser than that is not shrunk, and no axis is shrunk below
    ``MIN_VOXELS`` voxels (ANTs and elastix shrink anisotropic images the same way).
    """

    shrink: float = Field(1.0, ge=1.0, description="Voxel size as a multiple of the fixed image's finest spacing.")
    spacing: float | None = Field(None, gt=0.0, description="Voxel size in mm (replaces `shrink`).")
    sigma: float = Field(0.0, ge=0.0, description="Smoothing sigma before shrinking, in `sigma_units`.")
    iterations: int = Field(100, ge=0)


class Regulariser(_Strict):
    name: str
    weight: float = Field(1.0, ge=0.0, description="Must be non-negative.")
    options: dict[str, Any] = Field(default_factory=dict)


class Stage(_Strict):
    """One stage of a registration (rigid, then affine, then deformable ...)."""

    transform: TransformName
    metric: str = "mi"
    metric_options: dict[str, Any] = Field(default_factory=dict)
    levels: list[Level] = Field(default_factory=lambda: [Level(shrink=4, sigma=2, iterations=100),
                                                         Level(shrink=2, sigma=1, iterations=50)])
    sigma_units: Literal["vox", "mm"] = Field("vox", description="`vox`: sigma in units of the fixed image's "
                                                                "finest spacing (isotropic in mm).")
    optimizer: str = "Adam"
    lr: float = Field(0.2, gt=0.0, description="Learning rate; for linear stages in voxels of the level "
                                                "(the first Adam steps move about lr voxels).")
    optimizer_options: dict[str, Any] = Field(default_factory=dict)
    freeze: list[Literal["translation", "rotation", "scale", "shear"]] = Field(default_factory=list)
    regularisers: list[Regulariser] = Field(default_factory=list)
    transform_options: dict[str, Any] = Field(default_factory=dict)
    tolerance: float = Field(1e-5, ge=0.0, description="Stop a level when the loss improves less than this "
                                                         "(relative) over `window` iterations.")
    window: int = Field(10, ge=2)

    @field_validator("levels")
    @classmethod
    def _levels_nonempty(cls, v: list[Level]) -> list[Level]:
        if not v:
            raise ValueError("a stage needs at least one level")
        return v

    @property
    def is_linear(self) -> bool:
        return self.transform in LINEAR


class RegistrationConfig(_Strict):
    """A whole registration: initialisation and stages, run in order."""

    preset: str | None = None
    init: InitName = "moments"
    seed: int = 0
    normalize: bool = True
    stages: list[Stage]

    @model_validator(mode="after")
    def _nonempty(self) -> RegistrationConfig:
        if not self.stages:
            raise ValueError("at least one stage is required")
        return self


PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def validation_problems(exc: ValidationError) -> str:
    """One line naming each bad key (dotted path) and what was wrong with it."""
    return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())


def _validate(data: Any, source: str) -> RegistrationConfig:
    """The validated config; every stage's names and options are also built once (no image read)."""
    from .registration.stages import check_stage  # the engine imports this module

    try:
        config = RegistrationConfig.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{source}: invalid configuration: {validation_problems(exc)}") from None
    for i, stage in enumerate(config.stages):
        check_stage(stage, f"{source}: stages.{i} ({stage.transform})")
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InputError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a config file must hold a mapping at the top level")
    return data


def load_preset(name: str) -> RegistrationConfig:
    """The named preset; a typo raises InputError listing the valid names."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise InputError(f"unknown preset {name!r}; valid presets: {', '.join(preset_names())}")
    data = _read_yaml(path)
    data["preset"] = name
    return _validate(data, f"preset {name!r}")


def resolve_config(preset: str | None = None, config_file: str | Path | None = None,
                   overrides: dict[str, Any] | None = None) -> RegistrationConfig:
    """Preset, then a YAML file on top (top-level keys replace; ``stages`` replaces the list), then
    CLI ``overrides`` (``init``, ``seed``, ...). ``metric`` replaces every stage's metric and drops
    the stage's ``metric_options`` that the new metric does not take (``--metric mi`` on ``syn``
    drops LNCC's ``radius``)."""
    data: dict[str, Any] = {}
    file_data: dict[str, Any] = {}
    if config_file is not None:
        file_data = _read_yaml(Path(config_file))
        preset = preset or file_data.get("preset")
    if preset is not None:
        data = load_preset(preset).model_dump()
    data.update(file_data)
    if preset is not None:
        data["preset"] = preset
    overrides = dict(overrides or {})
    metric = overrides.pop("metric", None)
    data.update({k: v for k, v in overrides.items() if v is not None})
    if "stages" not in data:
        raise InputError("no stages: give --preset or a config file with `stages`")
    if metric is not None:
        from .registration.stages import similarity_options

        accepted = similarity_options(metric)
        for stage in data["stages"]:  # options the new metric does not take are dropped
            stage["metric"] = metric
            stage["metric_options"] = {k: v for k, v in stage.get("metric_options", {}).items() if k in accepted}
    return _validate(data, str(config_file) if config_file else f"preset {preset!r}")
