"""Group commits: write tasks stage Parquet files, one committer folds many blocks into one Delta
transaction per table.

Why: every Delta commit is the next version of one log, so commits from all writers line up one
after another (about one commit pair a second per writer on a loopback store, and a real store
answers in 20-50 ms a request). A fleet of GPUs finishes tens of blocks a second; committing each
block would let the log, not the GPUs, set the pace. Here a write task only PUTs its two data files
(`stage`), and the run's committer makes one transaction per table for every few thousand
recordings (`commit_group`), whatever the number of writers.

Exactly once: each block keeps its `write_id` (a hash of the run id and its recording ids). A group
commit carries one Delta app transaction `scriptorium-<write_id>` per block it holds, so a block
offered twice (a retried write task, the end-of-run flush) or a commit whose response was lost is
recognised (`DeltaTable.transaction_version`) and never committed again. A staged file that is never
committed (its run died first) is not in the log: no reader sees it, and vacuum deletes it.

Replacing older rows: a recording that is new to the output (the plan knows) is appended with Add
actions only, so a commit costs the same whatever the table's history. A group that holds a
recording with older rows (a changed input, a new fingerprint, a failed recording retried) is
committed as before staging existed, as one predicate overwrite of the group's recordings, whose
cost grows with the files those recordings may sit in.

A crash between a group's two commits (`segments`, then `recordings`) leaves `segments` rows no
`recordings` row matches: `read_output` hides them, and the next run's `repair_dangling_group`
deletes them before it commits anything (each group commit names its group and write ids in the
commit's metadata).
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Collection

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import with_retries
from pipeline.ledger.tables import SCHEMAS, in_predicate, retry_commit
from pipeline.storage import put_atomic

if TYPE_CHECKING:
    from pipeline.ledger.commit import Ledger

log = logging.getLogger("pipeline.ledger")

#: Commit metadata keys a group commit writes (read back by `repair_dangling_group`).
GROUP_KEY, WRITE_IDS_KEY, REPAIRED_KEY = "scriptorium.group", "scriptorium.write_ids", "scriptorium.repaired"


@dataclass(frozen=True)
class StagedFile:
    """One Parquet data file written into a table's folder but not yet in its log."""

    path: str  # relative to the table's root, as a Delta Add action names it
    size: int
    rows: int
    stats: str  # Delta statistics JSON (numRecords, minValues, maxValues, nullCount)


@dataclass
class StagedBlock:
    """What a write task hands the committer: its block's staged files and what they hold."""

    write_id: str
    recording_ids: list[str]
    files: dict[str, StagedFile]  # table name -> file
    audio_seconds: float = 0.0
    summary: object = None  # pipeline.report.BlockSummary (kept opaque: the ledger does not read it)
    staged_at: float = field(default_factory=time.time)


def stage(ledger: "Ledger", name: str, rows: pa.Table, write_id: str) -> StagedFile:
    """Write `rows` as one Parquet file into table `name`'s folder, under a name no other attempt
    uses (a retried task must never overwrite a file a group commit may already reference)."""
    rows = rows.cast(SCHEMAS[name])
    rel = f"part-{write_id}-{uuid.uuid4().hex[:8]}.parquet"
    out = io.BytesIO()
    pq.write_table(rows, out, compression="snappy")
    body = out.getvalue()
    path = ledger.path(name, rel)
    with_retries(lambda: put_atomic(ledger.fs, path, body))
    return StagedFile(path=rel, size=len(body), rows=rows.num_rows, stats=_stats(rows))


def _stats(rows: pa.Table) -> str:
    """Delta statistics of a staged file, as delta-rs's own writer makes them: the row count, and
    per top-level column of a plain type its null count, min and max. Every such column needs all
    three: a reader that turns them into file guarantees (delta-rs's `to_pyarrow_dataset`) reads a
    missing min as null and then skips the file for any filter on that column."""
    mins: dict[str, object] = {}
    maxs: dict[str, object] = {}
    nulls: dict[str, int] = {}
    for schema_field, col in zip(rows.schema, rows.columns):
        if pa.types.is_nested(schema_field.type):
            continue
        nulls[schema_field.name] = col.null_count
        if rows.num_rows == col.null_count:
            continue
        mm = pc.min_max(col)
        lo, hi = _stat_value(mm["min"], "floor"), _stat_value(mm["max"], "ceil")
        if lo is not None and hi is not None:
            mins[schema_field.name], maxs[schema_field.name] = lo, hi
    return json.dumps(
        {"numRecords": rows.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}, allow_nan=False
    )


