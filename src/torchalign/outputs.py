"""Write a registration's results to OUTDIR: warped image, transform files, result.json, evaluation.

Every file is written atomically; nothing is written before the registration has succeeded, and
callers write into a staging folder that replaces OUTDIR whole (``io.folders.staged_folder``).
Only what is asked is computed: the inverse warp and the Jacobian map are optional, and the
complete map's displacement field is computed once for the warp file, the Jacobian and the TRE.
NIfTI ``.gz`` files are written with gzip level 1 (nibabel's default), chosen deliberately: on a
160 x 192 x 224 displacement field it took 10 s against level 6's 14 s on a loaded 2-core machine,
for a file 9 % larger (22 MB against 20 MB).
"""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np
import torch
from torch import Tensor

from . import __version__
from .config import RegistrationConfig
from .errors import InputError
from .functional.jacobian import jacobian_det
from .grid import Grid
from .image import Image
from .io.atomic import atomic_path, check_not_input
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


FILES = {"warped": "warped.nii.gz", "transform": "transform.txt", "result": "result.json",
         "warp": "warp.nii.gz", "inverse_warp": "inverse_warp.nii.gz", "jacobian": "jacobian.nii.gz"}
OPTIONAL = ("inverse_warp", "jacobian")  # deformable results only, written when asked
WRITTEN = (*FILES.values(), "metrics.json", "warped_labels.nii.gz", "report.html")  # all an output folder holds


def complete_displacement(result: Result, grid: Grid) -> Tensor:
    """``(1, D, *S)`` displacement (world mm) of the complete fixed -> moving map on ``grid``, on the CPU."""
    with torch.no_grad():
        return result.transform.to(result.linear.device).displacement(grid).cpu()


def write_registration(outdir: Path, fixed: Image, moving: Image, result: Result, config: RegistrationConfig,
                       inputs: Sequence[str | Path], extra: dict[str, Any] | None = None, *,
                       optional: Collection[str] = (), field: Tensor | None = None) -> dict[str, Path]:
    """Write the registration's files into ``outdir``; return their paths by name (see :data:`FILES`).

    Always: ``warped.nii.gz`` (moving on the fixed grid, float32), ``transform.txt`` (ITK, the
    linear stages) and ``result.json`` (input paths made absolute). Deformable results add
    ``warp.nii.gz`` (the complete fixed -> moving map as one ANTs/ITK displacement field on the
    fixed grid, linear part included) and, when named in ``optional``, ``inverse_warp.nii.gz``
    (moving -> fixed, on the moving grid) and ``jacobian.nii.gz`` (det J of the complete map).
    ``field`` is the complete map's displacement on the fixed grid when the caller has it already.
    """
    unknown = set(optional) - set(OPTIONAL)
    if unknown:
        raise InputError(f"unknown optional outputs {sorted(unknown)}; expected some of {', '.join(OPTIONAL)}")
    deformable = is_deformable(result)
    names = ["warped", "transform", "result"] + (["warp", *(k for k in OPTIONAL if k in optional)] if deformable else [])
    paths = {k: outdir / FILES[k] for k in names}
    for p in paths.values():
        check_not_input(p, inputs)
    outdir.mkdir(parents=True, exist_ok=True)
    device = result.linear.device
    transform = result.transform.to(device)
    data = moving.data if moving.data.dtype == torch.float32 else moving.data.float()
    source = moving.with_data(data.mean(1, keepdim=True) if moving.channels > 1 else data)
    with torch.no_grad():
        warped = resample(source.to(device), fixed.grid, transform)
    write_image(Image(warped.data.cpu(), fixed.grid, dict(fixed.meta)), paths["warped"], dtype=np.float32, inputs=inputs)
    write_linear(result.linear[0].cpu().numpy(), paths["transform"], center=fixed.grid.center())
    if deformable:
        field = complete_displacement(result, fixed.grid) if field is None else field
        write_displacement(field, fixed.grid, paths["warp"], inputs=inputs)
        if "jacobian" in paths:
            det = jacobian_det(field, fixed.grid)
            write_image(Image(det.unsqueeze(1), fixed.grid), paths["jacobian"], dtype=np.float32, inputs=inputs)
        if "inverse_warp" in paths:
            with torch.no_grad():
                inverse = result.inverse.to(device).displacement(moving.grid)
            write_displacement(inverse.cpu(), moving.grid, paths["inverse_warp"], inputs=inputs)
    doc = result_document(result, config, _absolute(inputs[0]), _absolute(inputs[1]), extra)
    doc["outputs"] = {k: p.name for k, p in paths.items()}
    write_json(doc, paths["result"], inputs)
    return paths


