"""Write a registration's results to OUTDIR: warped image, transform files and result.json.

Every file is written atomically; nothing is written before the registration has succeeded.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import __version__
from .config import RegistrationConfig
from .image import Image
from .io.atomic import atomic_path, check_not_input
from .io.images import write_image
from .register import Result
from .resample import resample


def write_json(data: Any, path: Path, inputs: Sequence[str | Path] = ()) -> Path:
    """Atomic, pretty JSON."""
    check_not_input(path, inputs)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return np.asarray(obj.detach().cpu() if isinstance(obj, torch.Tensor) else obj).tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def versions() -> dict[str, str]:
    import nibabel
    import SimpleITK

    return {"torchalign": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "nibabel": nibabel.__version__, "SimpleITK": SimpleITK.Version_VersionString(),
            "python": platform.python_version()}


def result_document(result: Result, config: RegistrationConfig, fixed: str, moving: str,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The content of result.json (schema documented in docs/outputs.md)."""
    stages = [{"transform": s.transform, "metric": s.metric,
               "levels": [{"shrink": lv.shrink, "sigma": lv.sigma, "iterations": lv.iterations,
                           "shape": list(lv.shape), "seconds": round(lv.seconds, 4), "losses": lv.losses}
                          for lv in s.levels]} for s in result.stages]
    doc: dict[str, Any] = {
        "fixed": fixed, "moving": moving, "preset": config.preset,
        "settings": config.model_dump(), "stages": stages,
        "init_matrix": result.init, "matrix": result.linear[0],
        "timings": {"registration": round(result.seconds, 4)},
        "versions": versions(),
    }
    doc.update(extra or {})
    return doc


def write_registration(outdir: Path, fixed: Image, moving: Image, result: Result, config: RegistrationConfig,
                       inputs: Sequence[str | Path], extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write warped.nii.gz, transform.txt and result.json into ``outdir``; return their paths."""
    from .io.transforms import write_linear

    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"warped": outdir / "warped.nii.gz", "transform": outdir / "transform.txt",
             "result": outdir / "result.json"}
    for p in paths.values():
        check_not_input(p, inputs)
    source = moving.with_data(moving.data.float().mean(1, keepdim=True) if moving.channels > 1 else moving.data.float())
    warped = resample(source.to(result.linear.device), fixed.grid, result.transform.to(result.linear.device))
    warped = Image(warped.data.cpu(), fixed.grid, dict(fixed.meta))
    write_image(warped, paths["warped"], dtype=np.float32, inputs=inputs)
    write_linear(result.linear[0].cpu().numpy(), paths["transform"], center=fixed.grid.center())
    doc = result_document(result, config, str(inputs[0]), str(inputs[1]), extra)
    doc["outputs"] = {k: p.name for k, p in paths.items()}
    write_json(doc, paths["result"], inputs)
    return paths
