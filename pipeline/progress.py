"""What a person watching a run sees: per-stage progress in files and audio hours, with rate and ETA.

Ray Data's own progress bars count blocks and rows of its operators, which mean nothing to a user
(a row here is a pooling window), so they stay off. Instead every stage reports the recordings it
finished to a small counter actor (pipeline/execution/run_state.py), and the driver renders the counts with tqdm:
live bars on a terminal; without one (a nightly job's log) one line a minute, made by tqdm's own
`format_meter` so rate and ETA read the same in both places.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable

from tqdm import tqdm

log = logging.getLogger("scriptorium.progress")

#: The stages in flow order, as the user reads them.
STAGES = ("decoded", "segmented", "transcribed", "committed")


class Counts:
    """Files and audio seconds per stage. Lives in a Ray actor; plain Python, so it is testable."""

    def __init__(self) -> None:
        self.files = dict.fromkeys(STAGES, 0)
        self.seconds = dict.fromkeys(STAGES, 0.0)

    def add(self, stage: str, files: int, seconds: float) -> None:
        self.files[stage] += files
        self.seconds[stage] += seconds

    def snapshot(self) -> dict[str, tuple[int, float]]:
        return {s: (self.files[s], self.seconds[s]) for s in STAGES}


def line(snapshot: dict[str, tuple[int, float]], total_files: int, elapsed: float) -> str:
    """One log line: every stage's files and audio hours, and rate + ETA of the committed files."""
    parts = [f"{s} {n}/{total_files} ({sec / 3600:.2f} h)" for s, (n, sec) in snapshot.items()]
    done = snapshot["committed"][0]
    meter = tqdm.format_meter(done, total_files, elapsed, unit="file")
    return "progress: " + ", ".join(parts) + " | " + meter


class Reporter:
    """Polls `fetch()` (a snapshot) on a thread and shows it until `stop()`."""

    def __init__(
        self,
        fetch: Callable[[], dict[str, tuple[int, float]] | None],
        total_files: int,
        interval_s: float = 60.0,
        live: bool | None = None,
        poll_s: float = 1.0,
    ):
        self.fetch, self.total, self.interval_s, self.poll_s = fetch, total_files, interval_s, poll_s
        self.live = sys.stderr.isatty() if live is None else live
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scriptorium-progress", daemon=True)
        self._bars: dict[str, tqdm] = {}
        self.started = time.monotonic()

    def start(self) -> "Reporter":
        if self.live:
            self._bars = {
                s: tqdm(total=self.total, desc=f"{s:>11}", unit="file", position=i, leave=True, dynamic_ncols=True)
                for i, s in enumerate(STAGES)
            }
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._show(final=True)
        for bar in self._bars.values():
            bar.close()

    def _loop(self) -> None:
        last_line = time.monotonic()
        while not self._stop.wait(self.poll_s if self.live else min(self.poll_s * 5, self.interval_s)):
            if self.live:
                self._show()
            elif time.monotonic() - last_line >= self.interval_s:
                self._show()
                last_line = time.monotonic()

    def _show(self, final: bool = False) -> None:
        try:
            snap = self.fetch()
        except Exception:  # noqa: BLE001 - progress must never break a run
            log.debug("progress snapshot failed", exc_info=True)
            return
        if snap is None:
            return
        if not self.live:
            log.info(line(snap, self.total, time.monotonic() - self.started))
            return
        for stage, bar in self._bars.items():
            files, seconds = snap[stage]
            bar.n = files
            bar.set_postfix_str(f"{seconds / 3600:.2f} h audio", refresh=False)
            bar.refresh()
