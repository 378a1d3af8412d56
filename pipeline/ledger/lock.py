"""One job per output: `RunLock`, a compare-and-swap row in the Delta table `_scriptorium/lock`, kept
alive by a heartbeat thread and taken over when its holder is gone or silent.

Why it holds when two jobs start together on an output that does not exist yet: the table's first
version is created with a write only one creator can win (the log's `00000000000000000000.json`,
put if absent: a no-replace rename on a local disk, a conditional PUT on S3), and every change of
the row after that is committed as exactly the next version of the log it read (no rebase onto a
newer version: `max_commit_retries=0`). Two jobs that read the same version both try to write the
same next one; the store lets one, the other re-reads and sees the winner."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from pipeline.ledger.tables import LOCK_TABLE, OutputLockedError, retry_commit

if TYPE_CHECKING:
    from pipeline.ledger.commit import Ledger

# one logger for the whole output, as before the split (`pipeline.ledger`: what users filter on)
log = logging.getLogger("pipeline.ledger")

LOCK_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("holder", pa.string()),  # host:pid:process start time
        ("heartbeat", pa.float64()),  # unix seconds
        ("released", pa.bool_()),
    ]
)


#: Space a local output's lock holds in reserve (a file beside the lock table, written when the lock
#: is taken and removed just before it is released): on a disk that filled up during the run, the
#: release's log entry (and a checkpoint the log may be due) still finds room.
RESERVE_NAME, RESERVE_BYTES = "lock-reserve", 256 * 1024


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    """Process start time (clock ticks since boot): tells a live pid from a reused one."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def _holder_alive(holder: str) -> bool | None:
    """True/False when the holder ran on this host (its pid can be checked); None elsewhere."""
    try:
        host, pid, start = holder.rsplit(":", 2)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    return _start_time(int(pid)) == start


