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

One module per reason to change; every name is importable from `pipeline.ledger`:

    tables.py       table names, schemas and keys, the errors, delta-rs options, the retry of a commit
    commit.py       `Ledger`: open, plan, commit (the protocol above); `read_output`; `maintain` (locked)
    lock.py         `RunLock`: one job per output
    maintenance.py  compaction, checkpoints, vacuum, orphan repair (`Ledger.maintain`, a mixin of `Ledger`)
    integrity.py    damaged data files and log gaps: checked by `run` and `status`, repaired by `run`
"""

from __future__ import annotations

import logging

from pipeline.ledger.commit import Ledger, input_changed, maintain, read_output, write_id_for
from pipeline.ledger.lock import LOCK_SCHEMA, RunLock
from pipeline.ledger.tables import (
    COMMIT_KEY,
    LOCK_TABLE,
    MAINTAIN_EVERY_FILES,
    PLAN_COLUMNS,
    RECORDINGS_TABLE_SCHEMA,
    SCHEMAS,
    SEGMENTS_TABLE_SCHEMA,
    TABLES,
    LegacyOutputError,
    OutputError,
    OutputLockedError,
    storage_options,
)

log = logging.getLogger(__name__)

__all__ = [
    "COMMIT_KEY",
    "LOCK_SCHEMA",
    "LOCK_TABLE",
    "MAINTAIN_EVERY_FILES",
    "PLAN_COLUMNS",
    "RECORDINGS_TABLE_SCHEMA",
    "SCHEMAS",
    "SEGMENTS_TABLE_SCHEMA",
    "TABLES",
    "LegacyOutputError",
    "Ledger",
    "OutputError",
    "OutputLockedError",
    "RunLock",
    "input_changed",
    "maintain",
    "read_output",
    "storage_options",
    "write_id_for",
]
