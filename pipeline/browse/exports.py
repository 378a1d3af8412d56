"""Exports of a hand-picked selection of segments: CSV, a NeMo manifest, Lhotse cuts (the same lines and
cuts `scriptorium export` writes, from the same committed rows)."""

from __future__ import annotations

import csv
import io
import tempfile
from collections import defaultdict
from pathlib import Path

import pyarrow.compute as pc

from pipeline.config import OutputConfig
from pipeline.export import ExportError, lhotse_recording, nemo_line
from pipeline.export.cuts import _cut  # the export's own segment -> cut, so a selection's cuts are the export's
from pipeline.ledger import COMMIT_KEY, Ledger
from pipeline.ledger.tables import _key_in

FORMATS = ("csv", "nemo", "lhotse")
#: Most segments one export of the page may hold (the whole output is `scriptorium export`'s job).
MAX_SEGMENTS = 100_000
CSV_COLUMNS = ["uri", "recording_id", "segment_index", "start", "end", "speaker", "language", "confidence", "accepted"]


def selected_segments(cfg: OutputConfig, pairs: list[tuple[str, int]]) -> list[dict]:
    """The committed segment rows of (recording_id, segment_index) pairs, in the order given (unknown ones left out)."""
    if len(pairs) > MAX_SEGMENTS:
        raise ExportError(f"{len(pairs)} segments selected: at most {MAX_SEGMENTS} (use `scriptorium export`)")
    led = Ledger(cfg)
    seg_table, rec_table = led.table("segments"), led.table("recordings")
    if seg_table is None or rec_table is None or not pairs:
        return []
    ids = sorted({rid for rid, _ in pairs})
    seg = seg_table.to_pyarrow_dataset().to_table(filter=pc.field("recording_id").isin(ids))
    recs = rec_table.to_pyarrow_dataset().to_table(
        filter=pc.field("recording_id").isin(ids), columns=[*COMMIT_KEY, "uri"]
    )
    seg = seg.filter(_key_in(seg, recs.select(COMMIT_KEY)))
    rows = {(r["recording_id"], r["segment_index"]): r for r in seg.to_pylist()}
    return [rows[p] for p in pairs if p in rows]


#: What a spreadsheet reads as the start of a formula (OWASP, "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula, defused with a leading apostrophe: a
    transcript or a file name is data, and a selection is opened in Excel or Sheets by whoever asked."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([*CSV_COLUMNS, "text"])
    for r in rows:
        w.writerow([_cell(v) for v in (*(r[c] for c in CSV_COLUMNS), r["text"])])
    return out.getvalue().encode("utf-8")


def to_nemo(rows: list[dict]) -> bytes:
    lines = [nemo_line(s, s["uri"], s["start"], round(s["end"] - s["start"], 3)) for s in rows]
    return ("\n".join(lines) + ("\n" if lines else "")).encode("ascii")


def to_lhotse(cfg: OutputConfig, rows: list[dict]) -> bytes:
    """cuts.jsonl.gz of the selection (each recording probed once, as the export does)."""
    from lhotse import CutSet  # heavy: Lhotse takes seconds to import

    by_rec: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_rec[r["recording_id"]].append(r)
    with tempfile.TemporaryDirectory(prefix="scriptorium-browse-") as tmp:
        path = Path(tmp) / "cuts.jsonl.gz"
        with CutSet.open_writer(path) as w:
            for rid, segs in by_rec.items():
                rec = lhotse_recording({"recording_id": rid, "uri": segs[0]["uri"]}, cfg.storage, tmp)
                for s in segs:
                    cut = _cut(rec, s)
                    if cut is not None:
                        w.write(cut)
        return path.read_bytes()


def export_selection(cfg: OutputConfig, fmt: str, pairs: list[tuple[str, int]]) -> tuple[bytes, str, str]:
    """(body, media type, file name) of the selection in `fmt`."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: {' | '.join(FORMATS)}")
    rows = selected_segments(cfg, pairs)
    if fmt == "csv":
        return to_csv(rows), "text/csv; charset=utf-8", "segments.csv"
    if fmt == "nemo":
        return to_nemo(rows), "application/jsonl", "manifest.jsonl"
    return to_lhotse(cfg, rows), "application/gzip", "cuts.jsonl.gz"
