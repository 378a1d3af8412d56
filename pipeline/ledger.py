"""The output: two Delta Lake tables, `segments` and `recordings`, and their commit protocol.

Layout under `output.uri` (also in README "Output layout"):

    segments/      Delta table, one row per utterance (SEGMENTS_TABLE_SCHEMA)
    recordings/    Delta table, one row per input file (RECORDINGS_TABLE_SCHEMA): the ledger
    _scriptorium/lock/   tiny Delta table: which run holds the output (see `RunLock`)
    report.json    the last run's report

Why Delta: every commit is one atomic PUT of the next `_delta_log/<version>.json` (a conditional
put on S3, `aws_conditional_put=etag`), so no lock service and no home-made log are needed, and
every reader users have (DuckDB, Polars, Spark, Trino, `ray.data.read_delta`) reads the output.

Protocol (per Ray write task, i.e. per block of recordings, `Ledger.commit_block`):
1. `segments` first, then `recordings`. Each is ONE Delta transaction:
   `write_deltalake(mode="overwrite", predicate="recording_id IN (<the block's ids>)")`, which
   removes every older row of those recordings (a changed input, a changed fingerprint, an earlier
   attempt) in the same commit that adds the new rows. A plain reader of either table therefore sees
   each recording at most once, at every moment.
2. Both commits carry the app transaction `scriptorium-<write_id>` (Delta `txn`, as Spark's
   exactly-once streaming writes do). `write_id` is a hash of the run id and the block's recording
   ids, so a retried write task finds its own earlier commit (`DeltaTable.transaction_version`) and
   skips it; a commit whose response was lost (S3 drop) is not made twice.
3. The `recordings` row is the commit the next run trusts (planning reads only it). A task that dies
   between the two tables leaves `segments` rows without a `recordings` row: plain readers of
   `segments` see them; `read_output` does not (it keeps segments whose (recording_id, fingerprint,
   write_id) match a committed `recordings` row); the next run redoes the recording and its predicate
   overwrite clears them, and `maintain` deletes any whose input is gone.
4. Concurrent commits of parallel write tasks touch disjoint recording ids; when delta-rs still
   reports a conflict (its checker works on file statistics), the write is retried on the fresh
   table state with bounded, jittered backoff (tenacity).
5. One job per output: `Ledger.lock` (a compare-and-swap row in `_scriptorium/lock`, itself a Delta
   table) refuses a second job with `OutputLockedError`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import OutputConfig
from pipeline.records import RECORDINGS_SCHEMA, SEGMENTS_SCHEMA, InputFile
from pipeline.storage import filesystem

log = logging.getLogger(__name__)

TABLES = ("segments", "recordings")
LOCK_TABLE = "_scriptorium/lock"

#: `segments` as committed: the output contract plus the write that committed each row.
SEGMENTS_TABLE_SCHEMA = SEGMENTS_SCHEMA.append(pa.field("write_id", pa.string()))
#: `recordings` as committed: the output contract plus what the next run's plan compares
#: (the input version as listed: size/etag are in the contract, mtime here) and the commit's identity.
RECORDINGS_TABLE_SCHEMA = pa.schema(
    list(RECORDINGS_SCHEMA)
    + [
        pa.field("mtime", pa.float64()),
        pa.field("run_id", pa.string()),
        pa.field("write_id", pa.string()),
        pa.field("committed_at", pa.timestamp("us", tz="UTC")),
    ]
)
SCHEMAS = {"segments": SEGMENTS_TABLE_SCHEMA, "recordings": RECORDINGS_TABLE_SCHEMA}
#: The one column-projected read a plan needs.
PLAN_COLUMNS = ["recording_id", "size", "etag", "mtime", "fingerprint", "status"]
#: Join key between the tables: a segment row is committed iff a recordings row has the same key.
COMMIT_KEY = ["recording_id", "fingerprint", "write_id"]
#: A run maintains the output at its end once a table holds this many data files.
MAINTAIN_EVERY_FILES = 200


class OutputError(RuntimeError):
    """The output cannot be used by this job (the CLI exits 2 with the message)."""


class OutputLockedError(OutputError):
    """Another job holds this output (two jobs on one output would redo and race each other's work)."""


class LegacyOutputError(OutputError):
    """The output was written by the old JSON ledger (`_ledger/commits/`): it must be rewritten."""


def storage_options(cfg: OutputConfig) -> dict[str, str] | None:
    """delta-rs (object_store) options for the output, built in ONE place.

    Credentials are deliberately absent: object_store reads the AWS chain (AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE, web identity, instance role) itself, so
    they are never copied into options that could be logged. `aws_conditional_put=etag` makes each
    commit a conditional PUT: concurrent committers cannot overwrite each other's log entries."""
    protocol = fsspec.utils.get_protocol(cfg.uri)
    if protocol not in ("s3", "s3a"):
        return None
    opts = {
        "aws_conditional_put": "etag",
        "AWS_REGION": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    }
    endpoint = cfg.storage.endpoint_url
    if endpoint:
        opts["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            opts["AWS_ALLOW_HTTP"] = "true"
    if cfg.storage.anon:
        opts["AWS_SKIP_SIGNATURE"] = "true"
    return opts


def input_changed(size: int, etag: str | None, mtime: float | None, f: InputFile) -> bool:
    """Did the object change since it was committed (size, etag, mtime as committed)? Size always;
    the etag where both sides have one (S3); else the modification time (local disks, stores
    without etags)."""
    if size != f.size:
        return True
    if etag and f.etag:
        return etag != f.etag
    if mtime is not None and f.mtime is not None:
        return abs(mtime - f.mtime) > 1e-6
    return False


def write_id_for(run_id: str, recording_ids: list[str]) -> str:
    """Deterministic per (run, block): every attempt of one write task gets the same id, so a retry
    recognises its own earlier commits and both tables' rows of one write share one key."""
    h = hashlib.sha1("\n".join([run_id, *sorted(recording_ids)]).encode()).hexdigest()[:16]
    return f"{run_id}-{h}"


def _in_predicate(ids: list[str]) -> str:
    quoted = ",".join("'" + i.replace("'", "''") + "'" for i in sorted(set(ids)))
    return f"recording_id IN ({quoted})"


def _is_conflict(exc: BaseException) -> bool:
    """A lost race with another committer: retry on the fresh table state. Transient storage
    errors that outlived object_store's own retries are retried too; a schema or protocol error is not."""
    from deltalake.exceptions import CommitFailedError, DeltaError, DeltaProtocolError, SchemaMismatchError

    if isinstance(exc, (SchemaMismatchError, DeltaProtocolError)):
        return False
    if isinstance(exc, CommitFailedError):
        return True
    if isinstance(exc, (DeltaError, OSError)):
        text = str(exc).lower()
        return any(s in text for s in ("conflict", "concurrent", "already exists", "timeout", "timed out", "connection",
                                       "503", "500", "slowdown", "slow down", "internalerror", "generic s3 error"))
    return False


def _retrying(fn, attempts: int = 12):
    """Bounded, jittered retries of a whole read-check-commit attempt (tenacity)."""
    from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

    return retry(
        retry=retry_if_exception(_is_conflict),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.1, max=4),
        reraise=True,
    )(fn)()


class Ledger:
    """The output's two tables: open, plan against, commit to, lock, maintain."""

    def __init__(self, cfg: OutputConfig):
        self.cfg = cfg
        self.fs, self.root = filesystem(cfg.uri, cfg.storage)
        self.options = storage_options(cfg)

    def path(self, *parts: str) -> str:
        """fsspec path of an object under the output (report.json and friends)."""
        return "/".join([self.root.rstrip("/"), *parts])

    def table_uri(self, name: str) -> str:
        """URI delta-rs understands: the s3:// URI, or an absolute local path."""
        if fsspec.utils.get_protocol(self.cfg.uri) in ("file", "local"):
            return os.path.abspath(os.path.join(self.root, name))
        return f"{self.cfg.uri.rstrip('/')}/{name}"

    # -- opening --------------------------------------------------------------------------------
    def table(self, name: str, version: int | None = None):
        """The Delta table, or None while nothing was ever committed there."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.table_uri(name), version=version, storage_options=self.options)
        except TableNotFoundError:
            return None

    def ensure(self, name: str):
        """Open the table, creating it (empty, with its schema) on first use. Racing creators are
        fine: the loser sees the winner's table."""
        from deltalake import DeltaTable

        def attempt():
            dt = self.table(name)
            if dt is not None:
                return dt
            schema = SCHEMAS[name] if name in SCHEMAS else LOCK_SCHEMA
            return DeltaTable.create(self.table_uri(name), schema=schema, mode="ignore",
                                     storage_options=self.options, name=name)

        return _retrying(attempt)

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """Current version of a table (column-projected); empty with the schema if none yet."""
        dt = self.table(name)
        schema = SCHEMAS[name]
        if dt is None:
            return (schema if columns is None else pa.schema([schema.field(c) for c in columns])).empty_table()
        return dt.to_pyarrow_table(columns=columns)

    # -- planning -------------------------------------------------------------------------------
    def entries(self) -> dict[str, dict[str, Any]]:
        """recording_id -> committed plan columns (one column-projected read of `recordings`)."""
        t = self.read("recordings", PLAN_COLUMNS)
        cols = [t.column(c).to_pylist() for c in PLAN_COLUMNS]
        return {row[0]: dict(zip(PLAN_COLUMNS, row)) for row in zip(*cols)}

    def plan(self, files: list[InputFile], fingerprint: str) -> tuple[list[InputFile], dict[str, int]]:
        """Inputs - committed work. Returns (todo, counts of new/changed/skipped/retry_failed).

        A committed recording is skipped when its input is unchanged (`input_changed`) and it was
        made by the same pipeline fingerprint. Recordings that ended in "error" are retried on every
        run. Nothing is downloaded: this compares listing metadata with the `recordings` table."""
        t = self.read("recordings", PLAN_COLUMNS)
        # recording_id -> (size, etag, mtime, fingerprint, status): tuples, not dicts (1 M of them)
        done = dict(zip(t.column("recording_id").to_pylist(), zip(*(t.column(c).to_pylist() for c in PLAN_COLUMNS[1:]))))
        del t
        todo: list[InputFile] = []
        counts = {"new": 0, "changed": 0, "skipped": 0, "retry_failed": 0}
        for f in files:
            e = done.get(f.recording_id)
            if e is None:
                counts["new"] += 1
            elif e[4] == "error":
                counts["retry_failed"] += 1
            elif e[3] != fingerprint or input_changed(e[0], e[1], e[2], f):
                counts["changed"] += 1
            else:
                counts["skipped"] += 1
                continue
            todo.append(f)
        return todo, counts

    # -- committing -----------------------------------------------------------------------------
    def commit_table(self, name: str, rows: pa.Table, recording_ids: list[str], write_id: str) -> bool:
        """One Delta transaction on `name`: replace every row of `recording_ids` by `rows`.

        Returns False when this write was already committed (a retried task): nothing is written."""
        from deltalake import CommitProperties, Transaction, write_deltalake

        app_id = f"scriptorium-{write_id}"
        predicate = _in_predicate(recording_ids)
        rows = rows.cast(SCHEMAS[name])

        def attempt() -> bool:
            dt = self.ensure(name)
            if dt.transaction_version(app_id) is not None:
                return False
            write_deltalake(
                dt, rows, mode="overwrite", predicate=predicate,
                # a release that adds a column (a new quality signal) adds it to the table; rows of an
                # older writer read it as null
                schema_mode="merge",
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(app_id=app_id, version=1)],
                    custom_metadata={"scriptorium.write_id": write_id},
                ),
            )
            return True

        return _retrying(attempt)

    # -- one job per output ---------------------------------------------------------------------
    def lock(self, run_id: str, stale_after_s: float = 300.0, heartbeat_s: float = 30.0) -> "RunLock":
        """Take the output for `run_id`, or raise OutputLockedError naming the holder (or
        LegacyOutputError for an output of the old JSON ledger, which this version does not read)."""
        self.check_not_legacy()
        lk = RunLock(self, run_id, stale_after_s, heartbeat_s)
        lk.acquire()
        return lk

    def check_not_legacy(self) -> None:
        """Writing Delta tables over an old output would hide its parts and transcribe everything
        again (and vacuum would later delete the old files): refuse with what to do instead."""
        old = self.path("_ledger", "commits")
        if self.table("recordings") is None and self.fs.exists(old) and self.fs.ls(old):
            raise LegacyOutputError(
                f"output {self.cfg.uri} was written by an older Scriptorium (JSON ledger in _ledger/commits/); "
                f"this version writes Delta tables: run into a new output.uri (the old output stays readable "
                f"as Parquet under segments/ and recordings/)")

    # -- maintenance ----------------------------------------------------------------------------
    def maintain(self, retention_hours: float = 168.0, vacuum: bool = True, repair: bool = True) -> dict[str, Any]:
        """Compact small files, checkpoint, delete orphaned segments, vacuum. Call under the lock.

        Orphaned segments are rows whose commit never got its `recordings` row (a task died between
        the tables) and whose input was not redone since; with the lock held no job is between its
        two commits, so they can go. Returns what was done, per table."""
        out: dict[str, Any] = {"orphaned_segment_recordings": 0, "recordings_to_redo": 0}
        if repair and self.table("segments") is not None and self.table("recordings") is not None:
            committed = self.read("recordings", [*COMMIT_KEY, "num_segments"])
            seg = self.read("segments", COMMIT_KEY)
            orphans = seg.filter(pc.invert(_key_in(seg, committed))).group_by(["recording_id", "write_id"]).aggregate([])
            out["orphaned_segment_recordings"] = orphans.num_rows
            self._delete("segments", orphans)
            # A recordings row whose segments were replaced by a write that then died before its own
            # recordings commit (and whose cause of redo went away, e.g. a fingerprint change was
            # reverted) would be skipped forever while no segment matches it: uncommit it, so the
            # next run redoes it.
            has_segs = pc.greater(pc.fill_null(committed.column("num_segments"), 0), 0)
            broken = committed.filter(pc.and_(has_segs, pc.invert(_key_in(committed, seg))))
            out["recordings_to_redo"] = broken.num_rows
            self._delete("recordings", broken.select(["recording_id", "write_id"]))
        for name in TABLES:
            dt = self.table(name)
            if dt is None:
                continue
            before = len(dt.file_uris())
            metrics = _retrying(lambda: self.table(name).optimize.compact())
            dt = self.table(name)
            dt.create_checkpoint()
            dt.cleanup_metadata()
            removed = dt.vacuum(retention_hours=int(retention_hours), enforce_retention_duration=False,
                                dry_run=False) if vacuum else []
            out[name] = {"files_before": before, "files_after": len(self.table(name).file_uris()),
                         "version": dt.version(), "vacuumed": len(removed),
                         "compacted": metrics.get("numFilesRemoved", 0)}
        lock = self.table(LOCK_TABLE)
        if lock is not None:  # every heartbeat is a commit with a one-row file: keep an hour of them
            lock.create_checkpoint()
            lock.cleanup_metadata()
            out["lock_vacuumed"] = len(lock.vacuum(retention_hours=1, enforce_retention_duration=False,
                                                   dry_run=False)) if vacuum else 0
        return out

    def _delete(self, name: str, which: pa.Table, chunk: int = 500) -> None:
        """Delete the rows of (recording_id, write_id) pairs, a few hundred per transaction."""
        pairs = which.to_pylist()
        for i in range(0, len(pairs), chunk):
            pred = " OR ".join(f"(recording_id = '{p['recording_id']}' AND write_id = '{p['write_id']}')"
                               for p in pairs[i:i + chunk])
            _retrying(lambda pred=pred: self.table(name).delete(pred))

    def maintenance_due(self, every_files: int = MAINTAIN_EVERY_FILES) -> bool:
        """Due when a table holds many small files (each write task's commit adds one per table)."""
        for name in TABLES:
            dt = self.table(name)
            if dt is not None and len(dt.file_uris()) >= every_files:
                return True
        return False

    def maintain_if_due(self, every_files: int = MAINTAIN_EVERY_FILES) -> dict[str, Any] | None:
        """End of a run: maintain when due. Never fails the run (the data is committed already)."""
        try:
            if self.maintenance_due(every_files):
                # no orphan scan here (it reads all of `segments`): a rerun's predicate overwrites
                # clear what crashes left; `scriptorium maintain` repairs the rest
                done = self.maintain(repair=False)
                log.info("output maintenance: %s", done)
                return done
        except Exception:  # noqa: BLE001
            log.exception("output maintenance failed; `scriptorium maintain` or the next run retries it")
        return None


