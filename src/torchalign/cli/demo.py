"""``torchalign demo -o OUTDIR``: register the bundled sample pair (the README's main job)."""
from __future__ import annotations

from pathlib import Path

import click

from .options import device_option, overwrite_option, quiet_option

DATA = Path(__file__).resolve().parents[1] / "data"


@click.command("demo")
@click.option("-o", "--output", "outdir", default="demo_out", show_default=True, type=click.Path(),
              help="Output folder.")
@click.option("--preset", default="affine", show_default=True, help="Preset to run on the sample pair.")
@device_option()
@overwrite_option
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress.")
@quiet_option
@click.pass_context
def demo(ctx: click.Context, outdir: str, preset: str, device: str, overwrite: bool, progress: bool,
         quiet: bool) -> None:
    """Register the bundled Colin27 -> MNI152 sample (2 mm); write outputs and report.html to OUTDIR."""
    from .register import register_cmd

    fixed, moving = DATA / "sample_fixed.nii.gz", DATA / "sample_moving.nii.gz"
    if not quiet:
        click.echo(f"fixed:  {fixed}\nmoving: {moving}")
    ctx.invoke(register_cmd, fixed=str(fixed), moving=str(moving), outdir=outdir, preset=preset, device=device,
               do_report=True, overwrite=overwrite, progress=progress, quiet=quiet)
