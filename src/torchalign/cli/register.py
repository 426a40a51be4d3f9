"""``torchalign register FIXED MOVING -o OUTDIR``."""
from __future__ import annotations

import click

from ..config import preset_names
from .options import device_option, nan_to_option, overwrite_option, points_space_option, quiet_option


@click.command("register")
@click.argument("fixed", type=click.Path())
@click.argument("moving", type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(), help="Output folder.")
@click.option("--preset", default=None, help=f"Named pipeline: {', '.join(preset_names())} (default affine).")
@click.option("--metric", default=None, help="Similarity for every stage: mse, sad, ncc, lncc, mi, nmi, ngf, mind.")
@click.option("--fixed-mask", type=click.Path(), default=None, help="Mask on the fixed grid (non-zero = use).")
@click.option("--moving-mask", type=click.Path(), default=None, help="Mask on the moving grid.")
@click.option("--init", type=click.Choice(["none", "geometry", "com", "moments", "search"]), default=None,
              help="Initialisation (default: the preset's).")
@click.option("--config", "config_file", type=click.Path(), default=None, help="YAML config (validated).")
@device_option()
@click.option("--seed", type=int, default=None, help="Random seed (default: the config's, 0).")
@click.option("--fixed-labels", type=click.Path(), default=None, help="Label map on the fixed grid (evaluation).")
@click.option("--moving-labels", type=click.Path(), default=None,
              help="Label map of the moving image: warped (label-wise) and evaluated.")
@click.option("--labels", "labels_text", default=None, metavar="IDS", help="Label ids to evaluate, e.g. 2,3,4.")
@click.option("--labels-file", type=click.Path(), default=None, help="File of label ids to evaluate.")
@click.option("--fixed-points", type=click.Path(), default=None, help="Landmarks in the fixed image (TRE).")
@click.option("--moving-points", type=click.Path(), default=None, help="Corresponding moving landmarks.")
@points_space_option
@click.option("--evaluate", "do_evaluate", is_flag=True, help="Write metrics.json (implied by labels or points).")
@click.option("--write-inverse", is_flag=True, help="Deformable presets: also write inverse_warp.nii.gz.")
@click.option("--write-jacobian", is_flag=True, help="Deformable presets: also write jacobian.nii.gz (det J).")
@click.option("--report", "do_report", is_flag=True, help="Write the HTML QC report OUTDIR/report.html.")
@overwrite_option
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress: a bar on a terminal, a line per level in a log file.")
@quiet_option
@nan_to_option
def register_cmd(fixed: str, moving: str, outdir: str, preset: str | None, metric: str | None,
                 fixed_mask: str | None, moving_mask: str | None, init: str | None, config_file: str | None,
                 device: str, seed: int | None, fixed_labels: str | None, moving_labels: str | None,
                 labels_text: str | None, labels_file: str | None, fixed_points: str | None,
                 moving_points: str | None, points_space: str | None, do_evaluate: bool, write_inverse: bool,
                 write_jacobian: bool, do_report: bool, overwrite: bool, progress: bool, quiet: bool,
                 nan_to: float | None) -> None:
    """Register MOVING to FIXED; write warped.nii.gz, transform.txt (ITK), result.json (and, for
    deformable presets, warp.nii.gz) to OUTDIR; see the README for the optional outputs.

    Every input is read and checked before the registration starts, and the outputs are written
    into a staging folder that replaces OUTDIR whole, so a failed run leaves no partial folder.
    """
    from ..config import resolve_config
    from ..io import read_image
    from ..io.folders import check_output_folder, staged_folder
    from ..io.points import read_points
    from ..metrics.evaluate import check_inputs, parse_labels, read_labels_file
    from ..outputs import WRITTEN, write_outputs
    from ..registration import register

    if preset is None and config_file is None:
        preset = "affine"
    if (fixed_labels is None) != (moving_labels is None):
        raise click.UsageError("give both --fixed-labels and --moving-labels, or neither")
    if (fixed_points is None) != (moving_points is None):
        raise click.UsageError("give both --fixed-points and --moving-points, or neither")
    if labels_text and labels_file:
        raise click.UsageError("give --labels or --labels-file, not both")
    inputs = [p for p in (fixed, moving, fixed_mask, moving_mask, config_file, fixed_labels, moving_labels,
                          fixed_points, moving_points, labels_file) if p]
    check_output_folder(outdir, overwrite, inputs, replaceable=WRITTEN)
    config = resolve_config(preset, config_file, {"init": init, "seed": seed, "metric": metric})
    # Read and validate every input before any work, so bad input leaves no partial output.
    f = read_image(fixed, nan_to=nan_to)
    m = read_image(moving, nan_to=nan_to)
    fm = read_image(fixed_mask) if fixed_mask else None
    mm = read_image(moving_mask) if moving_mask else None
    fl = read_image(fixed_labels) if fixed_labels else None
    ml = read_image(moving_labels) if moving_labels else None
    labels = parse_labels(labels_text) if labels_text else read_labels_file(labels_file) if labels_file else None
    fp = read_points(fixed_points, space=points_space, grid=f.grid) if fixed_points else None
    mp = read_points(moving_points, space=points_space, grid=m.grid) if moving_points else None
    check_inputs(f, fixed_labels=fl, moving_labels=ml, fixed_points=fp, moving_points=mp,
                 names={"fixed_labels": str(fixed_labels), "moving_labels": str(moving_labels),
                        "fixed_points": str(fixed_points), "moving_points": str(moving_points)})
    result = register(f, m, config, fixed_mask=fm, moving_mask=mm, device=device, progress=progress and not quiet)
    optional = [name for name, wanted in (("inverse_warp", write_inverse), ("jacobian", write_jacobian)) if wanted]
    with staged_folder(outdir) as staging:
        paths = write_outputs(staging, f, m, result, config, inputs, fixed_labels_path=fixed_labels,
                              optional=optional, evaluate=do_evaluate, fixed_labels=fl, moving_labels=ml,
                              labels=labels, fixed_points=fp, moving_points=mp)
        if do_report:
            from ..report import build_report

            paths["report"] = build_report(staging, shown_as=outdir)
    if not quiet:
        click.echo(f"registered in {result.seconds:.1f} s; wrote " + ", ".join(p.name for p in paths.values())
                   + f" to {outdir}")
