"""Parquet sink: each Ray write task commits its recordings exactly once (see pipeline/ledger.py).

`write()` runs per block on a worker: it flattens the nested per-recording rows into the
`segments` and `recordings` tables (schemas in pipeline/records.py), writes both Parquet files under
a unique part name, then PUTs the commit record last. It returns a small summary that
`on_write_complete` adds up on the driver for the run report. Committing per block (rather than
once at the end, as Ray's Iceberg sink does) is what makes a crash cost minutes, not the run.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import Datasink, WriteResult

from pipeline.config import OutputConfig
from pipeline.ledger import COMMITS, Ledger
from pipeline.records import RECORDINGS_SCHEMA, SEGMENTS_SCHEMA, peak_rss_mb
from pipeline.storage import put_atomic, with_retries


def flatten(table: pa.Table, fingerprint: str) -> tuple[pa.Table, pa.Table]:
    """Per-recording rows with nested segments -> (segments table, recordings table)."""
    seg_rows: list[dict[str, Any]] = []
    rec_rows: list[dict[str, Any]] = []
    for row in table.to_pylist():
        segs = row.get("segments") or []
        for s in segs:
            seg_rows.append({"recording_id": row["recording_id"], "uri": row["uri"], **s, "fingerprint": fingerprint})
        rec = {name: row.get(name) for name in RECORDINGS_SCHEMA.names}
        rec.update(num_segments=len(segs), fingerprint=fingerprint)
        rec_rows.append(rec)
    return (
        pa.Table.from_pylist(seg_rows, schema=SEGMENTS_SCHEMA),
        pa.Table.from_pylist(rec_rows, schema=RECORDINGS_SCHEMA),
    )


def _summary(table: pa.Table) -> dict[str, Any]:
    rows = table.select(
        ["status", "duration", "asr_audio_seconds", "asr_padded_seconds", "asr_wall_seconds", "punctuated", "uri", "error",
         "recording_wall_seconds", "recording_peak_rss_mb", "segment_peak_rss_mb", "decode_wall_seconds",
         "decode_peak_rss_mb"]
    ).to_pylist()
    errors = [{"uri": r["uri"], "error": r["error"]} for r in rows if r["status"] == "error"]
    return {
        "status": {s: sum(1 for r in rows if r["status"] == s) for s in ("ok", "no_speech", "error")},
        "audio_seconds": sum(r["duration"] or 0.0 for r in rows),
        "asr_audio_seconds": sum(r["asr_audio_seconds"] or 0.0 for r in rows),
        "asr_padded_seconds": sum(r["asr_padded_seconds"] or 0.0 for r in rows),
        "asr_wall_seconds": sum(r["asr_wall_seconds"] or 0.0 for r in rows),
        "recording_wall_seconds": sum(r["recording_wall_seconds"] or 0.0 for r in rows),
        "decode_wall_seconds": sum(r["decode_wall_seconds"] or 0.0 for r in rows),
        "decode_peak_rss_mb": max((r["decode_peak_rss_mb"] or 0.0 for r in rows), default=0.0),
        "recording_peak_rss_mb": max((r["recording_peak_rss_mb"] or 0.0 for r in rows), default=0.0),
        "segment_peak_rss_mb": max((r["segment_peak_rss_mb"] or 0.0 for r in rows), default=0.0),
        "write_peak_rss_mb": peak_rss_mb(),
        "unpunctuated": sum(1 for r in rows if r["punctuated"] is False),
        "errors": errors,
    }


class TranscriptSink(Datasink[dict]):
    def __init__(self, cfg: OutputConfig, run_id: str, fingerprint: str):
        self.cfg, self.run_id, self.fingerprint = cfg, run_id, fingerprint
        self.summaries: list[dict] = []

    def get_name(self) -> str:
        return "Transcripts"

    def write(self, blocks: Iterable[Block], ctx) -> dict:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return {"status": {}, "errors": [], "audio_seconds": 0.0}
        table = pa.concat_tables(tables)
        segments, recordings = flatten(table, self.fingerprint)
        part = f"{self.run_id}-{ctx.task_idx:05d}-{uuid.uuid4().hex[:8]}"
        ledger = Ledger(self.cfg)
        _put_parquet(ledger, f"segments/part-{part}.parquet", segments)
        _put_parquet(ledger, f"recordings/part-{part}.parquet", recordings)
        mtimes = table.column("mtime").to_pylist() if "mtime" in table.column_names else [None] * table.num_rows
        commit = {
            "part": part,
            "run_id": self.run_id,
            "committed_at": time.time(),
            "recordings": [
                {
                    **{k: r[k] for k in ("recording_id", "uri", "size", "etag", "status", "fingerprint")},
                    "mtime": mtime,
                    "error": (r["error"] or "")[:500] or None,
                }
                for r, mtime in zip(recordings.to_pylist(), mtimes)
            ],
        }
        body = json.dumps(commit).encode()
        with_retries(lambda: put_atomic(ledger.fs, ledger.path(COMMITS, f"{part}.json"), body))
        return _summary(table)

    def on_write_complete(self, write_result: WriteResult[dict]) -> None:
        self.summaries = list(write_result.write_returns)
        # Every write succeeded: drop superseded rows (changed inputs, retried write tasks) and the
        # leftovers of failed attempts now, so plain Parquet readers see the clean output at once.
        try:
            Ledger(self.cfg).remove_orphans()
        except Exception:  # noqa: BLE001 - the data is committed; the next run cleans up again
            import logging

            logging.getLogger(__name__).exception("post-run ledger cleanup failed; the next run retries it")


def _put_parquet(ledger: Ledger, rel: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    with_retries(lambda: put_atomic(ledger.fs, ledger.path(rel), data))
