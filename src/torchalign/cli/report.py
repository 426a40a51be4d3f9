"""``torchalign report OUTDIR``: (re)build the HTML QC report of a registration output folder."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("outdir", type=click.Path())
def report_cmd(outdir: str) -> None:
    """Write OUTDIR/report.html from result.json, warped.nii.gz and the optional warp, Jacobian,
    metrics and label files (self-contained: figures embedded, no network access)."""
    from ..report import build_report

    click.echo(f"wrote {build_report(Path(outdir))}")
