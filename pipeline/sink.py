"""Delta sink: each Ray write task commits its block of recordings exactly once (pipeline/ledger/).

`write()` runs per block on a worker: it flattens the nested per-recording rows into the
`segments` and `recordings` tables (schemas in pipeline/records.py and pipeline/ledger/tables.py), then
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
from pipeline.engine import add_progress
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
         "decode_peak_rss_mb"]
        + [c for c in ("vocabulary_hits", "vocabulary_warning", "models") if c in table.column_names]
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
        "models": sorted({r["models"] for r in rows if r.get("models")}),  # provenance, for the report
        "errors": errors,
        **_segment_summary(table),
    }


def _segment_summary(table: pa.Table) -> dict[str, Any]:
    """What the report says about the segments: accepted/rejected counts and hours, rejections by
    reason, languages, speakers per recording, a confidence histogram, the slowest recordings."""
    accepted = rejected = 0
    accepted_s = rejected_s = 0.0
    reasons: dict[str, int] = {}
    languages: dict[str, float] = {}
    confidence = [0] * 10  # ten bins over [0, 1]
    speakers: dict[str, int] = {}
    overlap_s, overlap_files = 0.0, 0
    cols = ["segments", "num_speakers"] + [c for c in ("overlap_seconds",) if c in table.column_names]
    for row in table.select(cols).to_pylist():
        n = row["num_speakers"]
        if n is not None:
            speakers[str(n)] = speakers.get(str(n), 0) + 1
        if row.get("overlap_seconds"):  # null where the diarization backend cannot tell
            overlap_s, overlap_files = overlap_s + row["overlap_seconds"], overlap_files + 1
        for seg in row["segments"] or []:
            length = max(0.0, (seg["end"] or 0.0) - (seg["start"] or 0.0))
            if seg["accepted"]:
                accepted, accepted_s = accepted + 1, accepted_s + length
            else:
                rejected, rejected_s = rejected + 1, rejected_s + length
                for reason in seg["reject_reasons"] or []:
                    reasons[reason] = reasons.get(reason, 0) + 1
            if seg["language"]:
                languages[seg["language"]] = languages.get(seg["language"], 0.0) + length
            if seg["confidence"] is not None:
                confidence[min(9, max(0, int(seg["confidence"] * 10)))] += 1
    slowest = sorted(
        ({"uri": r["uri"], "duration": r["duration"] or 0.0,
          "seconds": (r["decode_wall_seconds"] or 0.0) + (r["recording_wall_seconds"] or 0.0) + (r["asr_wall_seconds"] or 0.0)}
         for r in table.select(["uri", "duration", "decode_wall_seconds", "recording_wall_seconds", "asr_wall_seconds"]).to_pylist()),
        key=lambda r: -r["seconds"],
    )[:10]
    return {
        "accepted_segments": accepted, "rejected_segments": rejected,
        "accepted_seconds": accepted_s, "rejected_seconds": rejected_s,
        "reject_reasons": reasons, "language_seconds": languages, "speakers_per_recording": speakers,
        "overlap_seconds": overlap_s, "overlap_recordings": overlap_files,
        "confidence_histogram": confidence, "slowest": slowest,
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
        summary = _summary(table)
        add_progress("committed", table.num_rows, summary["audio_seconds"])  # a no-op outside a running Ray
        return summary

    def on_write_complete(self, write_result: WriteResult[dict]) -> None:
        self.summaries = list(write_result.write_returns)


def _commit(ledger: Ledger, name: str, rows: pa.Table, ids: list[str], write_id: str) -> bool:
    """One Delta transaction on table `name` (a seam: tests hold a task between its two commits here)."""
    return ledger.commit_table(name, rows, ids, write_id)