def _absolute(path: str | Path) -> str:
    return str(Path(path).resolve())


def evaluation(fixed: Image, result: Result, *, fixed_labels: Image | None = None,
               moving_labels: Image | None = None, labels: Sequence[int] | None = None,
               fixed_points: Tensor | np.ndarray | None = None, moving_points: Tensor | np.ndarray | None = None,
               field: Tensor | None = None) -> tuple[dict[str, Any], Image | None]:
    """The metrics document of a result and the warped moving labels (label-wise linear, on the CPU).

    Points are ``(N, D)`` RAS mm; fixed points are carried to moving space by the complete map and
    compared with the moving points (TRE). Deformable results also get Jacobian statistics.
    ``field`` is the complete map's displacement on the fixed grid when the caller has it already.
    """
    from .metrics.evaluate import evaluate

    device = result.linear.device
    warped_labels = None
    if moving_labels is not None:
        with torch.no_grad():
            warped_labels = resample(moving_labels.to(device), (fixed_labels or fixed).grid,
                                     result.transform.to(device), interp="label")
        warped_labels = Image(warped_labels.data.cpu(), warped_labels.grid, dict(moving_labels.meta))
    if field is None and (fixed_points is not None or is_deformable(result)):
        field = complete_displacement(result, fixed.grid)
    doc = evaluate(fixed_labels, warped_labels, labels=labels,
                   warp=None if field is None else (field, fixed.grid),
                   fixed_points=None if fixed_points is None else torch.as_tensor(fixed_points),
                   moving_points=None if moving_points is None else torch.as_tensor(moving_points))
    return doc, warped_labels


def write_evaluation(outdir: Path, fixed: Image, result: Result, inputs: Sequence[str | Path], *,
                     fixed_labels: Image | None = None, moving_labels: Image | None = None,
                     labels: Sequence[int] | None = None, fixed_points: np.ndarray | None = None,
                     moving_points: np.ndarray | None = None, field: Tensor | None = None) -> dict[str, Path]:
    """:func:`evaluation`, written as ``warped_labels.nii.gz`` (when labels are given) and ``metrics.json``."""
    paths: dict[str, Path] = {"metrics": outdir / "metrics.json"}
    if moving_labels is not None:
        paths["warped_labels"] = outdir / "warped_labels.nii.gz"
        check_not_input(paths["warped_labels"], inputs)
    doc, warped_labels = evaluation(fixed, result, fixed_labels=fixed_labels, moving_labels=moving_labels,
                                    labels=labels, fixed_points=fixed_points, moving_points=moving_points, field=field)
    if warped_labels is not None:
        write_image(warped_labels, paths["warped_labels"], inputs=inputs)
    write_json(doc, paths["metrics"], inputs)
    return paths


def write_outputs(outdir: Path, fixed: Image, moving: Image, result: Result, config: RegistrationConfig,
                  inputs: Sequence[str | Path], *, fixed_labels_path: str | Path | None = None,
                  optional: Collection[str] = (), evaluate: bool = False, fixed_labels: Image | None = None,
                  moving_labels: Image | None = None, labels: Sequence[int] | None = None,
                  fixed_points: np.ndarray | None = None, moving_points: np.ndarray | None = None) -> dict[str, Path]:
    """Everything ``torchalign register`` writes into ``outdir`` (registration files, then the evaluation
    when asked or when labels or points are given); the complete map's field is computed once."""
    evaluate = evaluate or fixed_labels is not None or fixed_points is not None
    field = None
    if is_deformable(result) or (evaluate and fixed_points is not None):
        field = complete_displacement(result, fixed.grid)
    extra = {"labels": {"fixed_labels": _absolute(fixed_labels_path), "warped_labels": "warped_labels.nii.gz"}} \
        if fixed_labels_path else {}
    paths = write_registration(outdir, fixed, moving, result, config, inputs, extra, optional=optional, field=field)
    if evaluate:
        paths.update(write_evaluation(outdir, fixed, result, inputs, fixed_labels=fixed_labels,
                                      moving_labels=moving_labels, labels=labels, fixed_points=fixed_points,
                                      moving_points=moving_points, field=field))
    return paths
