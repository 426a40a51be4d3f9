"""``torchalign batch PAIRS.csv -o OUTDIR``: register many pairs (sequentially, in a pool, on Dask, or batched)."""
from __future__ import annotations

import sys
from pathlib import Path

from typing import TYPE_CHECKING

import click

from ..batch import MODES
from ..config import preset_names
from .options import device_option, nan_to_option, points_space_option, quiet_option

if TYPE_CHECKING:
    from ..batch import PairResult


def _echo_progress(result: PairResult, finished: int, total: int) -> None:
    detail = f" ({result.error})" if result.error else ""
    click.echo(f"[{finished}/{total}] {result.id}: {result.status} in {result.seconds:.1f} s{detail}")


@click.command("batch")
@click.argument("pairs_csv", required=False, type=click.Path(), metavar="[PAIRS.csv]")
@click.option("-o", "--output", "outdir", required=True, type=click.Path(),
              help="Output folder: OUTDIR/<id>/ per pair, OUTDIR/summary.csv, OUTDIR/index.html.")
@click.option("--fixed", "fixed_template", type=click.Path(), default=None,
              help="One fixed image (template) for every moving image matched by --moving.")
@click.option("--moving", "moving_glob", default=None, metavar="GLOB",
              help="Moving images as a quoted glob, e.g. 'scans/*.nii.gz' (ids: the file names).")
@click.option("--preset", default=None, help=f"Named pipeline: {', '.join(preset_names())} (default affine).")
@click.option("--config", "config_file", type=click.Path(), default=None, help="YAML config (validated).")
@click.option("--metric", default=None, help="Similarity for every stage.")
@click.option("--init", type=click.Choice(["none", "geometry", "com", "moments", "search"]), default=None,
              help="Initialisation (default: the preset's).")
@click.option("--seed", type=int, default=None, help="Random seed (default: the config's, 0).")
@click.option("--mode", type=click.Choice(MODES), default=None,
              help="sequential (this process), pool (worker processes), dask (LocalCluster or --scheduler), "
                   "gpu-batch (equal-size pairs optimised together on one device; deformable pairs share a fixed grid). "
                   "Default: dask with --scheduler, pool with --workers > 1, else sequential.")
@click.option("--workers", type=int, default=None,
              help="Processes for pool and for dask's LocalCluster; the cores are divided between them "
                   "(default: one per core).")
@click.option("--scheduler", default=None, metavar="ADDR",
              help="Dask scheduler address (tcp://HOST:PORT) or scheduler file; implies --mode dask.")
@click.option("--threads", type=int, default=None,
              help="torch threads per pair (default: cores // workers; unchanged on a --scheduler cluster).")
@click.option("--retry", type=int, default=0, show_default=True,
              help="Re-run a pair this many times after a transient failure (not after bad input).")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Pairs per batch in gpu-batch mode.")
@device_option(None, "Torch device: cpu, cuda, cuda:1 ... (default: cpu; gpu-batch: cuda when available, else cpu).")
@click.option("--labels", "labels_text", default=None, metavar="IDS", help="Label ids to evaluate, e.g. 2,3,4.")
@click.option("--labels-file", type=click.Path(), default=None, help="File of label ids to evaluate.")
@points_space_option
@click.option("--report", "do_report", is_flag=True, help="Write OUTDIR/<id>/report.html for every pair.")
@quiet_option
@nan_to_option
def batch_cmd(pairs_csv: str | None, outdir: str, fixed_template: str | None, moving_glob: str | None,
              preset: str | None, config_file: str | None, metric: str | None, init: str | None, seed: int | None,
              mode: str | None, workers: int | None, scheduler: str | None, threads: int | None, retry: int,
              batch_size: int, device: str | None, labels_text: str | None, labels_file: str | None,
              points_space: str | None, do_report: bool, quiet: bool, nan_to: float | None) -> None:
    """Register every pair of PAIRS.csv, or every --moving image to the --fixed template.

    PAIRS.csv has a header line naming fixed,moving and optionally id, fixed_labels, moving_labels,
    fixed_mask, moving_mask, fixed_points, moving_points; relative paths are relative to the CSV's
    folder. Each pair writes the outputs of `torchalign register` to OUTDIR/<id>/, then done.json,
    into a staging folder swapped in whole. A rerun in the same OUTDIR resumes: it skips the pairs
    already finished with the same inputs and settings. Each pair's status in OUTDIR/summary.csv is
    ok, skipped (finished earlier) or failed; the exit code is 1 when a pair failed."""
    from ..batch import Execution, JobSettings, glob_pairs, read_pairs, run_batch
    from ..batch.gpu import default_device
    from ..batch.local import cpu_cores
    from ..batch.summary import DONE, FAILED, SKIPPED
    from ..config import resolve_config
    from ..metrics.evaluate import parse_labels, read_labels_file

    if (pairs_csv is None) == (fixed_template is None and moving_glob is None):
        raise click.UsageError("give PAIRS.csv, or --fixed TEMPLATE with --moving GLOB (not both)")
    if (fixed_template is None) != (moving_glob is None):
        raise click.UsageError("give both --fixed and --moving, or neither")
    if threads is not None and threads < 1:
        raise click.UsageError(f"--threads must be at least 1, got {threads}")
    mode = mode or ("dask" if scheduler else "pool" if workers is not None and workers > 1 else "sequential")
    if preset is None and config_file is None:
        preset = "affine"
    config = resolve_config(preset, config_file, {"init": init, "seed": seed, "metric": metric})
    pairs = read_pairs(pairs_csv) if pairs_csv is not None else glob_pairs(fixed_template, moving_glob)
    labels = parse_labels(labels_text) if labels_text else read_labels_file(labels_file) if labels_file else None
    if device is None:
        device = default_device() if mode == "gpu-batch" else "cpu"
    settings = JobSettings(config, tuple(labels) if labels else None, points_space, nan_to, do_report, device, threads)
    how = Execution(mode, cpu_cores() if workers is None else workers, scheduler, retry, batch_size)
    results = run_batch(pairs, Path(outdir), settings, how, progress=None if quiet else _echo_progress)
    counts = {s: sum(r.status == s for r in results) for s in (DONE, SKIPPED, FAILED)}
    if not quiet:
        click.echo(f"{len(results)} pairs: {counts[DONE]} registered, {counts[SKIPPED]} already finished, "
                   f"{counts[FAILED]} failed; wrote {Path(outdir) / 'summary.csv'} and {Path(outdir) / 'index.html'}")
    if counts[FAILED]:
        sys.exit(1)
