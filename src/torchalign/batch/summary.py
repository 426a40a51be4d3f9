"""One row per pair: ``OUTDIR/summary.csv`` and ``OUTDIR/index.html`` (links to the per-pair reports)."""
from __future__ import annotations

import csv
import datetime as _dt
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..io.atomic import atomic_path

DONE, SKIPPED, FAILED = "ok", "skipped", "failed"  # DONE: registered in this run
COLUMNS = ("id", "status", "seconds", "attempts", "error", "dice_mean", "tre_mean", "fixed", "moving")
SUMMARY_NAME, INDEX_NAME = "summary.csv", "index.html"


@dataclass
class PairResult:
    """The outcome of one pair.

    ``status`` is ``ok`` (registered in this run), ``skipped`` (finished by an earlier run with the
    same inputs and settings) or ``failed`` (``error`` says why). ``transient`` marks failures worth
    another attempt (anything but bad input); it is not written to the summary.
    """

    id: str
    status: str
    seconds: float
    fixed: str
    moving: str
    error: str = ""
    attempts: int = 1
    dice_mean: float | None = None
    tre_mean: float | None = None
    transient: bool = False


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_summary(results: Sequence[PairResult], outdir: Path) -> Path:
    """Write ``outdir/summary.csv`` (atomically) with the columns :data:`COLUMNS`, one row per result."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in results:
        writer.writerow([_cell(getattr(r, c)) for c in COLUMNS])
    path = Path(outdir) / SUMMARY_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())
    return path


def _row(r: PairResult, outdir: Path) -> list[str]:
    from ..report import REPORT_NAME
    from ..report import html as h

    report = Path(outdir) / r.id / REPORT_NAME
    name = f'<a href="{h.esc(r.id)}/{REPORT_NAME}">{h.esc(r.id)}</a>' if report.is_file() else h.esc(r.id)
    tone = {DONE: "good", SKIPPED: "good", FAILED: "bad"}[r.status]
    return [name, f'<span class="{tone}">{h.esc(r.status)}</span>', h.fmt(r.seconds, 3), h.fmt(r.dice_mean),
            h.fmt(r.tre_mean), f"<code>{h.esc(Path(r.moving).name)}</code> → <code>{h.esc(Path(r.fixed).name)}</code>",
            h.esc(r.error)]


def write_index(results: Sequence[PairResult], outdir: Path) -> Path:
    """Write ``outdir/index.html``: counts by status and a table of pairs linking their ``report.html``."""
    # The report package pulls in matplotlib; imported here, it stays out of the workers' start-up.
    from ..report import html as h

    outdir = Path(outdir)
    counts = Counter(r.status for r in results)
    cards = "".join(h.card(status, h.fmt(counts.get(status, 0)), tone=tone)
                    for status, tone in ((DONE, "good"), (SKIPPED, ""), (FAILED, "bad" if counts.get(FAILED) else "")))
    table = h.table(["id", "status", "seconds", "mean Dice", "TRE mean (mm)", "moving → fixed", "error"],
                    (_row(r, outdir) for r in results), numeric=[False, False, True, True, True, False, False])
    sections = [h.Section("overview", "Overview", f'<div class="cards">{cards}</div>'),
                h.Section("pairs", "Pairs", table)]
    footer = "Generated " + h.esc(_dt.datetime.now().isoformat(timespec="seconds"))
    text = h.page("torchalign batch", f"{len(results)} pairs · <code>{h.esc(outdir.resolve())}</code>", sections,
                  footer)
    path = outdir / INDEX_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
