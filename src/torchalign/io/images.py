"""Read and write images with their world geometry (RAS+ mm).

NIfTI goes through nibabel (array axes and affine as nibabel gives them). MetaImage, NRRD, DICOM
series and 2-D PNG/JPEG/TIFF/BMP go through SimpleITK, whose LPS geometry is converted here (via
``io.lps``) and whose ``(z, y, x)`` arrays are transposed back to ``(x, y, z)``. NumPy files carry
no geometry of their own: pass ``spacing`` (default 1 mm) or store ``affine`` in an ``.npz``.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Iterator, Sequence

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch

from ..errors import InputError
from ..grid import Grid
from ..image import Image
from .atomic import atomic_files, check_not_input
from .lps import ras_from_lps

NIFTI = (".nii", ".nii.gz", ".hdr", ".img")
ITK_VOLUMES = (".mha", ".mhd", ".nrrd", ".nhdr", ".dcm")
ITK_2D = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NUMPY = (".npy", ".npz")
SUPPORTED = NIFTI + ITK_VOLUMES + ITK_2D + NUMPY
_READ_ERRORS = (OSError, EOFError, zlib.error, RuntimeError, ValueError, KeyError,
                nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError)
_TORCH_SAFE = {np.dtype("uint16"): np.int32, np.dtype("uint32"): np.int64, np.dtype("uint64"): np.int64,
               np.dtype("float16"): np.float32, np.dtype("bool"): np.uint8}


def file_kind(path: str | os.PathLike) -> str:
    """The reader for ``path``: 'nifti', 'itk', 'numpy' or 'dicom' (a folder); InputError otherwise."""
    p = Path(path)
    if p.is_dir():
        return "dicom"
    name = p.name.lower()
    for kind, exts in (("nifti", NIFTI), ("itk", ITK_VOLUMES + ITK_2D), ("numpy", NUMPY)):
        if any(name.endswith(e) for e in exts):
            return kind
    raise InputError(f"{path}: unknown image extension; expected one of {', '.join(SUPPORTED)} or a DICOM folder")


def read_image(path: str | os.PathLike, *, spacing: Sequence[float] | float | None = None,
               nan_to: float | None = None) -> Image:
    """Read ``path`` into an Image ``(1, C, *S)``; geometry in RAS+ mm.

    ``spacing`` is used for NumPy files only. NaN/Inf raise InputError unless ``nan_to`` replaces them.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file or directory")
    kind = file_kind(p)
    try:
        if kind == "nifti":
            array, grid, meta = _read_nifti(p)
        elif kind == "numpy":
            array, grid, meta = _read_numpy(p, spacing)
        else:
            array, grid, meta = _read_itk(p, dicom=kind == "dicom")
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise InputError(f"{path}: cannot read image ({_reason(exc)})") from exc
    if not array.dtype.isnative:  # big-endian files (e.g. SPM's): torch takes native byte order only
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype in _TORCH_SAFE:
        array = array.astype(_TORCH_SAFE[array.dtype])
    data = torch.from_numpy(np.ascontiguousarray(array))
    if data.is_floating_point() and not torch.isfinite(data).all():
        if nan_to is None:
            n = int((~torch.isfinite(data)).sum())
            raise InputError(f"{path}: image contains {n} NaN/Inf values (use --nan-to VALUE to replace them)")
        data = torch.nan_to_num(data, nan=nan_to, posinf=nan_to, neginf=nan_to)
    meta["source"] = str(p)
    return Image(data, grid, meta)


