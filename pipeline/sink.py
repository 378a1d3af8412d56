"""Delta sink: each Ray write task commits its block of recordings exactly once (pipeline/ledger/).

`write()` runs per block on a worker: it flattens the nested per-recording rows into the
`segments` and `recordings` tables (schemas in pipeline/records.py and pipeline/ledger/tables.py), then
commits `segments` and, last, `recordings`, each as one Delta transaction that replaces every older
row of the block's recordings. It returns a small summary that `on_write_complete` adds up on the
driver for the run report. Committing per block (Ray's own `write_delta` commits once at the end)
is what makes a crash cost minutes, not the run.

A long recording arrives as pieces (pipeline/pieces.py). Its pieces are staged under `_pieces/` until
the last one is in; the write task that completes it joins them and commits the recording once, with
its block: a reader never sees part of a recording.
"""

from __future__ import annotations

import io
import time
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import Datasink, WriteResult

from pipeline.config import DiarizationConfig, OutputConfig
from pipeline.engine import add_progress
from pipeline.ledger import RECORDINGS_TABLE_SCHEMA, SEGMENTS_TABLE_SCHEMA, Ledger, write_id_for
from pipeline.pieces import PieceRegistry, join
from pipeline.records import RECORDINGS_SCHEMA, peak_rss_mb
from pipeline.storage import put_atomic, with_retries

#: Where the sink stages the pieces of long recordings until each recording is whole (pipeline/pieces.py).
PIECES_DIR = "_pieces"


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
    def __init__(self, cfg: OutputConfig, run_id: str, fingerprint: str, diarization: DiarizationConfig | None = None,
                 state: Any = None):
        """`diarization`: the job's, to match the speakers of a long recording's pieces (pipeline/pieces.py).
        `state`: the run's `engine.RunState` actor, the piece registry that commits are counted to;
        without one, nothing is counted and the sink starts a PieceRegistry actor of its own."""
        self.cfg, self.run_id, self.fingerprint = cfg, run_id, fingerprint
        self.diarization = diarization if diarization is not None and diarization.enabled else None
        self.summaries: list[dict] = []
        self.progress = self.registry = state
        self.own_registry = False  # started in on_write_start: killed in on_write_complete

    def get_name(self) -> str:
        return "Transcripts"

    def on_write_start(self, schema=None) -> None:
        """Create both tables once, in the driver, so parallel write tasks never race to create them;
        start the run's piece registry, and drop pieces staged by a run that died (the output's lock
        says no other run is writing)."""
        import ray

        led = Ledger(self.cfg)
        for name in ("segments", "recordings"):
            led.ensure(name)
        _clear_pieces(led)
        # the handle travels with the sink to the write tasks (and keeps the actor alive until the end)
        if self.registry is None:
            self.registry, self.own_registry = ray.remote(num_cpus=0)(PieceRegistry).remote(), True

    def write(self, blocks: Iterable[Block], ctx) -> dict:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        table = self._join_pieces(pa.concat_tables(tables)) if tables else None
        if table is None or not table.num_rows:  # nothing, or only pieces of recordings not yet whole
            return {"status": {}, "errors": [], "audio_seconds": 0.0}
        ids = table.column("recording_id").to_pylist()
        write_id = write_id_for(self.run_id, ids)
        segments, recordings = flatten(table, self.fingerprint, self.run_id, write_id)
        ledger = Ledger(self.cfg)
        _commit(ledger, "segments", segments, ids, write_id)
        _commit(ledger, "recordings", recordings, ids, write_id)  # last: the commit the next run trusts
        summary = _summary(table)
        add_progress(self.progress, "committed", table.num_rows, summary["audio_seconds"])  # no-op without a run
        return summary

    def on_write_complete(self, write_result: WriteResult[dict]) -> None:
        import ray

        self.summaries = list(write_result.write_returns)
        if self.own_registry:
            ray.kill(self.registry)
            self.registry, self.own_registry = None, False
        _clear_pieces(Ledger(self.cfg))

    def _join_pieces(self, table: pa.Table) -> pa.Table:
        """The block's whole recordings, plus every long recording that one of its pieces completes.

        Each piece is staged (a one-row Parquet file under `_pieces/`) before the run's registry is
        told; the task whose piece completes a recording reads them all back and joins them into one
        row (pipeline/pieces.py `join`), which is then committed like a short recording's."""
        if "piece" not in table.column_names or table.column("piece").null_count == table.num_rows:
            return table
        import ray

        is_piece = pc.is_valid(table.column("piece"))
        pieces, whole = table.filter(is_piece), table.filter(pc.invert(is_piece))
        led = Ledger(self.cfg)
        registry = self.registry
        done = []
        for i in range(pieces.num_rows):
            one = pieces.slice(i, 1)
            rid, k, last = (one.column(c)[0].as_py() for c in ("recording_id", "piece", "last_piece"))
            folder = led.path(PIECES_DIR, self.run_id, rid)
            body = _parquet_bytes(one)
            with_retries(lambda: put_atomic(led.fs, f"{folder}/{k:06d}.parquet", body))
            if ray.get(registry.add_piece.remote(rid, k, bool(last))):
                done.append(folder)
        joined = []
        for folder in done:
            files = sorted(with_retries(lambda: led.fs.ls(folder, detail=False)))
            rows = [r for f in files for r in pq.read_table(io.BytesIO(with_retries(lambda: led.fs.cat_file(f)))).to_pylist()]
            joined.append(join(rows, self.diarization))
        if joined:
            whole = pa.concat_tables([whole, pa.Table.from_pylist(joined, schema=table.schema)])
        return whole


def _clear_pieces(led: Ledger) -> None:
    """Remove everything staged under `_pieces/` (at a run's start: a dead run's; at its end: its own)."""
    folder = led.path(PIECES_DIR)
    with_retries(lambda: led.fs.rm(folder, recursive=True) if led.fs.exists(folder) else None)


def _parquet_bytes(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def _commit(ledger: Ledger, name: str, rows: pa.Table, ids: list[str], write_id: str) -> bool:
    """One Delta transaction on table `name` (a seam: tests hold a task between its two commits here)."""
    return ledger.commit_table(name, rows, ids, write_id)
