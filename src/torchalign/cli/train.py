"""``torchalign train CONFIG.yaml``: train a registration network (also under ``torchrun``)."""
from __future__ import annotations

import os
from pathlib import Path

import click

from ..nn.config import load_train_config


@click.command("train")
@click.argument("config", type=click.Path())
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Output folder (default: the config's `output`, relative to the config file).")
@click.option("--resume", is_flag=True, help="Continue from OUTPUT/checkpoint.pt (model, optimizer, epoch).")
@click.option("--device", default=None, help="cpu, cuda ... (default: the config's).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def train_cmd(config: str, output: str | None, resume: bool, device: str | None, progress: bool) -> None:
    """Train the network described by CONFIG (YAML: model, data, loss, optimiser settings).

    Writes OUTPUT/checkpoint.pt after every epoch, OUTPUT/log.csv and, when tensorboard is
    installed, OUTPUT/tensorboard. With validation pairs (data.validation > 0) it also writes
    OUTPUT/validation.csv (loss terms, label Dice, % folding per epoch) and OUTPUT/best.pt, the
    epoch with the best `monitor` score, and can stop early (`early_stop`). Run it under
    `torchrun --nproc_per_node N` for data-parallel training (gloo on the CPU, nccl on CUDA).
    """
    from ..nn.train import train

    cfg = load_train_config(config)
    update = {k: v for k, v in (("output", Path(output) if output else None), ("device", device)) if v is not None}
    cfg = cfg.model_copy(update=update)
    if cfg.data is None:
        raise click.UsageError(f"{config}: the config needs a `data` section (folder or csv)")
    summary = train(cfg, resume=resume, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:
        best = f", best validation score {summary.best_score:.6g} in {summary.best}" if summary.best else ""
        stop = " (stopped early)" if summary.stopped_early else ""
        click.echo(f"trained {summary.steps} steps ({summary.epochs} epochs{stop}) in {summary.seconds:.1f} s; "
                   f"last loss {summary.loss:.6g}; wrote {summary.checkpoint}{best}")
