"""Options shared by several subcommands."""
from __future__ import annotations

import click

nan_to_option = click.option(
    "--nan-to", type=float, default=None, metavar="VALUE",
    help="Replace NaN/Inf voxels by VALUE instead of refusing the image.")

interp_option = click.option(
    "--interp", type=click.Choice(["linear", "nearest", "cubic", "label"]), default="linear", show_default=True,
    help="Interpolation: linear, nearest, cubic (B-spline) or label (label-wise linear, for label maps).")
