"""``torchalign.progress``: a tqdm bar on a terminal, a few lines in a log file, nothing when disabled."""
from __future__ import annotations

import io

from torchalign.progress import LogProgress, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _loop(bar, stop_at: int | None = None) -> list[int]:
    seen = []
    for i in bar:
        seen.append(i)
        bar.set_postfix(loss=f"{1.0 / (i + 1):.5g}")
        if stop_at is not None and i == stop_at:
            break
    return seen


def test_a_log_file_gets_one_line_per_level_with_loss_and_time() -> None:
    """Catches one line per update in a log file (tqdm's behaviour when stderr is not a terminal)."""
    log = io.StringIO()
    assert _loop(progress(500, "rigid 1/2", True, stream=log)) == list(range(500))
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and "\r" not in log.getvalue()
    assert lines[0].startswith("rigid 1/2: 500/500 iterations, loss 0.002, ") and lines[0].endswith(" s")


def test_a_loop_stopped_early_logs_the_iterations_it_ran() -> None:
    """Catches the line being lost (or miscounted) when the engine stops a level on a plateau."""
    log = io.StringIO()
    assert _loop(progress(100, "svf", True, stream=log), stop_at=9) == list(range(10))
    assert log.getvalue().startswith("svf: 10/100 iterations, loss 0.1, ")


def test_long_levels_log_every_few_seconds() -> None:
    """A level longer than the interval writes intermediate lines (here: every update, interval 0)."""
    log = io.StringIO()
    _loop(LogProgress(5, "ffd", log, every=0.0))
    assert len(log.getvalue().splitlines()) == 5  # 4 intermediate + the final line


def test_disabled_prints_nothing_and_a_terminal_gets_a_bar() -> None:
    """Catches --no-progress/--quiet output, and the bar lost on terminals."""
    silent = io.StringIO()
    assert _loop(progress(7, "x", False, stream=silent)) == list(range(7)) and silent.getvalue() == ""
    terminal = _Terminal()
    _loop(progress(3, "bar", True, stream=terminal))
    assert "bar" in terminal.getvalue() and "\r" in terminal.getvalue()