def _reason(exc: BaseException) -> str:
    """One line saying why a reader failed (ITK messages lose their source-file header and prefixes)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if isinstance(exc, RuntimeError) and lines and lines[0].startswith("Exception thrown in SimpleITK"):
        lines = [re.sub(r"^(ITK ERROR: \w+\(0x[0-9a-fA-F]+\): |sitk::ERROR: |\[\w+\] )", "", ln)
                 for ln in lines[1:] if not ln.startswith("Reason:")]
    parts = [lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"] if lines else []
    parts += [" ".join(getattr(exc, "itk_output", []))]
    text = "; ".join(p for p in parts if p) or "corrupt or truncated file"
    return f"{type(exc).__name__}: {text}"


@contextlib.contextmanager
def _itk_stderr() -> Iterator[list[str]]:
    """Capture what C++ code (ITK, MetaIO, GDCM) prints on file descriptor 2 during the block.

    On success the text is passed on to stderr unchanged (ITK warnings stay visible); on failure it is
    attached to the exception as ``itk_output`` so that the one-line error can quote it. The redirect
    is process-wide: what other threads write to fd 2 meanwhile is held back the same way.
    """
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): nothing to capture
        yield lines
        return
    with tempfile.TemporaryFile() as buffer:
        os.dup2(buffer.fileno(), 2)
        failed = False
        try:
            yield lines
        except BaseException as exc:
            failed = True
            exc.itk_output = lines  # type: ignore[attr-defined]
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            text = buffer.read().decode(errors="replace")
            lines.extend(ln.strip() for ln in text.splitlines() if ln.strip())
            if text and not failed:
                sys.stderr.write(text)


def _check_shape(shape: tuple[int, ...], path: Path) -> None:
    if any(s == 0 for s in shape):
        raise InputError(f"{path}: image has a zero-size dimension {shape}")


def _read_nifti(p: Path) -> tuple[np.ndarray, Grid, dict]:
    img = nib.load(str(p))
    shape = tuple(img.shape)
    _check_shape(shape, p)
    if len(shape) < 2 or len(shape) > 5 or (len(shape) == 5 and shape[3] != 1):
        raise InputError(f"{p}: expected a 2-D or 3-D image (optionally with channels), got shape {shape}")
    array = np.asanyarray(img.dataobj)
    affine = img.affine
    layout = "scalar"
    if len(shape) == 2:
        ndim = 2
        array = array[None]
    elif len(shape) == 3:
        ndim = 3
        array = array[None]
    elif len(shape) == 4:
        ndim, layout = 3, "time"
        array = np.moveaxis(array, 3, 0)
    else:
        ndim, layout = 3, "vector"
        array = np.moveaxis(array[:, :, :, 0, :], 3, 0)
        if shape[2] == 1 and int(img.header["dim"][0]) == 5 and shape[4] == 2:
            ndim, array = 2, array[:, :, :, 0]
    if ndim == 2:
        m = np.eye(3)
        m[:2, :2] = affine[:2, :2]
        m[:2, 2] = affine[:2, 3]
        grid = Grid(array.shape[1:], m)
    else:
        grid = Grid(array.shape[1:], affine)
    return array, grid, {"nifti_header": img.header.copy(), "channel_layout": layout}


def _read_numpy(p: Path, spacing: Sequence[float] | float | None) -> tuple[np.ndarray, Grid, dict]:
    affine = None
    if p.name.lower().endswith(".npz"):
        with np.load(p, allow_pickle=False) as z:
            keys = [k for k in ("image", "data", "vol", "arr_0") if k in z.files] or list(z.files)
            if not keys:
                raise InputError(f"{p}: the .npz holds no array")
            array = z[keys[0]]
            affine = z["affine"] if "affine" in z.files else None
            spacing = z["spacing"] if spacing is None and "spacing" in z.files else spacing
    else:
        array = np.load(p, allow_pickle=False)
    _check_shape(array.shape, p)
    if array.ndim not in (2, 3):
        raise InputError(f"{p}: expected a 2-D or 3-D array, got shape {array.shape}")
    if affine is not None:
        grid = Grid(array.shape, affine)
    else:
        sp = np.broadcast_to(np.asarray(1.0 if spacing is None else spacing, dtype=np.float64), (array.ndim,))
        grid = Grid.from_geometry(array.shape, spacing=sp)
    return array[None], grid, {}


def _read_itk(p: Path, dicom: bool) -> tuple[np.ndarray, Grid, dict]:
    with _itk_stderr():
        if dicom:
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(p))
            if not series:
                raise InputError(f"{p}: directory holds no DICOM series")
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(p), series[0]))
            img = reader.Execute()
        else:
            img = sitk.ReadImage(str(p))
    ndim = img.GetDimension()
    if ndim == 3 and img.GetSize()[2] == 1 and p.name.lower().endswith(ITK_2D):
        img = img[:, :, 0]
        ndim = 2
    if ndim not in (2, 3):
        raise InputError(f"{p}: expected a 2-D or 3-D image, got {ndim}-D")
    _check_shape(tuple(img.GetSize()), p)
    array = sitk.GetArrayFromImage(img)  # (z, y, x[, C])
    channels = img.GetNumberOfComponentsPerPixel()
    if channels > 1:
        array = np.moveaxis(array, -1, 0)
    else:
        array = array[None]
    array = np.transpose(array, (0, *range(ndim, 0, -1)))  # (C, x, y[, z])
    lps = np.eye(ndim + 1)
    lps[:ndim, :ndim] = np.asarray(img.GetDirection()).reshape(ndim, ndim) * np.asarray(img.GetSpacing())[None, :]
    lps[:ndim, ndim] = img.GetOrigin()
    return array, Grid(array.shape[1:], ras_from_lps(ndim) @ lps), {}


# ---- writing --------------------------------------------------------------------------------------
def write_image(image: Image, path: str | os.PathLike, *, dtype: np.dtype | str | None = None,
                inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Write ``image`` (batch of one) to ``path`` atomically; refuses to overwrite any of ``inputs``.

    ``dtype`` chooses the stored type. By default NIfTI keeps the source header's type, except that
    floating-point data is never quantised into an integer type (an interpolated int16 image is
    stored as float32). PNG/JPEG/TIFF/BMP hold 2-D 8/16-bit data and no geometry.
    """
    target = check_not_input(path, inputs)
    if image.batch_size != 1:
        raise InputError(f"{path}: can write one image per file, got a batch of {image.batch_size}")
    kind = file_kind(path) if not Path(path).is_dir() else "dicom"
    if kind == "dicom":
        raise InputError(f"{path}: writing DICOM is not supported; use .nii.gz, .mha or .nrrd")
    array = image.data[0].detach().cpu().numpy()
    if dtype is not None:
        array = array.astype(np.dtype(dtype), copy=False)
    if Path(path).name.lower().endswith(ITK_2D):
        array = _raster_array(array, image.ndim, path)
    try:
        with atomic_files(target, inputs) as tmp:
            if kind == "nifti":
                _write_nifti(image, array, tmp, dtype is not None)
            elif kind == "numpy":
                _write_numpy(image, array, tmp)
            else:
                _write_itk(image, array, tmp)
    except (OSError, RuntimeError) as exc:
        raise InputError(f"{path}: cannot write image ({_reason(exc)})") from exc
    return target


