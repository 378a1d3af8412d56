"""The commit protocol (see `pipeline.ledger`): open the tables, plan a run against them, commit a
block of recordings exactly once, and read back only what was committed."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import OutputConfig
from pipeline.ledger.lock import LOCK_SCHEMA, RunLock
from pipeline.ledger.maintenance import Maintenance
from pipeline.ledger.tables import (
    COMMIT_KEY,
    PLAN_COLUMNS,
    SCHEMAS,
    LegacyOutputError,
    OutputError,
    _key_in,
    in_predicate,
    retry_commit,
    storage_options,
)
from pipeline.records import InputFile, input_files, input_table
from pipeline.storage import filesystem
from pipeline.text import safe


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


class Ledger(Maintenance):
    """The output's two tables: open, plan against, commit to, lock, maintain."""

    def __init__(self, cfg: OutputConfig):
        self.cfg = cfg
        self.fs, self.root = filesystem(cfg.uri, cfg.storage)
        self.options = storage_options(cfg)
        self._open: dict[str, Any] = {}  # tables kept open by `current`

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
        from deltalake import DeltaTable  # heavy: delta-rs, ~30 MB native, only where a table is opened
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.table_uri(name), version=version, storage_options=self.options)
        except TableNotFoundError:
            return None
        except Exception as exc:
            if "contiguous" in str(exc) or "found gap" in str(exc):  # a deleted log entry: one line, not a page
                raise OutputError(
                    f"output {safe(self.cfg.uri)}: {name}: Delta log version gap: an entry of {name}/_delta_log/ "
                    "is missing and the table cannot be read (restore it from a backup; `scriptorium status` "
                    "names the version)"
                ) from None
            raise

    def ensure(self, name: str):
        """Open the table, creating it (empty, with its schema) on first use. Racing creators are
        fine: the loser sees the winner's table."""
        from deltalake import DeltaTable  # heavy: delta-rs, ~30 MB native, only where a table is opened

        def attempt():
            dt = self.table(name)
            if dt is not None:
                return dt
            schema = SCHEMAS[name] if name in SCHEMAS else LOCK_SCHEMA
            return DeltaTable.create(
                self.table_uri(name), schema=schema, mode="ignore", storage_options=self.options, name=name
            )

        return retry_commit(attempt)

    def current(self, name: str):
        """The table at its newest version, for a committer that commits to it again and again: kept
        open and brought up to date by reading only the log entries added since (`update_incremental`),
        where opening it anew lists its whole log folder. Opened with the columns this release writes
        (`ensure_schema`): staged files are committed with the current schema."""
        cached = self._open.get(name)
        if cached is None:
            cached = self._open[name] = self.ensure_schema(name)
        else:
            cached.update_incremental()
        return cached

    def ensure_schema(self, name: str):
        """Add the columns a newer release writes (a new quality signal) to a table of an older one,
        in one commit of no rows: staged files are committed with the current schema, and a table
        must know every column they hold. Rows of an older writer read them as null."""
        from deltalake import write_deltalake  # heavy: delta-rs, ~30 MB native, only where a table is opened

        dt = self.ensure(name)
        have = {f.name for f in dt.schema().fields}
        if set(SCHEMAS[name].names) - have:
            retry_commit(
                lambda: write_deltalake(
                    self.table(name), SCHEMAS[name].empty_table(), mode="append", schema_mode="merge"
                )
            )
            dt = self.table(name)
        return dt

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

    def plan(self, files, fingerprint: str):
        """Inputs - committed work. Returns (todo, counts of new/changed/skipped/retry_failed).

        `files` is the listing as a table (`pipeline.discover.discover_table`) or a list of
        InputFile; `todo` comes back in the same form and order. A committed recording is skipped
        when its input is unchanged (`input_changed`, here as Arrow compute over whole columns) and
        it was made by the same pipeline fingerprint. Recordings that ended in "error" are retried
        on every run. Nothing is downloaded: this is one column-projected read of `recordings`
        joined to the listing, with no Python object per file (a million-file rerun fits in a driver)."""
        listed = input_table(files)
        done = self.read("recordings", PLAN_COLUMNS)
        done = done.rename_columns(["recording_id", *(f"done_{c}" for c in PLAN_COLUMNS[1:])])
        done = done.append_column("done", pa.repeat(True, done.num_rows))
        row = pa.array(np.arange(listed.num_rows, dtype=np.int64))
        j = (
            pa.table(
                {
                    "row": row,
                    "recording_id": listed.column("recording_id"),
                    "size": listed.column("size"),
                    "etag": listed.column("etag"),
                    "mtime": listed.column("mtime"),
                }
            )
            .join(done, "recording_id", join_type="left outer")
            .sort_by("row")
        )
        if j.num_rows != listed.num_rows:
            raise RuntimeError(
                f"{self.table_uri('recordings')}: a recording_id is committed more than once "
                "(a write outside Scriptorium?); the plan cannot tell which row is current"
            )
        new = pc.is_null(j.column("done"))
        retry = pc.fill_null(pc.equal(j.column("done_status"), "error"), False)
        other_fp = pc.fill_null(pc.not_equal(j.column("done_fingerprint"), fingerprint), True)
        changed = pc.and_not(pc.or_(other_fp, _changed(j)), pc.or_(new, retry))
        skipped = pc.invert(pc.or_(pc.or_(new, retry), changed))
        counts = {
            "new": _count(new),
            "changed": _count(changed),
            "skipped": _count(skipped),
            "retry_failed": _count(pc.and_not(retry, new)),
        }
        # `replaces`: the recording has older rows in the output, which its commit must replace
        todo = listed.append_column("replaces", pc.invert(new)).filter(pc.invert(skipped))
        return (todo if isinstance(files, pa.Table) else input_files(todo.drop_columns(["replaces"]))), counts

    # -- committing -----------------------------------------------------------------------------
    def commit_table(self, name: str, rows: pa.Table, recording_ids: list[str], write_id: str) -> bool:
        """One Delta transaction on `name`: replace every row of `recording_ids` by `rows`.

        Returns False when this write was already committed (a retried task): nothing is written."""
        # heavy: delta-rs, ~30 MB native, only where a table is opened
        from deltalake import CommitProperties, Transaction, write_deltalake

        app_id = f"scriptorium-{write_id}"
        predicate = in_predicate("recording_id", recording_ids)
        rows = rows.cast(SCHEMAS[name])

        def attempt() -> bool:
            dt = self.ensure(name)
            if dt.transaction_version(app_id) is not None:
                return False
            write_deltalake(
                dt,
                rows,
                mode="overwrite",
                predicate=predicate,
                # a release that adds a column (a new quality signal) adds it to the table; rows of an
                # older writer read it as null
                schema_mode="merge",
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(app_id=app_id, version=1)],
                    custom_metadata={"scriptorium.write_id": write_id},
                ),
            )
            return True

        return retry_commit(attempt)

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
                f"as Parquet under segments/ and recordings/)"
            )


