"""``torchalign evaluate``: overlap, surface distances, TRE and Jacobian statistics -> metrics.json."""
from __future__ import annotations

from typing import Any

import click

from .options import points_space_option


@click.command("evaluate")
@click.option("--fixed-labels", type=click.Path(), help="Label map on the fixed grid (the reference).")
@click.option("--warped-labels", type=click.Path(), help="Moving label map warped onto the fixed grid.")
@click.option("--labels", "labels_text", metavar="IDS",
              help="Label ids to evaluate, e.g. 2,3,4 (default: every non-zero label).")
@click.option("--labels-file", type=click.Path(), help="Text file of label ids (commas/whitespace, # comments).")
@click.option("--warp", type=click.Path(), help="Displacement field fixed -> moving (ANTs warp): maps the fixed "
              "points for TRE and gives Jacobian statistics.")
@click.option("--fixed-points", type=click.Path(), help="Landmarks in the fixed image (.csv, .txt, .pts).")
@click.option("--moving-points", type=click.Path(), help="Corresponding landmarks in the moving image.")
@points_space_option
@click.option("--fixed-image", type=click.Path(), help="Image whose grid voxel-index fixed points refer to "
              "(default: the warp's or the fixed label map's grid).")
@click.option("--moving-image", type=click.Path(), help="Image whose grid voxel-index moving points refer to.")
@click.option("--resample", "resample_labels", is_flag=True,
              help="Resample the warped labels onto the fixed grid (nearest) when the grids differ.")
@click.option("-o", "--output", required=True, type=click.Path(), help="Output metrics.json.")
@click.option("--csv", "csv_path", type=click.Path(), help="Also write the per-label table as CSV.")
def evaluate_cmd(fixed_labels: str | None, warped_labels: str | None, labels_text: str | None,
                 labels_file: str | None, warp: str | None, fixed_points: str | None, moving_points: str | None,
                 points_space: str | None, fixed_image: str | None, moving_image: str | None,
                 resample_labels: bool, output: str, csv_path: str | None) -> None:
    """Evaluate a registration: Dice/Jaccard/HD/HD95/ASSD per label, TRE, Jacobian statistics.

    Distances are in mm with the grid's spacing; labels missing on one side are reported with a
    status instead of a number.
    """
    import torch

    from ..errors import InputError
    from ..io import read_image
    from ..io.atomic import check_not_input
    from ..io.points import read_points
    from ..io.transforms import read_displacement
    from ..metrics.evaluate import evaluate, parse_labels, read_labels_file, write_metrics

    if not any((fixed_labels, warped_labels, warp, fixed_points, moving_points)):
        raise click.UsageError("nothing to evaluate: give label maps, points and/or --warp")
    if labels_text and labels_file:
        raise click.UsageError("give --labels or --labels-file, not both")
    if (labels_text or labels_file) and not fixed_labels:
        raise click.UsageError("--labels/--labels-file need --fixed-labels and --warped-labels")
    if csv_path and not fixed_labels:
        raise click.UsageError("--csv writes the per-label table: it needs --fixed-labels and --warped-labels")
    inputs = [p for p in (fixed_labels, warped_labels, warp, fixed_points, moving_points, labels_file,
                          fixed_image, moving_image) if p]
    for path in (output, csv_path):
        if path:
            check_not_input(path, inputs)
    labels = parse_labels(labels_text) if labels_text else read_labels_file(labels_file) if labels_file else None
    fl = read_image(fixed_labels) if fixed_labels else None
    wl = read_image(warped_labels) if warped_labels else None
    field = read_displacement(warp) if warp else None
    fixed_pts = moving_pts = None
    if fixed_points or moving_points:
        if not (fixed_points and moving_points):
            raise click.UsageError("give both --fixed-points and --moving-points")
        if fixed_image:
            fixed_grid = read_image(fixed_image).grid
        else:
            fixed_grid = field.grid if field else fl.grid if fl is not None else None
        moving_grid = read_image(moving_image).grid if moving_image else None
        fixed_pts = torch.from_numpy(read_points(fixed_points, points_space, fixed_grid))
        moving_pts = torch.from_numpy(read_points(moving_points, points_space, moving_grid))
        if fixed_pts.shape != moving_pts.shape:
            raise InputError(f"{fixed_points} holds {fixed_pts.shape[0]} {fixed_pts.shape[1]}-D points but "
                             f"{moving_points} holds {moving_pts.shape[0]} {moving_pts.shape[1]}-D points; "
                             "landmarks must correspond one to one")
    doc: dict[str, Any] = {"inputs": {k: v for k, v in (
        ("fixed_labels", fixed_labels), ("warped_labels", warped_labels), ("warp", warp),
        ("fixed_points", fixed_points), ("moving_points", moving_points)) if v}}
    doc.update(evaluate(fl, wl, labels, field, fixed_pts, moving_pts, resample_labels, points_name=str(fixed_points)))
    write_metrics(doc, output, csv_path, inputs=inputs)
    click.echo(f"wrote {output}" + (f" and {csv_path}" if csv_path else "") + _one_line(doc))


def _one_line(doc: dict[str, Any]) -> str:
    parts = []
    if "mean" in doc:
        mean = doc["mean"]
        dice = "n/a" if mean["dice"] is None else f"{mean['dice']:.4f}"
        parts.append(f"mean Dice {dice} over {mean['n']} labels" + (f" ({mean['n_missing']} missing)"
                                                                   if mean["n_missing"] else ""))
    if "points" in doc:
        parts.append(f"mean TRE {doc['points']['tre_mean']:.3f} mm (n={doc['points']['n']})")
    if "jacobian" in doc:
        parts.append(f"folds {doc['jacobian']['fold_percent']:.4g} %")
    return ": " + ", ".join(parts) if parts else ""
