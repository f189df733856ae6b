"""Progress that reads well where the user looks: a live bar on a terminal, and in a rule's log file
one plain line per update (tqdm's carriage returns would join an hour of updates into one line)."""

from __future__ import annotations

import sys
from typing import IO, Iterable

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


class _LinePerUpdate:
    """A stream for tqdm that turns each redraw into one line."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str, initial: int = 0,
        disable: bool = False, stream: IO[str] | None = None, interval_s: float | None = None) -> tqdm:
    """A tqdm bar: redrawn in place on a terminal; elsewhere one line every ``interval_s`` seconds
    (default 30), with the rate and the time left."""
    stream = stream or sys.stderr
    terminal = stream.isatty()
    interval = interval_s if interval_s is not None else (1.0 if terminal else LOG_INTERVAL_S)
    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, disable=disable,
                file=stream if terminal else _LinePerUpdate(stream), ascii=not terminal,
                dynamic_ncols=terminal, ncols=None if terminal else 100,
                mininterval=interval, maxinterval=max(interval, 10.0))