def _stat_value(value: pa.Scalar, rounding: str) -> object:
    """A min or max in the log's JSON form; None where it has none (NaN, infinities, binary)."""
    if pa.types.is_timestamp(value.type):  # ISO-8601 in UTC, milliseconds (a min rounded down, a max up)
        us = value.cast(pa.timestamp("us")).cast(pa.int64()).as_py()
        ms = -(-us // 1000) if rounding == "ceil" else us // 1000
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    v = value.as_py()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if isinstance(v, (str, int, float, bool)) else None


def app_id(write_id: str) -> str:
    return f"scriptorium-{write_id}"


def commit_group(
    ledger: "Ledger",
    name: str,
    blocks: list[StagedBlock],
    replacing: Collection[str],
    group_id: str,
    verify: bool = True,
) -> int:
    """One Delta transaction on table `name` holding every block of `blocks` not yet committed.

    `replacing`: recording ids that may have older rows in the table; a group holding one of them is
    committed as a predicate overwrite of all its recordings (see the module docstring). Returns the
    number of blocks this call committed (0: all were committed before).

    `verify`: look up every block's app transaction first. delta-rs reads the log entries since the
    last checkpoint for each look-up, so a run's committer, which knows what it committed (under the
    output's lock, one committer per run), passes False: it then looks them up only when retrying a
    commit that failed, whose answer may have been lost after the commit landed."""
    # heavy: delta-rs, ~30 MB native, only where a table is opened
    from deltalake import CommitProperties, Transaction, write_deltalake
    from deltalake.transaction import AddAction

    tries = [0]

    def attempt() -> int:
        dt = ledger.current(name)  # an output of an older release gets the new columns first
        check = verify or tries[0] > 0
        tries[0] += 1
        todo = [b for b in blocks if dt.transaction_version(app_id(b.write_id)) is None] if check else list(blocks)
        if not todo:
            return 0
        props = CommitProperties(
            app_transactions=[Transaction(app_id=app_id(b.write_id), version=1) for b in todo],
            custom_metadata={GROUP_KEY: group_id, WRITE_IDS_KEY: ",".join(b.write_id for b in todo)},
        )
        ids = [i for b in todo for i in b.recording_ids]
        if not any(i in replacing for i in ids):
            now = int(time.time() * 1000)
            adds = [AddAction(f.path, f.size, {}, now, True, f.stats) for f in (b.files[name] for b in todo)]
            dt.create_write_transaction(adds, mode="append", schema=SCHEMAS[name], commit_properties=props)
            return len(todo)
        rows = pa.concat_tables([_read_staged(ledger, name, b.files[name]) for b in todo])
        write_deltalake(
            dt,
            rows,
            mode="overwrite",
            predicate=in_predicate("recording_id", ids),
            schema_mode="merge",
            commit_properties=props,
        )
        for b in todo:  # their rows went into the overwrite's own files: the staged ones are unused
            with_retries(lambda b=b: ledger.fs.rm(ledger.path(name, b.files[name].path)))
        return len(todo)

    return retry_commit(attempt)


def _read_staged(ledger: "Ledger", name: str, f: StagedFile) -> pa.Table:
    body = with_retries(lambda: ledger.fs.cat_file(ledger.path(name, f.path)))
    return pq.read_table(io.BytesIO(body)).cast(SCHEMAS[name])


def repair_dangling_group(ledger: "Ledger") -> int:
    """Delete the `segments` rows of a group whose `recordings` commit never came (its run died
    between the two). Call under the output's lock, before the run commits anything. Returns the
    number of write ids whose rows were deleted."""
    seg, rec = ledger.table("segments"), ledger.table("recordings")
    if seg is None:
        return 0
    last = _last_group(ledger, "segments", seg.version())
    if last is None or last[0] == REPAIRED_KEY:
        return 0
    group, write_ids = last
    rec_last = _last_group(ledger, "recordings", rec.version()) if rec is not None else None
    if rec_last is not None and rec_last[0] == group:
        return 0
    ids = sorted(w for w in write_ids if w)
    if not ids:
        return 0
    log.warning(
        "output: the last run died between its two commits; deleting the segments of its last group (%d blocks)",
        len(ids),
    )
    from deltalake import CommitProperties  # heavy: delta-rs, ~30 MB native, only where a table is opened

    done = CommitProperties(custom_metadata={REPAIRED_KEY: group})  # so the repair is not done twice
    retry_commit(lambda: ledger.table("segments").delete(in_predicate("write_id", ids), commit_properties=done))
    return len(ids)


#: How far back in a table's log to look for the last group commit (maintenance commits come after it).
LOOKBACK = 20


def _last_group(ledger: "Ledger", name: str, version: int) -> tuple[str, list[str]] | None:
    """(group id, write ids) of the newest group commit in the table's log, walking back from
    `version` one log entry at a time (one GET each; `DeltaTable.history` lists the whole log
    folder). (REPAIRED_KEY, []) when a repair came after it; None when there is none."""
    for v in range(version, max(-1, version - LOOKBACK), -1):
        try:
            body = with_retries(lambda v=v: ledger.fs.cat_file(ledger.path(name, "_delta_log", f"{v:020d}.json")))
        except FileNotFoundError:  # cleaned up by maintenance: nothing older to find
            return None
        for line in body.decode().splitlines():
            info = json.loads(line).get("commitInfo")
            if info is None:
                continue
            if REPAIRED_KEY in info:
                return REPAIRED_KEY, []
            if GROUP_KEY in info:
                return info[GROUP_KEY], str(info.get(WRITE_IDS_KEY, "")).split(",")
    return None
