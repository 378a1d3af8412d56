"""The output ledger: which recordings are committed, from which input version, by which pipeline.

Layout under `output.uri` (the commit protocol, also in README "Output layout"):

    segments/part-<P>.parquet      rows of the recordings committed by part P
    recordings/part-<P>.parquet    one row per recording of part P
    _ledger/commits/<P>.json       the commit: written LAST, one object PUT (atomic on S3 and local)

A part is committed iff its commit file exists. Readers (`read_output`) read only committed parts;
a crash between the data files and the commit leaves orphans that no reader sees and that the next
run deletes. A recording re-processed later (input changed, pipeline fingerprint changed) is
committed again in a newer part; the newest commit of a recording wins, older rows are superseded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipeline.config import OutputConfig
from pipeline.records import InputFile
from pipeline.storage import filesystem, with_retries

COMMITS = "_ledger/commits"


@dataclass(frozen=True)
class Entry:
    recording_id: str
    uri: str
    size: int
    etag: str | None
    status: str
    fingerprint: str
    part: str
    committed_at: float


class Ledger:
    def __init__(self, cfg: OutputConfig):
        self.cfg = cfg
        self.fs, self.root = filesystem(cfg.uri, cfg.storage)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def commits(self) -> list[dict[str, Any]]:
        """Every commit record, oldest first."""
        folder = self.path(COMMITS)
        if not with_retries(lambda: self.fs.exists(folder)):
            return []
        paths = sorted(p for p in with_retries(lambda: self.fs.ls(folder, detail=False)) if p.endswith(".json"))
        records = []
        for p in paths:
            records.append(json.loads(with_retries(lambda p=p: self.fs.cat_file(p))))
        records.sort(key=lambda c: (c["committed_at"], c["part"]))
        return records

    def entries(self, commits: list[dict[str, Any]] | None = None) -> dict[str, Entry]:
        """Newest committed entry per recording_id."""
        out: dict[str, Entry] = {}
        for c in commits if commits is not None else self.commits():
            for r in c["recordings"]:
                out[r["recording_id"]] = Entry(part=c["part"], committed_at=c["committed_at"], **r)
        return out

    def plan(self, files: list[InputFile], fingerprint: str) -> tuple[list[InputFile], dict[str, int]]:
        """Inputs - committed work. Returns (todo, counts of new/changed/skipped/retry_failed).

        A committed recording is skipped when its input is unchanged (size + etag, or size alone
        where the store has no etag) and it was made by the same pipeline fingerprint. Recordings
        that ended in "error" are retried on every run."""
        done = self.entries()
        todo: list[InputFile] = []
        counts = {"new": 0, "changed": 0, "skipped": 0, "retry_failed": 0}
        for f in files:
            e = done.get(f.recording_id)
            if e is None:
                counts["new"] += 1
            elif e.status == "error":
                counts["retry_failed"] += 1
            elif e.size != f.size or (e.etag or None) != (f.etag or None) or e.fingerprint != fingerprint:
                counts["changed"] += 1
            else:
                counts["skipped"] += 1
                continue
            todo.append(f)
        return todo, counts

    def remove_orphans(self) -> int:
        """Delete data files of parts that never committed (a crash between data and commit)."""
        committed = {c["part"] for c in self.commits()}
        removed = 0
        for folder in ("segments", "recordings"):
            d = self.path(folder)
            if not with_retries(lambda d=d: self.fs.exists(d)):
                continue
            for p in with_retries(lambda d=d: self.fs.ls(d, detail=False)):
                name = p.rsplit("/", 1)[-1]
                if name.startswith("part-") and name[5:-8] not in committed:
                    with_retries(lambda p=p: self.fs.rm(p))
                    removed += 1
        return removed


def read_output(cfg: OutputConfig, table: str = "segments"):
    """Committed rows of `segments` or `recordings` as one pyarrow Table (newest commit wins)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ledger = Ledger(cfg)
    commits = ledger.commits()
    latest = {rid: e.part for rid, e in ledger.entries(commits).items()}
    tables = []
    for c in commits:
        path = ledger.path(table, f"part-{c['part']}.parquet")
        t = with_retries(lambda path=path: pq.read_table(ledger.fs.open(path, "rb")))
        keep = pa.array([latest.get(rid) == c["part"] for rid in t.column("recording_id").to_pylist()], pa.bool_())
        tables.append(t.filter(keep))
    if not tables:
        from pipeline.records import RECORDINGS_SCHEMA, SEGMENTS_SCHEMA

        return (SEGMENTS_SCHEMA if table == "segments" else RECORDINGS_SCHEMA).empty_table()
    return pa.concat_tables(tables)
