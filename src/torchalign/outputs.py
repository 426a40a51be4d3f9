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
from .functional.jacobian import jacobian_det
from .io.images import write_image
from .io.transforms import write_displacement, write_linear
from .registration import Result
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
    """The content of result.json (see docs/outputs.md)."""
    stages = [{"transform": s.transform, "metric": s.metric,
               "levels": [{"shrink": lv.shrink, "spacing_mm": lv.spacing, "sigma": lv.sigma,
                           "iterations": lv.iterations, "shape": list(lv.shape), "seconds": round(lv.seconds, 4),
                           "losses": lv.losses} for lv in s.levels],
               **({"similarity_before": s.similarity_before, "similarity_after": s.similarity_after,
                   "kept_previous": s.kept_previous} if s.similarity_before is not None else {})}
              for s in result.stages]
    doc: dict[str, Any] = {
        "fixed": fixed, "moving": moving, "preset": config.preset,
        "settings": config.model_dump(), "stages": stages,
        "init_matrix": result.init, "matrix": result.linear[0],
        "timings": {"registration": round(result.seconds, 4)},
        "versions": versions(),
    }
    doc.update(extra or {})
    return doc


def is_deformable(result: Result) -> bool:
    return result.transform.linear_matrix() is None


def write_registration(outdir: Path, fixed: Image, moving: Image, result: Result, config: RegistrationConfig,
                       inputs: Sequence[str | Path], extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write the registration's files into ``outdir``; return their paths by name.

    Always: ``warped.nii.gz`` (moving on the fixed grid), ``transform.txt`` (ITK, the linear
    stages) and ``result.json``. Deformable results add ``warp.nii.gz`` (the complete fixed ->
    moving map as one ANTs/ITK displacement field on the fixed grid, linear part included),
    ``inverse_warp.nii.gz`` (moving -> fixed, on the moving grid) and ``jacobian.nii.gz``
    (det J of the complete map).
    """
    outdir.mkdir(parents=True, exist_ok=True)
    names = ["warped", "transform", "result"] + (["warp", "inverse_warp", "jacobian"] if is_deformable(result) else [])
    files = {"warped": "warped.nii.gz", "transform": "transform.txt", "result": "result.json",
             "warp": "warp.nii.gz", "inverse_warp": "inverse_warp.nii.gz", "jacobian": "jacobian.nii.gz"}
    paths = {k: outdir / files[k] for k in names}
    for p in paths.values():
        check_not_input(p, inputs)
    device = result.linear.device
    transform = result.transform.to(device)
    source = moving.with_data(moving.data.float().mean(1, keepdim=True) if moving.channels > 1 else moving.data.float())
    warped = resample(source.to(device), fixed.grid, transform)
    write_image(Image(warped.data.cpu(), fixed.grid, dict(fixed.meta)), paths["warped"], dtype=np.float32, inputs=inputs)
    write_linear(result.linear[0].cpu().numpy(), paths["transform"], center=fixed.grid.center())
    if is_deformable(result):
        with torch.no_grad():
            field = transform.displacement(fixed.grid)
            write_displacement(field.cpu(), fixed.grid, paths["warp"], inputs=inputs)
            det = jacobian_det(field, fixed.grid)
            write_image(Image(det.unsqueeze(1).cpu(), fixed.grid), paths["jacobian"], dtype=np.float32, inputs=inputs)
            inverse = result.inverse.to(device).displacement(moving.grid)
            write_displacement(inverse.cpu(), moving.grid, paths["inverse_warp"], inputs=inputs)
    doc = result_document(result, config, str(inputs[0]), str(inputs[1]), extra)
    doc["outputs"] = {k: p.name for k, p in paths.items()}
    write_json(doc, paths["result"], inputs)
    return paths


def write_evaluation(outdir: Path, fixed: Image, result: Result, inputs: Sequence[str | Path], *,
                     fixed_labels: Image | None = None, moving_labels: Image | None = None,
                     labels: Sequence[int] | None = None, fixed_points: np.ndarray | None = None,
                     moving_points: np.ndarray | None = None) -> dict[str, Path]:
    """Warp the moving labels (label-wise linear) and write ``warped_labels.nii.gz`` and ``metrics.json``.

    Points are ``(N, D)`` RAS mm; fixed points are carried to moving space by the complete map and
    compared with the moving points (TRE). Deformable results also get Jacobian statistics.
    """
    from .metrics.evaluate import evaluate

    paths: dict[str, Path] = {"metrics": outdir / "metrics.json"}
    device = result.linear.device
    transform = result.transform.to(device)
    warped_labels = None
    if moving_labels is not None:
        paths["warped_labels"] = outdir / "warped_labels.nii.gz"
        check_not_input(paths["warped_labels"], inputs)
        warped_labels = resample(moving_labels.to(device), (fixed_labels or fixed).grid, transform, interp="label")
        warped_labels = Image(warped_labels.data.cpu(), warped_labels.grid, dict(moving_labels.meta))
        write_image(warped_labels, paths["warped_labels"], inputs=inputs)
    need_field = fixed_points is not None or is_deformable(result)
    with torch.no_grad():
        field = transform.displacement(fixed.grid).cpu() if need_field else None
    doc = evaluate(fixed_labels, warped_labels, labels=labels,
                   warp=None if field is None else (field, fixed.grid),
                   fixed_points=None if fixed_points is None else torch.as_tensor(fixed_points),
                   moving_points=None if moving_points is None else torch.as_tensor(moving_points))
    write_json(doc, paths["metrics"], inputs)
    return paths