@dataclass
class RunLock:
    """One job per output, as a compare-and-swap on a one-row Delta table.

    Taking, refreshing and releasing the lock each overwrite the row in one Delta transaction
    read from the version that was checked; two jobs doing it at once both remove the same data
    file, so Delta's conflict check lets exactly one commit (the other sees the winner and
    refuses). A holder refreshes its heartbeat every `heartbeat_s`; a lock is stale (taken over) when
    released, when its holder process is gone (same host), or when its heartbeat is older than
    `stale_after_s` (a driver on another host that died)."""

    ledger: Ledger
    run_id: str
    stale_after_s: float = 300.0
    heartbeat_s: float = 30.0

    def __post_init__(self) -> None:
        self.holder = _holder()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False
        self.released = False  # set by `release`: the lock was given up

    def _open(self):
        """The lock table at its newest version, created (empty, as version 0) on first use."""
        return self.ledger.ensure(LOCK_TABLE)

    @staticmethod
    def _read(dt) -> dict | None:
        """The lock's row as of `dt`'s version (one row: every change overwrites it)."""
        rows = dt.to_pyarrow_table().to_pylist()
        return max(rows, key=lambda r: r["heartbeat"]) if rows else None

    def _current(self):
        dt = self._open()
        return dt, self._read(dt)

    def _free(self, row: dict | None) -> bool:
        if row is None or row["released"] or row["run_id"] == self.run_id:
            return True
        alive = _holder_alive(row["holder"])
        if alive is False:
            return True
        return time.time() - row["heartbeat"] > self.stale_after_s

    def _put(self, dt, released: bool) -> None:
        """Overwrite the row as version `dt.version() + 1`, or fail (`CommitFailedError`) when another
        writer committed any version since `dt` was read: a compare-and-swap on the log's version.
        delta-rs would otherwise rebase an overwrite of an empty table onto the winner's version (it
        removes no file the winner touched) and both jobs would hold the lock."""
        from deltalake import CommitProperties, write_deltalake  # heavy: delta-rs, only where a table is opened

        row = pa.Table.from_pylist(
            [{"run_id": self.run_id, "holder": self.holder, "heartbeat": time.time(), "released": released}],
            schema=LOCK_SCHEMA,
        )
        write_deltalake(dt, row, mode="overwrite", commit_properties=CommitProperties(max_commit_retries=0))

    def _check(self, row: dict | None) -> None:
        """Raise OutputLockedError when `row` says another live job holds the output."""
        if self._free(row):
            return
        age = time.time() - row["heartbeat"]
        exc = OutputLockedError(
            f"output {self.ledger.cfg.uri} is in use by run {row['run_id']} ({row['holder']}, heartbeat "
            f"{age:.0f} s ago); one job per output at a time. If that job is dead, retry after "
            f"{max(0.0, self.stale_after_s - age):.0f} s, when its lock goes stale."
        )
        exc.heartbeat_age = age
        raise exc

    def acquire(self) -> None:
        """Take the lock, or raise OutputLockedError. A holder that missed three heartbeats is
        probably dead (a crashed driver whose retry starts at once, e.g. a Kubernetes Job's next
        attempt): wait for its lock to go stale instead of refusing, unless it beats meanwhile."""

        def attempt() -> None:
            dt = self._open()
            row = self._read(dt)
            self._check(row)
            if row is not None and not row["released"] and row["run_id"] != self.run_id:
                log.warning("taking over the stale lock of run %s (%s)", row["run_id"], row["holder"])
            self._put(dt, released=False)

        while True:
            try:
                retry_commit(attempt)
                break
            except OutputLockedError as exc:
                age = getattr(exc, "heartbeat_age", 0.0)
                if age < 3 * self.heartbeat_s:
                    raise
                wait = self.stale_after_s - age + 0.5
                log.warning(
                    "the output's holder missed %d heartbeats; waiting %.0f s for its lock to go stale",
                    age // self.heartbeat_s,
                    wait,
                )
                time.sleep(wait)
        self._reserve(RESERVE_BYTES)
        self._thread = threading.Thread(target=self._beat, name="scriptorium-lock", daemon=True)
        self._thread.start()

    def _reserve(self, size: int) -> None:
        """Write (size > 0) or remove (0) the local output's reserve file (`RESERVE_NAME`); best effort."""
        fs = self.ledger.fs
        protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        if protocol not in ("file", "local"):
            return  # an object store has no disk to fill; its quota is not ours to reserve
        path = os.path.join(self.ledger.table_uri(LOCK_TABLE).rsplit("/", 1)[0], RESERVE_NAME)
        try:
            if size:
                with open(path, "wb") as f:
                    f.write(bytes(size))
                    f.flush()
                    os.fsync(f.fileno())
            else:
                os.remove(path)
        except OSError as exc:
            log.debug("lock reserve %s: %s", path, exc)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a missed beat is harmless until stale_after_s
                log.exception("lock heartbeat failed")

    def refresh(self) -> None:
        """Move the heartbeat, if the lock is still ours (a lock taken over is not taken back)."""

        def attempt() -> None:
            dt, row = self._current()
            if row is None or row["run_id"] != self.run_id or row["released"]:
                if not self.lost:
                    log.error("lost the output lock to run %s", row and row["run_id"])
                self.lost = True
                return
            self._put(dt, released=False)

        retry_commit(attempt)

    def release(self) -> bool:
        """Give the lock up: delete its row, as the next version of the log (a released lock is an
        empty table). A delete adds no data file, only a log entry: it still fits on a disk too full
        for another Parquet file. False, and one line logged, when it could not be released: the next
        job takes it over when this process is gone (same host) or after `stale_after_s`."""
        from deltalake import CommitProperties  # heavy: delta-rs, only where a table is opened

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.lost:  # (a lock taken over: the reserve is its new holder's)
            self._reserve(0)  # the room the release's log entry needs, on a disk that filled up

        def attempt() -> None:
            dt = self._open()
            row = self._read(dt)
            if row is not None and row["run_id"] == self.run_id and not row["released"]:
                dt.delete(commit_properties=CommitProperties(max_commit_retries=0))

        try:
            retry_commit(attempt)
        except Exception as exc:  # noqa: BLE001 - our process ends; the next job finds the lock stale
            log.error(
                "could not release the output lock (%s: %s); the next job takes it over when this process has "
                "ended (on this host) or after %.0f s",
                type(exc).__name__,
                (str(exc).strip().splitlines() or [""])[-1][:200],
                self.stale_after_s,
            )
            log.debug("lock release failed", exc_info=True)
            return False
        self.released = True
        return True

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
