"""What a person watching a run sees: per-stage progress in files and audio hours, with rate and ETA.

Ray Data's own progress bars count blocks and rows of its operators, which mean nothing to a user
(a row here is a pooling window), so they stay off. Instead every stage reports the recordings it
finished to a small counter actor (pipeline/execution/run_state.py), and the driver renders the counts with tqdm:
live bars on a terminal; without one (a nightly job's log) one line a minute, made by tqdm's own
`format_meter` so rate and ETA read the same in both places.
"""

from __future__ import annotations

import logging
import os
import re
import select
import sys
import threading
import time
from typing import Callable, TextIO

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


def audio(seconds: float) -> str:
    """Audio length as a person reads it: hours from 0.1 h, minutes below that, seconds below a minute
    (a small job is "42 s", not "0.01 h")."""
    if seconds >= 360:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def line(snapshot: dict[str, tuple[int, float]], total_files: int, elapsed: float) -> str:
    """One log line: every stage's files and audio, and rate + ETA of the committed files."""
    parts = [f"{s} {n}/{total_files} ({audio(sec)})" for s, (n, sec) in snapshot.items()]
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
        self.live = terminal_is_tty() if live is None else live
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scriptorium-progress", daemon=True)
        self._bars: dict[str, tqdm] = {}
        self.started = time.monotonic()

    def start(self) -> "Reporter":
        if self.live:
            # every bar shows its own rate and ETA; they go to the terminal itself, past NativeLogFilter
            self._bars = {
                s: tqdm(
                    total=self.total,
                    desc=f"{s:>11}",
                    unit="file",
                    position=i,
                    leave=True,
                    dynamic_ncols=True,
                    file=terminal(),
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, "
                    "{rate_fmt}{postfix}]",
                )
                for i, s in enumerate(STAGES)
            }
        else:  # a log: the first line at once (the job has started), then one every interval_s
            self._show()
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
            bar.set_postfix_str(f"{audio(seconds)} audio", refresh=False)
            if files > bar.n:  # update(), not n=: tqdm's rate and ETA follow the files it is told of
                bar.update(files - bar.n)
            else:
                bar.refresh()


# -- Ray's native log lines off the terminal --------------------------------------------------------

#: A line Ray's C++ core writes on the driver's stderr (spdlog), e.g. `[2026-12-06 15:56:49,156 E 30630
#: 30630] core_worker.cc:2465: Actor ... has constructor arguments in the object store and max_restarts > 0`,
#: or one a worker's log forwards, `(raylet) [...] ...`. Fatal ones (` F `) are not matched: they stay.
RAY_NATIVE_LINE = re.compile(
    rb"^(\([^)\n]*\) )?\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWE] \d+ \d+\] [\w./-]+\.(cc|h|cpp):\d+: "
)


class NativeLogFilter:
    """Keeps Ray's native (C++) log lines below FATAL off the terminal; everything else written to the
    process's stderr (file descriptor 2) passes through unchanged, in order.

    Why at the file descriptor: Ray's C++ core logs ERROR lines to the driver's stderr as well as to the
    session's log file (`<ray temp dir>/session_*/logs/python-core-driver-*.log`, where they stay), and
    no setting of Ray 2.60 moves only that copy (RAY_BACKEND_LOG_LEVEL would drop them from the log file
    too; RAY_LOG_TO_STDERR only adds). The one every run met: `core_worker.cc: ... has constructor
    arguments in the object store and max_restarts > 0`. Ray Data creates every actor of a pool with its
    UDF and DataContext `ray.put` into the object store and `max_restarts=-1` (restart an actor that
    dies, e.g. killed for memory); the driver owns those objects for the whole run, so the restart the
    line warns about cannot fail here, and `max_restarts=0` would give up that fault tolerance.

    Fd 2 becomes a pipe that a daemon thread reads: whole lines that match RAY_NATIVE_LINE are dropped,
    the rest is written to the real stderr; a partial line is passed on at once unless it could be the
    start of a native line (the progress bars' carriage returns pass at once). `close()` drains it."""

    active: "NativeLogFilter | None" = None

    def __init__(self) -> None:
        self.tty = os.isatty(2)
        self.real = os.dup(2)  # the terminal (or log file) itself
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._read = read
        self._thread = threading.Thread(target=self._pump, name="scriptorium-stderr", daemon=True)
        self._thread.start()
        self._terminal: TextIO | None = None

    @classmethod
    def install(cls) -> "NativeLogFilter":
        if cls.active is None:
            sys.stderr.flush()
            cls.active = cls()
        return cls.active

    def _pump(self) -> None:
        pending = b""
        while True:
            ready, _, _ = select.select([self._read], [], [], 0.2)
            chunk = os.read(self._read, 65536) if ready else b""
            if ready and not chunk:  # every writer closed: the end
                self._write(pending)
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            self._write(b"".join(x + b"\n" for x in lines if not RAY_NATIVE_LINE.match(x)))
            if pending and (not ready or not pending.lstrip(b"\r").startswith((b"[", b"("))):
                self._write(pending)  # a bar's redraw, or a line that has waited 0.2 s for its end
                pending = b""

    def _write(self, data: bytes) -> None:
        while data:
            try:
                data = data[os.write(self.real, data) :]
            except OSError:  # the terminal is gone: nothing left to show it on
                return

    def terminal(self) -> TextIO:
        """The real stderr as a text stream (for the progress bars: a terminal's width, no pipe between)."""
        if self._terminal is None:
            self._terminal = os.fdopen(os.dup(self.real), "w", buffering=1, encoding="utf-8", errors="replace")
        return self._terminal

    def close(self, timeout: float = 2.0) -> None:
        """Put the real stderr back on fd 2 and pass on what is still in the pipe (waits at most
        `timeout`: a child process may still hold the pipe's other end)."""
        for stream in (sys.stderr, self._terminal):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(self.real, 2)  # closes this process's write end of the pipe
        self._thread.join(timeout)
        if NativeLogFilter.active is self:
            NativeLogFilter.active = None


def terminal() -> TextIO:
    """Where the progress bars draw: the real stderr, past a NativeLogFilter if one is installed."""
    return NativeLogFilter.active.terminal() if NativeLogFilter.active else sys.stderr


def terminal_is_tty() -> bool:
    return NativeLogFilter.active.tty if NativeLogFilter.active else sys.stderr.isatty()
