"""Progress: counts per stage, the log line (tqdm's rate and ETA), and the reporter that writes it
without a terminal (pipeline/progress.py)."""

from __future__ import annotations

import logging
import time

from pipeline.progress import STAGES, Counts, Reporter, line


def test_progress_counts_and_log_line():
    c = Counts()
    c.add("decoded", 3, 7200.0)
    c.add("committed", 1, 3600.0)
    snap = c.snapshot()
    assert list(snap) == list(STAGES) and snap["decoded"] == (3, 7200.0)
    text = line(snap, total_files=4, elapsed=120.0)
    assert "decoded 3/4 (2.00 h)" in text and "committed 1/4 (1.00 h)" in text
    assert "1/4" in text and "file/s" in text or "s/file" in text  # tqdm's rate, with an ETA


def test_progress_reporter_logs_without_a_terminal(caplog):
    c = Counts()
    rep = Reporter(c.snapshot, total_files=2, interval_s=0.05, live=False, poll_s=0.01)
    with caplog.at_level(logging.INFO, logger="scriptorium.progress"):
        rep.start()
        c.add("decoded", 1, 10.0)
        time.sleep(0.4)
        c.add("committed", 2, 20.0)
        rep.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) >= 2 and all(x.startswith("progress: ") for x in lines)
    assert "committed 2/2" in lines[-1]  # the final state is always shown
