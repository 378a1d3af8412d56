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


def test_small_jobs_show_seconds_and_minutes_not_zero_hours():
    from pipeline.progress import audio

    assert (audio(42.4), audio(90.0), audio(7200.0)) == ("42 s", "1.5 min", "2.00 h")
    assert "decoded 1/4 (21 s)" in line({**dict.fromkeys(STAGES, (0, 0.0)), "decoded": (1, 21.0)}, 4, 5.0)


def test_a_log_gets_its_first_progress_line_at_once(caplog):
    """Without a terminal the first line comes when the job starts, not one interval (60 s) in."""
    c = Counts()
    rep = Reporter(c.snapshot, total_files=3, interval_s=60.0, live=False)
    with caplog.at_level(logging.INFO, logger="scriptorium.progress"):
        rep.start()
        first = [r.getMessage() for r in caplog.records]
        c.add("committed", 3, 30.0)
        rep.stop()
    assert len(first) == 1 and "committed 0/3" in first[0]
    assert "committed 3/3" in caplog.records[-1].getMessage()


def test_every_live_bar_has_a_rate_and_an_eta(capsys):
    c = Counts()
    rep = Reporter(c.snapshot, total_files=4, live=True, poll_s=0.01).start()
    for _ in range(3):
        for s in STAGES:
            c.add(s, 1, 5.0)
        time.sleep(0.05)
    rep.stop()
    err = capsys.readouterr().err
    for s in STAGES:
        last = [x for x in err.replace("\r", "\n").splitlines() if x.strip().startswith(s)][-1]
        assert "3/4" in last and "<" in last and "<?" not in last and "15 s audio" in last, last


def test_rays_native_log_lines_stay_off_the_terminal():
    """Run in a process of its own: the filter takes over file descriptor 2."""
    import subprocess
    import sys

    code = r"""
import os, sys
from pipeline.progress import NativeLogFilter
f = NativeLogFilter.install()
os.write(2, b"[2026-12-06 15:56:49,156 E 30630 30630] core_worker.cc:2465: Actor with class name: 'X' has constructor arguments in the object store and max_restarts > 0.\n")
os.write(2, b"(raylet) [2026-12-06 15:56:50,001 W 1 2] worker_pool.cc:12: a worker warning\n")
print("a python line", file=sys.stderr)
os.write(2, b"[2026-12-06 15:56:51,000 F 1 1] raylet.cc:1: a fatal line stays\n")
os.write(2, b"[not ray] a line of our own\n")
os.write(2, b"\rbar 50%")
f.close()
print("after", file=sys.stderr)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    err = res.stderr.decode()  # bytes: text mode would turn the bar's carriage return into a newline
    assert res.returncode == 0, err
    assert "core_worker.cc" not in err and "worker_pool.cc" not in err
    assert err == (
        "a python line\n[2026-12-06 15:56:51,000 F 1 1] raylet.cc:1: a fatal line stays\n"
        "[not ray] a line of our own\n\rbar 50%after\n"
    )