def maintain(cfg: OutputConfig, retention_hours: float = 168.0, run_id: str | None = None) -> dict[str, Any]:
    """`scriptorium maintain OUTPUT`: take the output's lock, then `Ledger.maintain`.

    Refuses (OutputLockedError) while a job runs on the output."""
    led = Ledger(cfg)
    with led.lock(run_id or time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-maintain"):
        return led.maintain(retention_hours=retention_hours)


def _key_in(t: pa.Table, committed: pa.Table) -> pa.Array:
    """Boolean mask: which rows of `t` have a COMMIT_KEY present in `committed`."""
    def key(x: pa.Table) -> pa.Array:
        return pc.binary_join_element_wise(*[pc.fill_null(x.column(c), "") for c in COMMIT_KEY], "\x1f")

    if committed.num_rows == 0:
        return pa.array([False] * t.num_rows, pa.bool_())
    return pc.is_in(key(t), value_set=key(committed))


# -- the lock -----------------------------------------------------------------------------------
LOCK_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("holder", pa.string()),  # host:pid:process start time
    ("heartbeat", pa.float64()),  # unix seconds
    ("released", pa.bool_()),
])


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

    def _current(self):
        dt = self.ledger.ensure(LOCK_TABLE)
        rows = dt.to_pyarrow_table().to_pylist()
        return dt, (max(rows, key=lambda r: r["heartbeat"]) if rows else None)

    def _free(self, row: dict | None) -> bool:
        if row is None or row["released"] or row["run_id"] == self.run_id:
            return True
        alive = _holder_alive(row["holder"])
        if alive is False:
            return True
        return time.time() - row["heartbeat"] > self.stale_after_s

    def _put(self, dt, released: bool) -> None:
        from deltalake import write_deltalake

        row = pa.Table.from_pylist([{"run_id": self.run_id, "holder": self.holder, "heartbeat": time.time(),
                                     "released": released}], schema=LOCK_SCHEMA)
        write_deltalake(dt, row, mode="overwrite")

    def acquire(self) -> None:
        """Take the lock, or raise OutputLockedError. A holder that missed three heartbeats is
        probably dead (a crashed driver whose retry starts at once, e.g. a Kubernetes Job's next
        attempt): wait for its lock to go stale instead of refusing, unless it beats meanwhile."""
        def attempt() -> None:
            dt, row = self._current()
            if not self._free(row):
                age = time.time() - row["heartbeat"]
                exc = OutputLockedError(
                    f"output {self.ledger.cfg.uri} is in use by run {row['run_id']} ({row['holder']}, heartbeat "
                    f"{age:.0f} s ago); one job per output at a time. If that job is dead, retry after "
                    f"{max(0.0, self.stale_after_s - age):.0f} s, when its lock goes stale."
                )
                exc.heartbeat_age = age
                raise exc
            if row is not None and not row["released"] and row["run_id"] != self.run_id:
                log.warning("taking over the stale lock of run %s (%s)", row["run_id"], row["holder"])
            self._put(dt, released=False)

        while True:
            try:
                _retrying(attempt)
                break
            except OutputLockedError as exc:
                age = getattr(exc, "heartbeat_age", 0.0)
                if age < 3 * self.heartbeat_s:
                    raise
                wait = self.stale_after_s - age + 0.5
                log.warning("the output's holder missed %d heartbeats; waiting %.0f s for its lock to go stale",
                            age // self.heartbeat_s, wait)
                time.sleep(wait)
        self._thread = threading.Thread(target=self._beat, name="scriptorium-lock", daemon=True)
        self._thread.start()

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

        _retrying(attempt)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

        def attempt() -> None:
            dt, row = self._current()
            if row is not None and row["run_id"] == self.run_id and not row["released"]:
                self._put(dt, released=True)

        try:
            _retrying(attempt)
        except Exception:  # noqa: BLE001 - our process ends; the next job finds the lock stale
            log.exception("could not release the output lock")

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# -- readers ------------------------------------------------------------------------------------
def read_output(cfg: OutputConfig, table: str = "segments") -> pa.Table:
    """Committed rows of `segments` or `recordings` as one pyarrow Table.

    `recordings` is the table as it is. `segments` keeps only rows whose (recording_id, fingerprint,
    write_id) match a committed `recordings` row: rows a task committed before dying ahead of its
    recordings commit are left out. (While a job rewrites a recording, that recording may be absent
    from one read; it is never present twice.)"""
    led = Ledger(cfg)
    if table == "recordings":
        return led.read("recordings")
    if table != "segments":
        raise ValueError(f"unknown table {table!r}: segments | recordings")
    committed = led.read("recordings", COMMIT_KEY)
    seg = led.read("segments")
    return seg.filter(_key_in(seg, committed))

