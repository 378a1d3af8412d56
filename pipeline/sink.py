"""Delta sink: each Ray write task commits its block of recordings exactly once (pipeline/ledger.py).

`write()` runs per block on a worker: it flattens the nested per-recording rows into the
`segments` and `recordings` tables (schemas in pipeline/records.py and pipeline/ledger.py), then
commits `segments` and, last, `recordings`, each as one Delta transaction that replaces every older
row of the block's recordings. It returns a small summary that `on_write_complete` adds up on the
driver for the run report. Committing per block (Ray's own `write_delta` commits once at the end)
is what makes a crash cost minutes, not the run.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import pyarrow as pa
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import Datasink, WriteResult

from pipeline.config import OutputConfig
from pipeline.ledger import RECORDINGS_TABLE_SCHEMA, SEGMENTS_TABLE_SCHEMA, Ledger, write_id_for
from pipeline.records import RECORDINGS_SCHEMA, peak_rss_mb


def flatten(table: pa.Table, fingerprint: str, run_id: str = "", write_id: str = "") -> tuple[pa.Table, pa.Table]:
    """Per-recording rows with nested segments -> (segments table, recordings table), as committed."""
    seg_rows: list[dict[str, Any]] = []
    rec_rows: list[dict[str, Any]] = []
    now = time.time()
    for row in table.to_pylist():
        segs = row.get("segments") or []
        for s in segs:
            seg_rows.append({"recording_id": row["recording_id"], "uri": row["uri"], **s, "fingerprint": fingerprint,
                             "write_id": write_id})
        rec = {name: row.get(name) for name in RECORDINGS_SCHEMA.names}
        rec.update(num_segments=len(segs), fingerprint=fingerprint, mtime=row.get("mtime"), run_id=run_id,
                   write_id=write_id, committed_at=int(now * 1e6))
        rec_rows.append(rec)
    return (
        pa.Table.from_pylist(seg_rows, schema=SEGMENTS_TABLE_SCHEMA),
        pa.Table.from_pylist(rec_rows, schema=RECORDINGS_TABLE_SCHEMA),
    )


def _summary(table: pa.Table) -> dict[str, Any]:
    rows = table.select(
        ["status", "duration", "asr_audio_seconds", "asr_padded_seconds", "asr_wall_seconds", "punctuated", "uri", "error",
         "recording_wall_seconds", "recording_peak_rss_mb", "segment_peak_rss_mb", "decode_wall_seconds",
         "decode_peak_rss_mb"] + [c for c in ("vocabulary_hits", "vocabulary_warning") if c in table.column_names]
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
        "vocabulary_hits": sum(r.get("vocabulary_hits") or 0 for r in rows),
        "vocabulary_warnings": sorted({r["vocabulary_warning"] for r in rows if r.get("vocabulary_warning")}),
        "errors": errors,
    }


class TranscriptSink(Datasink[dict]):
    def __init__(self, cfg: OutputConfig, run_id: str, fingerprint: str):
        self.cfg, self.run_id, self.fingerprint = cfg, run_id, fingerprint
        self.summaries: list[dict] = []

    def get_name(self) -> str:
        return "Transcripts"

    def on_write_start(self, schema=None) -> None:
        """Create both tables once, in the driver, so parallel write tasks never race to create them."""
        led = Ledger(self.cfg)
        for name in ("segments", "recordings"):
            led.ensure(name)

    def write(self, blocks: Iterable[Block], ctx) -> dict:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return {"status": {}, "errors": [], "audio_seconds": 0.0}
        table = pa.concat_tables(tables)
        ids = table.column("recording_id").to_pylist()
        write_id = write_id_for(self.run_id, ids)
        segments, recordings = flatten(table, self.fingerprint, self.run_id, write_id)
        ledger = Ledger(self.cfg)
        _commit(ledger, "segments", segments, ids, write_id)
        _commit(ledger, "recordings", recordings, ids, write_id)  # last: the commit the next run trusts
        return _summary(table)

    def on_write_complete(self, write_result: WriteResult[dict]) -> None:
        self.summaries = list(write_result.write_returns)


def _commit(ledger: Ledger, name: str, rows: pa.Table, ids: list[str], write_id: str) -> bool:
    """One Delta transaction on table `name` (a seam: tests hold a task between its two commits here)."""
    return ledger.commit_table(name, rows, ids, write_id)
