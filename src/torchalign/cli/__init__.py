"""``torchalign`` command line: subcommands map options to library calls; no maths here.

Bad input (``TorchalignError``) becomes one line on stderr and exit code 2, never a traceback.
Set ``TORCHALIGN_DEBUG=1`` to see tracebacks of unexpected errors.
"""
from __future__ import annotations

import os
import sys

import click

from ..errors import TorchalignError
from .apply import apply_cmd, apply_points_cmd
from .batch import batch_cmd
from .demo import demo
from .evaluate import evaluate_cmd
from .info import info
from .predict import predict_cmd
from .register import register_cmd
from .report import report_cmd
from .resample import resample_cmd
from .train import train_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="torchalign")
def cli() -> None:
    """Image registration on PyTorch, in world coordinates."""


for _command in (info, resample_cmd, register_cmd, apply_cmd, apply_points_cmd, evaluate_cmd, report_cmd,
                 batch_cmd, train_cmd, predict_cmd, demo):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning bad input into a one-line error and exit code 2."""
    try:
        cli.main(args=argv, prog_name="torchalign", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("torchalign: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except TorchalignError as exc:
        click.echo(f"torchalign: error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - the last line of defence for a CLI
        if os.environ.get("TORCHALIGN_DEBUG"):
            raise
        click.echo(f"torchalign: internal error: {type(exc).__name__}: {exc} (set TORCHALIGN_DEBUG=1 for a traceback)",
                   err=True)
        sys.exit(1)
