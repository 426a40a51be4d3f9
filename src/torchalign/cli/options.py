"""Options shared by several subcommands (torch-free at import: checks import what they need when run)."""
from __future__ import annotations

from typing import Any

import click

from ..io.spaces import SPACES

nan_to_option = click.option(
    "--nan-to", type=float, default=None, metavar="VALUE",
    help="Replace NaN/Inf voxels by VALUE instead of refusing the image.")

interp_option = click.option(
    "--interp", type=click.Choice(["linear", "nearest", "cubic", "label"]), default="linear", show_default=True,
    help="Interpolation: linear, nearest, cubic (B-spline) or label (label-wise linear, for label maps).")

overwrite_option = click.option(
    "--overwrite", is_flag=True,
    help="Replace the content of an output folder that already holds files (written aside, then swapped in).")

points_space_option = click.option(
    "--points-space", type=click.Choice(SPACES), default=None,
    help="What the point files hold when they do not declare it: RAS or LPS mm, or voxel indices.")

quiet_option = click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")


def check_device(text: str) -> str:
    """``text`` if it names a torch device that this machine has, else InputError (one line).

    Device-agnostic: any ``torch.device`` string is parsed; a non-CPU type must have a torch backend
    module (``torch.cuda``, ``torch.mps``, ``torch.xpu`` ...) that says it is available, and an index
    must be below its device count.
    """
    import torch

    from ..errors import InputError

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"--device {text!r}: not a torch device ({str(exc).splitlines()[0]})") from None
    if device.type == "cpu":
        return text
    backend = getattr(torch, device.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise InputError(f"--device {text}: no {device.type} device is available on this machine (use --device cpu)")
    count = getattr(backend, "device_count", None)
    if device.index is not None and count is not None and device.index >= count():
        raise InputError(f"--device {text}: this machine has {count()} {device.type} device(s), "
                         f"numbered from 0")
    return text


def _device_callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    return value if value is None else check_device(value)


def device_option(default: str | None = "cpu", help: str = "Torch device: cpu, cuda, cuda:1, mps ...") -> Any:
    """``--device`` checked while the options are parsed: an unknown or unavailable device is exit 2."""
    return click.option("--device", default=default, show_default=default is not None, callback=_device_callback,
                        help=help)
