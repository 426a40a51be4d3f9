"""``torchalign`` command line: subcommands map options to library calls; no maths here.

Subcommands are loaded lazily: ``torchalign --help`` lists them from :data:`COMMANDS` (name,
module, one-line summary) without importing any, and a subcommand's module (and with it torch) is
imported only when that command runs or its own help is asked for.

Bad input (``TorchalignError``) becomes one line on stderr and exit code 2, never a traceback.
Set ``TORCHALIGN_DEBUG=1`` to see tracebacks of unexpected errors.
"""
from __future__ import annotations

import importlib
import os
import sys

import click

from ..errors import TorchalignError

# name -> (module under torchalign.cli, attribute, one-line summary shown by `torchalign --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "info": ("info", "info",
             "Print shape, spacing, origin, orientation, dtype and intensity range of IMAGE."),
    "resample": ("resample", "resample_cmd",
                 "Resample IMAGE onto the grid of REF through world coordinates (no transform)."),
    "register": ("register", "register_cmd",
                 "Register MOVING to FIXED; write warped.nii.gz, transform.txt (ITK), result.json"),
    "apply": ("apply", "apply_cmd", "Resample MOVING onto the FIXED grid through a chain of transforms."),
    "apply-points": ("apply", "apply_points_cmd",
                     "Map a point file through a chain of transforms (fixed -> moving with the forward transforms"),
    "evaluate": ("evaluate", "evaluate_cmd",
                 "Evaluate a registration: Dice/Jaccard/HD/HD95/ASSD per label, TRE, Jacobian statistics."),
    "report": ("report", "report_cmd",
               "Write OUTDIR/report.html from result.json, warped.nii.gz and the optional warp, Jacobian"),
    "batch": ("batch", "batch_cmd",
              "Register every pair of PAIRS.csv, or every --moving image to the --fixed template."),
    "train": ("train", "train_cmd",
              "Train the network described by CONFIG (YAML: model, data, loss, optimiser settings)."),
    "predict": ("predict", "predict_cmd",
                "Register MOVING to FIXED with a trained network; write warped.nii.gz, result.json"),
    "demo": ("demo", "demo",
             "Register the bundled Colin27 -> MNI152 sample (2 mm); write outputs and report.html to OUTDIR."),
}


def load_command(name: str) -> click.Command:
    """Import the module of subcommand ``name`` and return its click command."""
    module, attribute, _ = COMMANDS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use; its help lists them from :data:`COMMANDS`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name) if cmd_name in COMMANDS else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, _, summary) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="torchalign")
def cli() -> None:
    """Image registration on PyTorch, in world coordinates."""


def one_line(exc: click.ClickException) -> str:
    """A click error as one line, naming the command and where its help is (click's own is four lines)."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        return f"{ctx.command_path}: {message} (see '{ctx.command_path} --help')"
    return message


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning bad input into a one-line error and exit code 2."""
    try:
        cli.main(args=argv, prog_name="torchalign", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("torchalign: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"torchalign: error: {one_line(exc)}", err=True)
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
