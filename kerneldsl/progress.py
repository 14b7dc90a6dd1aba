"""Progress of long runs that reads well on a terminal and in a log file.

On a terminal or in a Jupyter notebook, `Progress` is a tqdm bar (with time left; a widget
in a notebook); where its stream is not a terminal (output redirected to a log file, a CI
job, a SLURM job's output) it prints one plain line per finished step instead, with the
units done, the time spent and an estimate of the time left, so a log shows how far a run
got. ``kerneldsl cv``, ``kerneldsl bench`` and ``Study.optimize`` use it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TextIO

__all__ = ["Progress"]


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (its streams are no terminal, yet a bar shows as a widget)."""
    return "ipykernel" in sys.modules


def _bar_shape(stream: TextIO) -> dict[str, int]:
    """Nothing (tqdm measures the terminal) unless the terminal reports no size, as some pseudo-terminals do:
    then ``$COLUMNS`` x ``$LINES`` or 80 x 24 (tqdm would draw the bar as an empty line)."""
    try:
        size = os.get_terminal_size(stream.fileno())
        if size.columns > 0 and size.lines > 0:
            return {}
    except (AttributeError, OSError, ValueError):
        pass
    fallback = shutil.get_terminal_size()
    return {"ncols": fallback.columns, "nrows": fallback.lines}


def _seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class Progress:
    """``total`` units of work in named steps: a tqdm bar on a terminal, one line per finished step elsewhere.

    Args:
        total: units of work (folds, timed steps, ...).
        desc: what runs, the prefix of the bar and of every line (``cv``, ``bench``).
        unit: the name of a unit (``fold``, ``step``).
        file: the stream (default: ``sys.stderr``).
        enabled: False shows nothing.
        interactive: force the bar (True) or the lines (False); default: whether ``file`` is a terminal (or
            this runs in a Jupyter notebook).
        initial: units already done (a resumed run).
    """

    def __init__(self, total: int, desc: str, unit: str, file: TextIO | None = None, enabled: bool = True,
                 interactive: bool | None = None, initial: int = 0) -> None:
        self.file = sys.stderr if file is None else file
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        if interactive is None:
            interactive = _is_terminal(self.file) or (file is None and _in_notebook())
        self.interactive = interactive
        self.done = self.initial = initial
        self.start = time.monotonic()
        self.bar = None
        if enabled and self.interactive:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.file, initial=initial,
                            **_bar_shape(self.file))

    def describe(self, desc: str) -> None:
        """A new description of the bar (what phase the run is in; lines keep their first ``desc``)."""
        if self.bar is not None:
            self.bar.set_description(desc)

    def update(self, units: int = 1) -> None:
        """``units`` more units are done."""
        self.done += units
        if self.bar is not None:
            self.bar.update(units)

    def running(self, text: str) -> None:
        """What runs now (the bar's postfix; nothing in a log)."""
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def finished(self, step: str, units: int = 0) -> None:
        """A step finished (after ``units`` more units): in a log, one line saying so and how far the run is."""
        if units:
            self.update(units)
        if not self.enabled or self.bar is not None:
            return
        elapsed = time.monotonic() - self.start
        left = ""
        if self.initial < self.done < self.total:
            left = f", about {_seconds(elapsed / (self.done - self.initial) * (self.total - self.done))} left"
        print(f"{self.desc}: {step} done; {self.done}/{self.total} {self.unit}s, {_seconds(elapsed)}{left}",
              file=self.file, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