def _count(mask: pa.ChunkedArray) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def _changed(j: pa.Table) -> pa.ChunkedArray:
    """`input_changed` over columns: listed (size, etag, mtime) against done_(size, etag, mtime)."""
    size = pc.fill_null(pc.not_equal(j.column("done_size"), j.column("size")), True)
    both_etags = pc.and_(
        pc.fill_null(pc.not_equal(j.column("done_etag"), ""), False),
        pc.fill_null(pc.not_equal(j.column("etag"), ""), False),
    )
    etag = pc.fill_null(pc.not_equal(j.column("done_etag"), j.column("etag")), False)
    both_mtimes = pc.and_(pc.is_valid(j.column("done_mtime")), pc.is_valid(j.column("mtime")))
    mtime = pc.fill_null(pc.greater(pc.abs(pc.subtract(j.column("done_mtime"), j.column("mtime"))), 1e-6), False)
    return pc.or_(size, pc.if_else(both_etags, etag, pc.if_else(both_mtimes, mtime, False)))


def maintain(cfg: OutputConfig, retention_hours: float = 168.0, run_id: str | None = None) -> dict[str, Any]:
    """`scriptorium maintain OUTPUT`: take the output's lock, then `Ledger.maintain`.

    Refuses (OutputLockedError) while a job runs on the output."""
    led = Ledger(cfg)
    with led.lock(run_id or time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-maintain"):
        return led.maintain(retention_hours=retention_hours)


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
