"""``torchalign info IMAGE``."""
from __future__ import annotations

import click

from .options import nan_to_option


@click.command()
@click.argument("image", type=click.Path())
@nan_to_option
def info(image: str, nan_to: float | None) -> None:
    """Print shape, spacing, origin, orientation, dtype and intensity range of IMAGE."""
    import numpy as np

    from ..io import read_image

    img = read_image(image, nan_to=nan_to)
    g = img.grid
    data = img.data
    fmt = lambda v: "(" + ", ".join(f"{x:.6g}" for x in v) + ")"  # noqa: E731
    click.echo(f"file:        {image}")
    click.echo(f"dimension:   {g.ndim}-D, {img.channels} channel(s)")
    click.echo(f"shape:       {g.shape}")
    click.echo(f"spacing:     {fmt(g.spacing)} mm")
    click.echo(f"origin:      {fmt(g.origin)} mm (RAS)")
    click.echo(f"orientation: {g.orientation()}")
    click.echo("direction:   " + np.array2string(g.direction, precision=4, suppress_small=True).replace("\n", "\n             "))
    click.echo(f"dtype:       {str(data.dtype).replace('torch.', '')}")
    click.echo(f"range:       [{float(data.min()):.6g}, {float(data.max()):.6g}]")
