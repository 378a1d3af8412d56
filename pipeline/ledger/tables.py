"""What the output's Delta tables hold and how to reach them: names, schemas and keys, the errors an
unusable output raises, delta-rs storage options, and the bounded retry every commit goes through
(`retry_commit`: `pipeline.errors.with_retries` with more attempts)."""

from __future__ import annotations

import os
from typing import Callable, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import OutputConfig
from pipeline.errors import UserError, with_retries
from pipeline.records import RECORDINGS_SCHEMA, SEGMENTS_SCHEMA

T = TypeVar("T")

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
#: Attempts at one commit (`retry_commit`).
COMMIT_ATTEMPTS = 12


class OutputError(UserError, RuntimeError):
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


def retry_commit(fn: Callable[[], T]) -> T:
    """`with_retries` for a whole read-check-commit attempt: a commit may lose races to every other
    write task, so it gets more attempts than a read, and jittered waits so that racers spread out."""
    return with_retries(fn, COMMIT_ATTEMPTS, wait_s=0.1, max_wait_s=4.0, jitter=True)


def in_predicate(column: str, values) -> str:
    """A delta-rs SQL predicate `column IN ('a','b',...)`: each value quoted (a ' doubled), once, sorted."""
    quoted = ",".join("'" + str(v).replace("'", "''") + "'" for v in sorted(set(values)))
    return f"{column} IN ({quoted})"


def _key_in(t: pa.Table, committed: pa.Table) -> pa.Array:
    """Boolean mask: which rows of `t` have a COMMIT_KEY present in `committed`."""

    def key(x: pa.Table) -> pa.Array:
        return pc.binary_join_element_wise(*[pc.fill_null(x.column(c), "") for c in COMMIT_KEY], "\x1f")

    if committed.num_rows == 0:
        return pa.array([False] * t.num_rows, pa.bool_())
    return pc.is_in(key(t), value_set=key(committed))
