"""``torchalign resample IMAGE --like REF -o OUT``."""
from __future__ import annotations

import click

from .options import interp_option, nan_to_option


@click.command("resample")
@click.argument("image", type=click.Path())
@click.option("--like", "like", required=True, type=click.Path(), help="Reference image whose grid to resample onto.")
@click.option("-o", "--output", required=True, type=click.Path(), help="Output image file.")
@interp_option
@click.option("--pad", default=0.0, show_default=True, type=float, help="Value outside the input's extent.")
@nan_to_option
def resample_cmd(image: str, like: str, output: str, interp: str, pad: float, nan_to: float | None) -> None:
    """Resample IMAGE onto the grid of REF through world coordinates (no transform)."""
    from ..errors import InputError
    from ..io.atomic import check_not_input
    from ..io.images import file_kind, read_image, write_image
    from ..resample import resample

    check_not_input(output, [image, like])  # fail before the work, not after it
    file_kind(output)
    src = read_image(image, nan_to=nan_to)
    ref = read_image(like, nan_to=nan_to)
    if src.ndim != ref.ndim:
        raise InputError(f"{image} is {src.ndim}-D but {like} is {ref.ndim}-D: cannot resample one onto the other")
    out = resample(src, ref.grid, interp=interp, padding=pad)
    write_image(out, output, inputs=[image, like])
    click.echo(f"wrote {output}")
