"""``torchalign apply`` (images, label maps) and ``torchalign apply-points`` (point sets)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .options import interp_option, nan_to_option

if TYPE_CHECKING:
    from ..grid import Grid

ORDER_HELP = ("TRANSFORMS are ITK/ANTs linear files (.txt, .tfm, .mat) or displacement fields (.nii.gz), "
              "in ANTs order: a fixed-space point goes through the first one first (as "
              "ants.apply_transforms(fixed, moving, [warp, affine])).")


@click.command("apply", help="Resample MOVING onto the FIXED grid through a chain of transforms. " + ORDER_HELP)
@click.argument("transforms", nargs=-1, required=True, type=click.Path())
@click.option("--moving", "-m", required=True, type=click.Path(), help="Image or label map to warp.")
@click.option("--fixed", "-f", required=True, type=click.Path(), help="Reference image (output grid).")
@click.option("-o", "--output", required=True, type=click.Path(), help="Output image.")
@interp_option
@click.option("--pad", default=0.0, show_default=True, type=float, help="Value outside the moving image.")
@nan_to_option
def apply_cmd(transforms: tuple[str, ...], moving: str, fixed: str, output: str, interp: str, pad: float,
              nan_to: float | None) -> None:
    import numpy as np

    from ..errors import InputError
    from ..io.atomic import check_not_input
    from ..io.images import file_kind, read_image, write_image
    from ..io.transforms import Displacement, read_transform_chain
    from ..resample import resample
    from ..transforms.chain import chain_transform

    check_not_input(output, [moving, fixed, *transforms])  # fail before the work, not after it
    file_kind(output)
    items = read_transform_chain(list(transforms))
    chain = chain_transform(items)
    src = read_image(moving, nan_to=nan_to)
    ref = read_image(fixed, nan_to=nan_to)
    if not (src.ndim == ref.ndim == chain.ndim):
        raise click.UsageError(f"dimensions differ: moving {src.ndim}-D, fixed {ref.ndim}-D, transforms {chain.ndim}-D")
    if isinstance(items[0], Displacement):
        covered = _fraction_inside(ref.grid, items[0].grid)
        if covered < MIN_WARP_COVERAGE:
            raise InputError(
                f"{transforms[0]}: the warp's grid ({items[0].grid}) covers only {100 * covered:.0f} % of the fixed "
                f"image {fixed} ({ref.grid}); a warp applies on the fixed grid it was computed for")
    out = resample(src, ref.grid, chain, interp=interp, padding=pad)
    if interp in ("nearest", "label"):
        out = out.with_data(out.data.to(src.data.dtype))
    out.meta = dict(ref.meta)
    write_image(out, output, dtype=None if interp in ("nearest", "label") else np.float32,
                inputs=[moving, fixed, *transforms])
    click.echo(f"wrote {output}")


MIN_WARP_COVERAGE = 0.5  # a first warp covering less of the fixed image was made for another fixed image


def _fraction_inside(grid: Grid, domain: Grid) -> float:
    """Share of ``grid``'s voxel centres (every 4th along each axis) inside ``domain``'s extent."""
    import torch

    from ..metrics.points import inside_extent

    points = grid.points(torch.float64)[(slice(None, None, 4),) * grid.ndim]
    return float(inside_extent(points, domain).double().mean())


@click.command("apply-points", help="Map a point file through a chain of transforms (fixed -> moving "
                                    "with the forward transforms; use the inverse ones for moving -> fixed). "
                                    + ORDER_HELP)
@click.argument("transforms", nargs=-1, required=True, type=click.Path())
@click.option("--points", "-p", required=True, type=click.Path(), help="CSV/TXT of world points.")
@click.option("-o", "--output", required=True, type=click.Path(), help="Output point file.")
@click.option("--space", type=click.Choice(["ras", "lps"]), default=None,
              help="Coordinate convention of the input and output files (default: what the file declares).")
def apply_points_cmd(transforms: tuple[str, ...], points: str, output: str, space: str | None) -> None:
    import torch

    from ..io.atomic import check_not_input
    from ..io.points import read_points, write_points
    from ..io.transforms import read_transform_chain
    from ..transforms.chain import chain_transform

    check_not_input(output, [points, *transforms])
    chain = chain_transform(read_transform_chain(list(transforms)))
    pts = read_points(points, space=space)
    if pts.shape[1] != chain.ndim:
        raise click.UsageError(f"{points} holds {pts.shape[1]}-D points but the transforms are {chain.ndim}-D")
    with torch.no_grad():
        moved = chain(torch.as_tensor(pts, dtype=torch.float64).unsqueeze(0))[0].numpy()
    write_points(moved, output, space=space or "ras", inputs=[points, *transforms])
    click.echo(f"wrote {output} ({len(moved)} points)")
