"""Read and write transform files: ITK/ANTs linear transforms, FSL FLIRT matrices, ANTs warps.

All functions speak torchalign's convention: world RAS+ mm and transforms that map fixed-space
points to moving-space points (``moving_from_fixed``, the pull-back used to resample the moving
image onto the fixed grid). ITK and ANTs files store the same direction (fixed -> moving) in LPS;
the LPS <-> RAS flip happens here through :mod:`torchalign.io.lps` only.

* Linear files: ``.txt``/``.tfm`` (ITK text) and ``.mat`` (ANTs, Matlab v4) through SimpleITK's
  ``ReadTransform``/``WriteTransform``; ANTsPy 0.6.3 and SimpleITK read what is written here.
* FSL FLIRT ``.mat`` (a text 4x4 matrix) through nitransforms, which needs the reference (fixed)
  and input (moving) images. A FLIRT matrix maps *moving* scaled-mm coordinates to *reference*
  (fixed) scaled-mm coordinates; :func:`read_fsl` returns the inverse direction, like the rest.
* Displacement fields: the ANTs ``Warp.nii.gz`` layout (see :func:`write_displacement`).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from torch import Tensor

from ..errors import InputError
from ..grid import Grid
from .atomic import atomic_path, check_not_input
from .images import nifti_affine, read_image
from .lps import flip_matrix, flip_points, ras_from_lps

PathLike = str | os.PathLike
LINEAR_SUFFIXES = (".txt", ".tfm", ".mat")
FIELD_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")
NIFTI_INTENT_VECTOR = 1007


class Displacement(NamedTuple):
    """A dense displacement field ``(1, D, *S)`` (RAS mm, T(x) = x + u(x)) on ``grid``."""

    field: Tensor
    grid: Grid


ChainItem = np.ndarray | Displacement


def _suffix(path: PathLike) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _check_matrix(matrix: np.ndarray, what: str) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    d = m.shape[0] - 1
    if m.ndim != 2 or m.shape != (d + 1, d + 1) or d not in (2, 3):
        raise InputError(f"{what}: expected a (D+1, D+1) matrix with D = 2 or 3, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise InputError(f"{what}: matrix contains NaN or Inf")
    if not np.allclose(m[d], np.eye(d + 1)[d], atol=1e-9):
        raise InputError(f"{what}: last row of a homogeneous matrix must be {np.eye(d + 1)[d].tolist()}, got {m[d].tolist()}")
    return m


# ---- linear transforms -------------------------------------------------------------------------
def write_linear(matrix_ras: np.ndarray, path: PathLike, center: np.ndarray | Sequence[float] | None = None,
                 inputs: Sequence[PathLike] = ()) -> Path:
    """Write a ``(D+1, D+1)`` RAS ``moving_from_fixed`` matrix as an ITK/ANTs affine file.

    ``.txt``/``.tfm`` give ITK text, ``.mat`` the ANTs (Matlab v4) binary; both hold
    ``AffineTransform_double_D_D`` with ``y = A (x - c) + t + c`` in LPS. ``center`` is the
    rotation centre c in RAS mm (pass the fixed image's ``grid.center()``: ANTs writes its own
    transforms about such a centre); it is stored in LPS as the FixedParameters (default 0).
    The mapping is the same whatever the centre. Refuses to overwrite any of ``inputs``.
    """
    m_ras = _check_matrix(matrix_ras, str(path))
    if _suffix(path) not in LINEAR_SUFFIXES:
        raise InputError(f"{path}: linear transforms are written as {', '.join(LINEAR_SUFFIXES)}")
    target = check_not_input(path, inputs)
    d = m_ras.shape[0] - 1
    c = np.zeros(d) if center is None else np.asarray(center, dtype=np.float64)
    if c.shape != (d,) or not np.all(np.isfinite(c)):
        raise InputError(f"{path}: center must be {d} finite numbers, got {np.asarray(center).tolist()}")
    m = flip_matrix(m_ras)
    c_lps = flip_points(c)
    a, b = m[:d, :d], m[:d, d]
    tx = sitk.AffineTransform(d)
    tx.SetMatrix(a.ravel().tolist())
    tx.SetCenter(c_lps.tolist())
    tx.SetTranslation((b - c_lps + a @ c_lps).tolist())  # b = t + c - A c
    with atomic_path(target) as tmp:
        sitk.WriteTransform(tx, str(tmp))
    return target


def _read_itk_transform(path: PathLike) -> sitk.Transform:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such transform file")
    try:
        return sitk.ReadTransform(str(p))
    except RuntimeError as exc:
        hint = ""
        if _looks_like_fsl(p):
            hint = " (it looks like an FSL FLIRT matrix: read it with read_fsl(path, fixed, moving))"
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise InputError(f"{path}: not an ITK/ANTs transform file{hint}: {first}") from exc


def _looks_like_fsl(p: Path) -> bool:
    try:
        rows = [r.split() for r in p.read_text().splitlines() if r.strip()]
        return len(rows) == 4 and all(len(r) == 4 for r in rows) and bool(np.asarray(rows, float).size)
    except (UnicodeDecodeError, ValueError):
        return False


def _linear_matrix(tx: sitk.Transform, what: str) -> np.ndarray:
    """RAS ``(D+1, D+1)`` matrix of a linear ITK transform (or composite of linear ones)."""
    if not tx.IsLinear():
        raise InputError(f"{what}: {tx.GetName()} is not linear; read it with read_transform_chain")
    d = tx.GetDimension()
    # The images of the origin and the unit vectors give the matrix exactly, for every linear
    # ITK type (Euler, Versor, Similarity, ScaleSkew, Translation...) and linear composites.
    origin = np.asarray(tx.TransformPoint([0.0] * d))
    lps = np.eye(d + 1)
    lps[:d, d] = origin
    for i in range(d):
        lps[:d, i] = np.asarray(tx.TransformPoint(np.eye(d)[i].tolist())) - origin
    return flip_matrix(lps)


def read_linear(path: PathLike) -> np.ndarray:
    """Read an ITK/ANTs linear transform file (``.txt``, ``.tfm``, ``.mat``, ``.h5``) -> ``(D+1, D+1)`` RAS.

    Any linear ITK type SimpleITK reads is accepted (composites of linear transforms are
    multiplied out). The result maps fixed-space RAS points to moving-space RAS points.
    """
    return _linear_matrix(_read_itk_transform(path), str(path))


def read_fsl(path: PathLike, fixed_path: PathLike, moving_path: PathLike) -> np.ndarray:
    """Read an FSL FLIRT matrix -> ``(4, 4)`` RAS ``moving_from_fixed``.

    ``fixed_path`` is FLIRT's ``-ref`` image and ``moving_path`` its ``-in`` image: a FLIRT matrix
    is expressed in their scaled-voxel coordinates. FLIRT's matrix maps moving -> fixed; the
    returned matrix is the pull-back (fixed -> moving), as nitransforms' ``Affine.matrix``.
    """
    from nitransforms.io.base import TransformFileError, TransformIOError
    from nitransforms.linear import load

    for p, role in ((path, "FSL matrix"), (fixed_path, "reference (fixed) image"), (moving_path, "moving image")):
        if not Path(p).is_file():
            raise InputError(f"{p}: no such file ({role})")
    try:
        xfm = load(str(path), fmt="fsl", reference=str(fixed_path), moving=str(moving_path))
    except (TransformFileError, TransformIOError, ValueError, OSError) as exc:
        raise InputError(f"{path}: not an FSL FLIRT matrix (expected 4 rows of 4 numbers): {exc}") from exc
    m = np.asarray(xfm.matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise InputError(f"{path}: expected one 4x4 FSL matrix, got {m.shape}")
    return m


# ---- displacement fields -------------------------------------------------------------------------
def write_displacement(field: Tensor, grid: Grid, path: PathLike, inputs: Sequence[PathLike] = ()) -> Path:
    """Write a ``(1, D, *S)`` RAS displacement field (mm) on ``grid`` as an ANTs/ITK warp NIfTI.

    The file is what ANTs writes: shape ``(X, Y, Z, 1, 3)`` (2-D: ``(X, Y, 1, 1, 2)``), dim[0] = 5,
    intent 1007 (vector), float32, the grid's affine, vectors in LPS mm. ``ants.apply_transforms``
    and SimpleITK's ``DisplacementFieldTransform`` then map a fixed point p to ``p + u(p)``.
    """
    d = grid.ndim
    if _suffix(path) not in (".nii", ".nii.gz"):
        raise InputError(f"{path}: displacement fields are written as .nii or .nii.gz (the ANTs warp format)")
    if tuple(field.shape) != (1, d, *grid.shape):
        raise InputError(f"{path}: field must be (1, {d}, {', '.join(map(str, grid.shape))}) for this grid, "
                         f"got {tuple(field.shape)}")
    u = flip_points(field[0].detach().cpu().movedim(0, -1).numpy(), np.float32)  # (*S, D) LPS vectors, one copy
    if not np.all(np.isfinite(u)):
        raise InputError(f"{path}: displacement field contains NaN or Inf")
    target = check_not_input(path, inputs)
    data = u[:, :, :, None, :] if d == 3 else u[:, :, None, None, :]
    affine = nifti_affine(grid)
    img = nib.Nifti1Image(data, affine)
    img.set_data_dtype(np.float32)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_intent("vector")
    with atomic_path(target) as tmp:
        nib.save(img, str(tmp))
    return target


def read_displacement(path: PathLike) -> Displacement:
    """Read an ANTs/ITK displacement field -> ``Displacement(field (1, D, *S) RAS mm, grid)``.

    NIfTI warps must have the ANTs layout (see :func:`write_displacement`); ``.mha``/``.nrrd``
    vector images (as ITK writes) are read through SimpleITK. Vectors are LPS in the file.
    """
    if _suffix(path) not in FIELD_SUFFIXES:
        raise InputError(f"{path}: displacement fields are read from {', '.join(FIELD_SUFFIXES)}")
    if _suffix(path) in (".nii", ".nii.gz") and Path(path).is_file():
        _check_nifti_field(path)
    image = read_image(path)
    if image.channels != image.ndim:
        kind = "a scalar image" if image.channels == 1 else f"an image with {image.channels} components"
        raise InputError(f"{path}: is {kind}, not a {image.ndim}-D displacement field "
                         f"(expected {image.ndim} vector components per voxel)")
    return Displacement(_ras_vectors(image.data), image.grid)


def _ras_vectors(lps: Tensor) -> Tensor:
    """``(1, D, *S)`` LPS displacement vectors -> RAS float32 (the negation of io.lps.flip_points)."""
    flip = torch.ones(lps.shape[1], dtype=torch.float32)
    flip[:2] = -1
    return lps.to(torch.float32) * flip.view(1, -1, *([1] * (lps.ndim - 2)))


def _field_from_sitk(image: sitk.Image) -> Displacement:
    """A SimpleITK vector image of LPS displacements -> ``Displacement`` in RAS."""
    d = image.GetDimension()
    u = np.moveaxis(sitk.GetArrayFromImage(image), -1, 0)  # (D, [z,] y, x)
    u = np.transpose(u, (0, *range(d, 0, -1)))  # (D, x, y[, z])
    lps = np.eye(d + 1)
    lps[:d, :d] = np.asarray(image.GetDirection()).reshape(d, d) * np.asarray(image.GetSpacing())[None, :]
    lps[:d, d] = image.GetOrigin()
    field = _ras_vectors(torch.from_numpy(np.ascontiguousarray(u))[None])
    return Displacement(field, Grid(u.shape[1:], ras_from_lps(d) @ lps))


def _check_nifti_field(path: PathLike) -> None:
    try:
        header = nib.load(str(path)).header
    except Exception as exc:  # nibabel raises many types for a corrupt header
        raise InputError(f"{path}: cannot read NIfTI header ({type(exc).__name__}: {exc})") from exc
    shape = header.get_data_shape()
    intent = int(header["intent_code"])
    layout = "(X, Y, Z, 1, 3) or (X, Y, 1, 1, 2)"
    if len(shape) != 5 or shape[3] != 1:
        raise InputError(f"{path}: not a displacement field: shape {shape}, expected the ANTs warp layout {layout}")
    components = shape[4]
    expected = 2 if shape[2] == 1 and components == 2 else 3
    if components != expected:
        raise InputError(f"{path}: a displacement field needs {expected} components per voxel for shape "
                         f"{shape[:3]}, got {components} (expected {layout})")
    if intent not in (0, NIFTI_INTENT_VECTOR, 1006):
        raise InputError(f"{path}: NIfTI intent code {intent} is not a vector/displacement field (expected 1007)")


# ---- chains -------------------------------------------------------------------------------------
def _itk_chain(tx: sitk.Transform, what: str) -> list[ChainItem]:
    """An ITK transform as chain items, in the order a fixed point goes through them."""
    if tx.IsLinear():
        return [_linear_matrix(tx, what)]
    if isinstance(tx, sitk.CompositeTransform):
        # ITK composites are stacks: the transform added last is applied to the point first.
        return [item for i in reversed(range(tx.GetNumberOfTransforms()))
                for item in _itk_chain(tx.GetNthTransform(i), what)]
    if isinstance(tx, sitk.DisplacementFieldTransform):
        return [_field_from_sitk(tx.GetDisplacementField())]
    raise InputError(f"{what}: {tx.GetName()} is not supported; a chain holds linear transforms and displacement fields")


def read_transform_chain(paths: Sequence[PathLike | tuple[PathLike, bool]]) -> list[ChainItem]:
    """Read an ANTs ``transformlist`` -> a list of RAS matrices and ``Displacement`` fields.

    Order: the list is returned in the order given, which is ANTs' order *and* the order in which
    a fixed-space point goes through them: ``[warp, affine]`` means ``x -> affine(warp(x))`` (as
    ``ants.apply_transforms(fixed, moving, [warp, affine])``; torchalign's ``Compose(warp, affine)``).
    An item ``(path, True)`` is inverted (linear files only, like ANTs' ``whichtoinvert``).
    Fields are NIfTI/MetaImage/NRRD warps; other files are read by SimpleITK (``.txt``, ``.tfm``,
    ``.mat``, ``.h5``): a composite (ANTs' ``Composite.h5``) is expanded into its linear and
    displacement-field parts in application order.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if len(paths) == 0:
        raise InputError("empty transform list: give at least one transform file")
    chain: list[ChainItem] = []
    for item in paths:
        path, invert = item if isinstance(item, tuple) else (item, False)
        items = ([read_displacement(path)] if _suffix(path) in FIELD_SUFFIXES
                 else _itk_chain(_read_itk_transform(path), str(path)))
        if invert:
            if len(items) != 1 or not isinstance(items[0], np.ndarray):
                raise InputError(f"{path}: only a linear transform can be inverted here; give the inverse warp file")
            items = [np.linalg.inv(items[0])]
        chain += items
    dims = {item.shape[0] - 1 if isinstance(item, np.ndarray) else item.grid.ndim for item in chain}
    if len(dims) != 1:
        raise InputError(f"transforms of different dimensions {sorted(dims)} in one chain: {list(paths)}")
    return chain
