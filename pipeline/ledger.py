"""The output ledger: which recordings are committed, from which input version, by which pipeline.

Layout under `output.uri` (the commit protocol, also in README "Output layout"):

    segments/part-<P>.parquet      rows of the recordings committed by part P
    recordings/part-<P>.parquet    one row per recording of part P
    _ledger/commits/<P>.json       the commit: written LAST, one object PUT (atomic on S3 and local)

Protocol:
1. A write task writes both data files of part P (each one atomic PUT / temp file + rename), then
   PUTs `_ledger/commits/<P>.json` listing P's recordings and the input version each was read from
   (size, etag, mtime) and the pipeline fingerprint. A part is committed iff its commit file exists.
2. The newest commit of a recording wins (order: run start time, then commit time). Recordings are
   re-committed when their input changed or the fingerprint changed, and by a retried write task.
3. Cleanup (start of every run, and at the end of a successful one): data files of parts without a
   commit (a crash between data and commit) are deleted; parts holding superseded recordings are
   rewritten without them (data files first, then the commit; a fully superseded part loses its
   commit first, then its files). After cleanup, a plain reader of `segments/*.parquet` sees
   exactly what `read_output` sees: every recording once, in its newest version.
Readers that cannot wait for cleanup read the commit files and only the parts they name, keeping
each recording's rows from its newest commit only (that is `read_output`). One job writes an output at
a time (a second concurrent run could delete the first one's not-yet-committed files).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, fields
from typing import Any

from pipeline.config import OutputConfig
from pipeline.records import InputFile
from pipeline.storage import filesystem, put_atomic, with_retries

log = logging.getLogger(__name__)

COMMITS = "_ledger/commits"
TABLES = ("segments", "recordings")


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
    mtime: float | None = None
    error: str | None = None
    run_id: str | None = None


_ENTRY_FIELDS = {f.name for f in fields(Entry)}


def commit_order(c: dict[str, Any]) -> tuple:
    """Newest last. Run ids start with the driver's UTC start time (YYYYmmddTHHMMSS), so a later run
    wins over an earlier one whatever the worker clocks say; within a run, the later commit wins."""
    return (str(c.get("run_id") or c["part"])[:15], c["committed_at"], c["part"])


def input_changed(e: Entry, f: InputFile) -> bool:
    """Did the object change since it was committed? Size always; the etag where both sides have
    one (S3); else the modification time (local disks, stores without etags)."""
    if e.size != f.size:
        return True
    if e.etag and f.etag:
        return e.etag != f.etag
    if e.mtime is not None and f.mtime is not None:
        return abs(e.mtime - f.mtime) > 1e-6
    return False


class Ledger:
    def __init__(self, cfg: OutputConfig):
        self.cfg = cfg
        self.fs, self.root = filesystem(cfg.uri, cfg.storage)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def _ls(self, folder: str) -> list[str]:
        """Fresh listing (s3fs caches listings per process: a stale one would hide new commits and
        make committed parts look orphaned). Missing folder -> []."""
        self.fs.invalidate_cache(folder)
        try:
            return list(with_retries(lambda: self.fs.ls(folder, detail=False, refresh=True)))
        except FileNotFoundError:
            return []

    def commits(self) -> list[dict[str, Any]]:
        """Every commit record, oldest first (see `commit_order`)."""
        paths = sorted(p for p in self._ls(self.path(COMMITS)) if p.endswith(".json"))
        records = []
        for p in paths:
            try:
                records.append(json.loads(with_retries(lambda p=p: self.fs.cat_file(p))))
            except FileNotFoundError:  # removed by a concurrent cleanup between list and read
                continue
        records.sort(key=commit_order)
        return records

    def entries(self, commits: list[dict[str, Any]] | None = None) -> dict[str, Entry]:
        """Newest committed entry per recording_id."""
        out: dict[str, Entry] = {}
        for c in commits if commits is not None else self.commits():
            for r in c["recordings"]:
                kw = {k: v for k, v in r.items() if k in _ENTRY_FIELDS}
                out[r["recording_id"]] = Entry(**{**kw, "part": c["part"], "committed_at": c["committed_at"],
                                                  "run_id": c.get("run_id")})
        return out

    def plan(self, files: list[InputFile], fingerprint: str) -> tuple[list[InputFile], dict[str, int]]:
        """Inputs - committed work. Returns (todo, counts of new/changed/skipped/retry_failed).

        A committed recording is skipped when its input is unchanged (`input_changed`) and it was
        made by the same pipeline fingerprint. Recordings that ended in "error" are retried on every
        run. Nothing is downloaded: this compares listing metadata with the ledger."""
        done = self.entries()
        todo: list[InputFile] = []
        counts = {"new": 0, "changed": 0, "skipped": 0, "retry_failed": 0}
        for f in files:
            e = done.get(f.recording_id)
            if e is None:
                counts["new"] += 1
            elif e.status == "error":
                counts["retry_failed"] += 1
            elif input_changed(e, f) or e.fingerprint != fingerprint:
                counts["changed"] += 1
            else:
                counts["skipped"] += 1
                continue
            todo.append(f)
        return todo, counts

    # -- cleanup --------------------------------------------------------------------------------
    def remove_orphans(self) -> int:
        """Cleanup (see the module docstring): delete uncommitted data files and temp files, and
        rewrite parts that hold superseded recordings. Idempotent; safe to interrupt at any point.
        Returns the number of files deleted or rewritten."""
        commits = self.commits()
        n = self._compact(commits)
        committed = {c["part"] for c in self.commits()} if n else {c["part"] for c in commits}
        for folder in TABLES:
            for p in self._ls(self.path(folder)):
                name = p.rsplit("/", 1)[-1]
                orphan = name.startswith("part-") and name.endswith(".parquet") and name[5:-8] not in committed
                if orphan or name.startswith(".tmp-"):
                    self._rm(p)
                    n += 1
        for p in self._ls(self.path(COMMITS)):
            if p.rsplit("/", 1)[-1].startswith(".tmp-"):
                self._rm(p)
        return n

    def _rm(self, p: str) -> None:
        try:
            with_retries(lambda: self.fs.rm(p))
        except FileNotFoundError:
            pass

    def _compact(self, commits: list[dict[str, Any]]) -> int:
        latest = {rid: e.part for rid, e in self.entries(commits).items()}
        changed = 0
        for c in commits:
            keep = [r for r in c["recordings"] if latest.get(r["recording_id"]) == c["part"]]
            if len(keep) == len(c["recordings"]):
                continue
            part = c["part"]
            commit_path = self.path(COMMITS, f"{part}.json")
            if not keep:  # fully superseded: uncommit first, the data files are then plain orphans
                self._rm(commit_path)
                log.info("part %s fully superseded: uncommitted", part)
                changed += 1
                continue
            ids = {r["recording_id"] for r in keep}
            for table in TABLES:
                self._rewrite(self.path(table, f"part-{part}.parquet"), ids)
            body = json.dumps({**c, "recordings": keep}).encode()
            with_retries(lambda: put_atomic(self.fs, commit_path, body))
            log.info("part %s: %d superseded recordings dropped", part, len(c["recordings"]) - len(keep))
            changed += 1
        return changed

    def _rewrite(self, path: str, keep_ids: set[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        t = with_retries(lambda: pq.read_table(io.BytesIO(self.fs.cat_file(path))))
        mask = pa.array([rid in keep_ids for rid in t.column("recording_id").to_pylist()], pa.bool_())
        if mask.false_count == 0:
            return
        buf = io.BytesIO()
        pq.write_table(t.filter(mask), buf, compression="zstd")
        data = buf.getvalue()
        with_retries(lambda: put_atomic(self.fs, path, data))


def read_output(cfg: OutputConfig, table: str = "segments"):
    """Committed rows of `segments` or `recordings` as one pyarrow Table (newest commit wins)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ledger = Ledger(cfg)
    commits = ledger.commits()
    latest = {rid: e.part for rid, e in ledger.entries(commits).items()}
    tables = []
    for c in commits:
        mine = {r["recording_id"] for r in c["recordings"] if latest.get(r["recording_id"]) == c["part"]}
        if not mine:
            continue
        path = ledger.path(table, f"part-{c['part']}.parquet")
        t = with_retries(lambda path=path: pq.read_table(io.BytesIO(ledger.fs.cat_file(path))))
        keep = pa.array([rid in mine for rid in t.column("recording_id").to_pylist()], pa.bool_())
        tables.append(t.filter(keep))
    if not tables:
        from pipeline.records import RECORDINGS_SCHEMA, SEGMENTS_SCHEMA

        return (SEGMENTS_SCHEMA if table == "segments" else RECORDINGS_SCHEMA).empty_table()
    return pa.concat_tables(tables)