def nifti_affine(grid: Grid) -> np.ndarray:
    """4x4 NIfTI affine for a grid (2-D grids get a unit z axis)."""
    if grid.ndim == 3:
        return grid.world_from_voxel.copy()
    m = np.eye(4)
    m[:2, :2] = grid.world_from_voxel[:2, :2]
    m[:2, 3] = grid.world_from_voxel[:2, 2]
    return m


def _write_nifti(image: Image, array: np.ndarray, tmp: Path, explicit_dtype: bool) -> None:
    affine = nifti_affine(image.grid)
    source = image.meta.get("nifti_header")
    layout = image.meta.get("channel_layout", "scalar")
    c = array.shape[0]
    if c == 1 and layout != "vector":
        data = array[0]
    elif layout == "time":
        data = np.moveaxis(array, 0, -1)
    else:
        spatial = array if image.ndim == 3 else array[..., None]
        data = np.moveaxis(spatial, 0, -1)[:, :, :, None, :]
    if data.dtype == np.int64 and (source is None or explicit_dtype):
        data = data.astype(np.int32)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    header = source.copy() if isinstance(source, nib.Nifti1Header) else None
    img = nib.Nifti1Image(data, affine, header)
    keep = header is not None and not explicit_dtype
    if keep and np.issubdtype(data.dtype, np.floating) and not np.issubdtype(header.get_data_dtype(), np.floating):
        img.set_data_dtype(np.float32)
    elif keep:
        img.set_data_dtype(header.get_data_dtype())
    else:
        img.set_data_dtype(data.dtype)
    sform_code = int(header["sform_code"]) if header is not None else 1
    qform_code = int(header["qform_code"]) if header is not None else 1
    img.set_sform(affine, code=sform_code if header is not None else 1)
    img.set_qform(affine, code=qform_code if header is not None else 1)
    if data.ndim == 5:
        img.header.set_intent("vector")
    nib.save(img, str(tmp))


def _write_numpy(image: Image, array: np.ndarray, tmp: Path) -> None:
    data = array[0] if array.shape[0] == 1 else array
    if tmp.name.endswith(".npz"):
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, image=data, affine=image.grid.world_from_voxel)
    else:
        with open(tmp, "wb") as fh:
            np.save(fh, data)


def _raster_array(array: np.ndarray, ndim: int, path: str | os.PathLike) -> np.ndarray:
    """``(C, X, Y)`` data as uint8 (or uint16 for integers above 255) for PNG/JPEG/TIFF/BMP."""
    if ndim != 2:
        raise InputError(f"{path}: PNG/JPEG/TIFF/BMP files hold 2-D images only; use .nii.gz or .mha")
    if array.dtype in (np.uint8, np.uint16):
        return array
    lo, hi = float(array.min()), float(array.max())
    if lo >= 0 and hi <= 255:
        return np.round(array).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer) and lo >= 0 and hi <= 65535:
        return array.astype(np.uint16)
    raise InputError(f"{path}: intensities in [{lo:.4g}, {hi:.4g}] do not fit 8/16-bit; rescale or use .nii.gz/.mha")


def _write_itk(image: Image, array: np.ndarray, tmp: Path) -> None:
    ndim = image.ndim
    name = tmp.name.lower()
    spatial = np.transpose(array, (0, *range(ndim, 0, -1)))  # (C, z, y, x)
    c = array.shape[0]
    if c == 1:
        img = sitk.GetImageFromArray(np.ascontiguousarray(spatial[0]))
    else:
        img = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(spatial, 0, -1)), isVector=True)
    if not name.endswith(ITK_2D):
        lps = ras_from_lps(ndim) @ image.grid.world_from_voxel
        spacing = np.linalg.norm(lps[:ndim, :ndim], axis=0)
        img.SetSpacing(spacing.tolist())
        img.SetOrigin(lps[:ndim, ndim].tolist())
        img.SetDirection((lps[:ndim, :ndim] / spacing[None, :]).ravel().tolist())
    sitk.WriteImage(img, str(tmp), useCompression=name.endswith((".mha", ".nrrd", ".nhdr")))
