"""What an export reads: only committed rows, streamed a chunk of recordings at a time, and the fields
an input manifest carried (recorded by each run in `_scriptorium/inputs`)."""

from __future__ import annotations

import json
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import OutputConfig
from pipeline.errors import UserError
from pipeline.ledger import COMMIT_KEY, Ledger
from pipeline.ledger.tables import _key_in, in_predicate
from pipeline.records import input_table

#: Most recordings, and most committed segments, read per scan of `segments` (a chunk of 100,000
#: segments is ~50 MB of Arrow): an export's memory is bounded by one chunk. 10 M segments: 100 scans.
CHUNK_RECORDINGS = 20_000
CHUNK_SEGMENTS = 100_000
_REC_COLUMNS = [
    "recording_id",
    "uri",
    "duration",
    "source_sample_rate",
    "source_channels",
    "status",
    "language",
    "fingerprint",
    "write_id",
]


class ExportError(UserError, RuntimeError):
    """The export cannot be made as asked (no such output, nothing to export, destination in use): exit 2."""


# -- fields an input manifest carried (reference text, ...) ------------------------------------------
INPUTS_TABLE = "_scriptorium/inputs"


def record_input_fields(output: OutputConfig, files) -> int:
    """Keep the extra fields of manifest lines (`InputFile.extra`: reference `text`, `lang`, ...) with the
    output, in the Delta table `_scriptorium/inputs` (recording_id, uri, fields as JSON), so exports and
    `eval` carry them. `files`: the listing as a table (`discover_table`) or a list of InputFile. Only
    rows not already recorded as they are now are written (a nightly rerun of an unchanged manifest
    writes nothing), one predicate overwrite per 5,000. Returns how many files carry fields."""
    from deltalake import write_deltalake  # heavy: delta-rs, ~30 MB native, only where a table is opened

    listed = input_table(files)
    rows = (
        listed.filter(pc.is_valid(listed.column("extra")))
        .select(["recording_id", "uri", "extra"])
        .rename_columns(["recording_id", "uri", "fields"])
    )
    if not rows.num_rows:
        return 0
    led = Ledger(output)
    uri = led.table_uri(INPUTS_TABLE)
    dt = led.table(INPUTS_TABLE)
    todo = rows
    if dt is not None:

        def key(t: pa.Table) -> pa.ChunkedArray:
            return pc.binary_join_element_wise(t.column("recording_id"), t.column("uri"), t.column("fields"), "\x1f")

        todo = rows.filter(
            pc.invert(pc.is_in(key(rows), value_set=key(dt.to_pyarrow_table(columns=rows.column_names))))
        )
    for k in range(0, todo.num_rows, 5000):
        part = todo.slice(k, 5000)
        exists = led.table(INPUTS_TABLE) is not None
        write_deltalake(
            uri,
            part,
            mode="overwrite" if exists else "append",
            predicate=in_predicate("recording_id", part.column("recording_id").to_pylist()) if exists else None,
            storage_options=led.options,
        )
    return rows.num_rows


def input_fields(led: Ledger, recording_ids: list[str]) -> dict[str, dict]:
    """recording_id -> the manifest fields recorded for it (empty when none were)."""
    dt = led.table(INPUTS_TABLE)
    if dt is None:
        return {}
    t = dt.to_pyarrow_dataset().to_table(
        filter=pc.field("recording_id").isin(recording_ids), columns=["recording_id", "fields"]
    )
    return {rid: json.loads(f) for rid, f in zip(t.column("recording_id").to_pylist(), t.column("fields").to_pylist())}


# -- reading ---------------------------------------------------------------------------------------
def _open(output: OutputConfig) -> tuple[Ledger, pa.Table]:
    """The output's committed recordings (_REC_COLUMNS + num_segments) as Arrow, in URI order: ~150
    bytes a recording, where a Python dict costs ~1 KB."""
    led = Ledger(output)
    if led.table("recordings") is None or led.table("segments") is None:
        raise ExportError(
            f"no Scriptorium output at {output.uri!r} (no committed recordings/segments tables; is the URI right?)"
        )
    recs = led.read("recordings", [*_REC_COLUMNS, "num_segments"])
    if not recs.num_rows:
        raise ExportError(f"output {output.uri!r} is empty: no recording was committed")
    return led, recs.take(pc.sort_indices(recs, [("uri", "ascending")]))


def _chunks(recs: pa.Table) -> Iterator[pa.Table]:
    """Consecutive slices of `recs` holding at most CHUNK_RECORDINGS recordings and (by their
    committed num_segments) CHUNK_SEGMENTS segments; a recording with more goes alone."""
    counts = pc.fill_null(recs.column("num_segments"), 0).to_numpy().tolist()
    start, segs = 0, 0
    for i, n in enumerate(counts):
        if i > start and (segs + n > CHUNK_SEGMENTS or i - start >= CHUNK_RECORDINGS):
            yield recs.slice(start, i - start)
            start, segs = i, 0
        segs += n
    if recs.num_rows > start:
        yield recs.slice(start, recs.num_rows - start)


def _segments_of(led: Ledger, chunk: pa.Table, accepted: bool) -> tuple[pa.Table, np.ndarray]:
    """One filtered scan of `segments`: the chunk's committed segments with text (and accepted, if
    asked), ordered by (the recording's place in the chunk, start, segment_index); with that place."""
    flt = pc.field("recording_id").isin(chunk.column("recording_id"))
    if accepted:
        flt = flt & (pc.field("accepted") == True)  # noqa: E712 - an Arrow expression
    seg = led.table("segments").to_pyarrow_dataset().to_table(filter=flt)
    has_text = pc.fill_null(pc.not_equal(seg.column("text"), ""), False)
    seg = seg.filter(pc.and_(has_text, _key_in(seg, chunk.select(COMMIT_KEY))))
    place = pc.index_in(seg.column("recording_id"), value_set=chunk.column("recording_id"))
    order = pc.sort_indices(
        pa.table({"place": place, "start": seg.column("start"), "i": seg.column("segment_index")}),
        [("place", "ascending"), ("start", "ascending"), ("i", "ascending")],
    )
    return seg.take(order), pc.take(place, order).to_numpy()


def iter_recordings(
    output: OutputConfig, accepted_only: bool, drop_rejected: bool = False
) -> Iterator[tuple[dict, list[dict]]]:
    """(recording row, its committed segments with text, by start), in URI order.

    Streams: recordings stay Arrow, and segments are read one chunk of recordings at a time (one
    filtered scan of `segments` per chunk, see `_chunks`), so memory is bounded by a chunk whatever
    the output's size; only the recording being yielded becomes Python dicts."""
    led, recs = _open(output)
    for chunk in _chunks(recs):
        seg, place = _segments_of(led, chunk, accepted_only or drop_rejected)
        fields = input_fields(led, chunk.column("recording_id").to_pylist())
        bounds = np.searchsorted(place, np.arange(chunk.num_rows + 1))
        for i, r in enumerate(chunk.select(_REC_COLUMNS).to_pylist()):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            if hi > lo:
                yield {**r, "input_fields": fields.get(r["recording_id"], {})}, seg.slice(lo, hi - lo).to_pylist()
