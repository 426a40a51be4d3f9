"""``torchalign register FIXED MOVING -o OUTDIR``."""
from __future__ import annotations

from pathlib import Path

import click

from ..config import preset_names, resolve_config
from ..io import read_image
from ..outputs import write_registration
from ..register import register
from .options import nan_to_option


@click.command("register")
@click.argument("fixed", type=click.Path())
@click.argument("moving", type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(), help="Output folder.")
@click.option("--preset", default=None, help=f"Named pipeline: {', '.join(preset_names())}.")
@click.option("--metric", default=None, help="Similarity for every stage: mse, sad, ncc, lncc, mi, nmi, ngf, mind.")
@click.option("--fixed-mask", type=click.Path(), default=None, help="Mask on the fixed grid (non-zero = use).")
@click.option("--moving-mask", type=click.Path(), default=None, help="Mask on the moving grid.")
@click.option("--init", type=click.Choice(["none", "geometry", "com", "moments", "search"]), default=None,
              help="Initialisation (default: the preset's).")
@click.option("--config", "config_file", type=click.Path(), default=None, help="YAML config (validated).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--seed", type=int, default=None, help="Random seed (default: the config's, 0).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
@nan_to_option
def register_cmd(fixed: str, moving: str, outdir: str, preset: str | None, metric: str | None,
                 fixed_mask: str | None, moving_mask: str | None, init: str | None, config_file: str | None,
                 device: str, seed: int | None, progress: bool, nan_to: float | None) -> None:
    """Register MOVING to FIXED; write warped.nii.gz, transform.txt (ITK) and result.json to OUTDIR."""
    if preset is None and config_file is None:
        preset = "affine"
    config = resolve_config(preset, config_file, {"init": init, "seed": seed, "metric": metric})
    f = read_image(fixed, nan_to=nan_to)
    m = read_image(moving, nan_to=nan_to)
    fm = read_image(fixed_mask) if fixed_mask else None
    mm = read_image(moving_mask) if moving_mask else None
    result = register(f, m, config, fixed_mask=fm, moving_mask=mm, device=device, progress=progress)
    inputs = [p for p in (fixed, moving, fixed_mask, moving_mask, config_file) if p]
    paths = write_registration(Path(outdir), f, m, result, config, inputs)
    click.echo(f"registered in {result.seconds:.1f} s; wrote " + ", ".join(str(p) for p in paths.values()))
