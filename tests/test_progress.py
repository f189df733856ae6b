"""Progress in a log file: one readable line per update, with the count, rate and time left."""

from __future__ import annotations

import io
import time

from qabench.progress import bar


def test_a_log_file_gets_one_line_per_update():
    log = io.StringIO()
    with bar(total=5, desc="train", unit="step", stream=log, interval_s=0.0) as progress:
        for _ in range(5):
            time.sleep(0.01)
            progress.update(1)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) >= 5 and all(line.startswith("train:") for line in lines)
    assert "5/5" in lines[-1] and ("step/s" in lines[-1] or "s/step" in lines[-1])
    assert all(len(line) <= 100 for line in lines)


def test_updates_in_a_log_are_spaced_by_the_interval():
    log = io.StringIO()
    with bar(total=1000, desc="predict", unit="batch", stream=log, interval_s=60.0) as progress:
        for _ in range(1000):
            progress.update(1)
    # the first draw and the final one only: no line per batch
    assert len(log.getvalue().splitlines()) <= 3
