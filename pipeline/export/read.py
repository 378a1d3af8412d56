"""What an export reads: only committed rows, streamed a chunk of recordings at a time, and the fields
an input manifest carried (recorded by each run in `_scriptorium/inputs`)."""

from __future__ import annotations

import json
from typing import Iterator

import pyarrow.compute as pc

from pipeline.config import OutputConfig
from pipeline.ledger import Ledger

CHUNK_RECORDINGS = 1000
_REC_COLUMNS = ["recording_id", "uri", "duration", "source_sample_rate", "source_channels", "status",
                "language", "fingerprint", "write_id"]


class ExportError(RuntimeError):
    """The export cannot be made as asked (no such output, nothing to export, destination in use): exit 2."""


# -- fields an input manifest carried (reference text, ...) ------------------------------------------
INPUTS_TABLE = "_scriptorium/inputs"


def record_input_fields(output: OutputConfig, files) -> int:
    """Keep the extra fields of manifest lines (`InputFile.extra`: reference `text`, `lang`, ...) with the
    output, in the Delta table `_scriptorium/inputs` (recording_id, uri, fields as JSON), so exports and
    `eval` carry them. `files`: the listing as a table (`discover_table`) or a list of InputFile. Only
    rows not already recorded as they are now are written (a nightly rerun of an unchanged manifest
    writes nothing), one predicate overwrite per 5,000. Returns how many files carry fields."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from pipeline.records import input_table

    listed = input_table(files)
    rows = (listed.filter(pc.is_valid(listed.column("extra"))).select(["recording_id", "uri", "extra"])
            .rename_columns(["recording_id", "uri", "fields"]))
    if not rows.num_rows:
        return 0
    led = Ledger(output)
    uri = led.table_uri(INPUTS_TABLE)
    dt = led.table(INPUTS_TABLE)
    todo = rows
    if dt is not None:
        def key(t: pa.Table) -> pa.ChunkedArray:
            return pc.binary_join_element_wise(t.column("recording_id"), t.column("uri"), t.column("fields"), "\x1f")

        todo = rows.filter(pc.invert(pc.is_in(key(rows), value_set=key(dt.to_pyarrow_table(columns=rows.column_names)))))
    for k in range(0, todo.num_rows, 5000):
        part = todo.slice(k, 5000)
        quoted = ", ".join("'" + r.replace("'", "''") + "'" for r in part.column("recording_id").to_pylist())
        exists = led.table(INPUTS_TABLE) is not None
        write_deltalake(uri, part, mode="overwrite" if exists else "append",
                        predicate=f"recording_id IN ({quoted})" if exists else None, storage_options=led.options)
    return rows.num_rows


def input_fields(led: Ledger, recording_ids: list[str]) -> dict[str, dict]:
    """recording_id -> the manifest fields recorded for it (empty when none were)."""
    dt = led.table(INPUTS_TABLE)
    if dt is None:
        return {}
    t = dt.to_pyarrow_dataset().to_table(filter=pc.field("recording_id").isin(recording_ids),
                                         columns=["recording_id", "fields"])
    return {rid: json.loads(f) for rid, f in zip(t.column("recording_id").to_pylist(), t.column("fields").to_pylist())}


# -- reading ---------------------------------------------------------------------------------------
def _open(output: OutputConfig) -> tuple[Ledger, list[dict]]:
    led = Ledger(output)
    if led.table("recordings") is None or led.table("segments") is None:
        raise ExportError(f"no Scriptorium output at {output.uri!r} (no committed recordings/segments tables; "
                          "is the URI right?)")
    recs = led.read("recordings", _REC_COLUMNS).to_pylist()
    if not recs:
        raise ExportError(f"output {output.uri!r} is empty: no recording was committed")
    return led, sorted(recs, key=lambda r: r["uri"])


def iter_recordings(output: OutputConfig, accepted_only: bool, drop_rejected: bool = False) -> Iterator[tuple[dict, list[dict]]]:
    """(recording row, its committed segments with text, by start), in URI order, chunk by chunk."""
    led, recs = _open(output)
    for k in range(0, len(recs), CHUNK_RECORDINGS):
        chunk = {r["recording_id"]: r for r in recs[k : k + CHUNK_RECORDINGS]}
        dt = led.table("segments")
        flt = pc.field("recording_id").isin(list(chunk))
        if accepted_only or drop_rejected:
            flt = flt & (pc.field("accepted") == True)  # noqa: E712 - an Arrow expression
        by_rec: dict[str, list[dict]] = {}
        for batch in dt.to_pyarrow_dataset().to_batches(filter=flt, batch_size=8192):
            for s in batch.to_pylist():
                r = chunk[s["recording_id"]]
                if s["text"] and (s["fingerprint"], s["write_id"]) == (r["fingerprint"], r["write_id"]):
                    by_rec.setdefault(s["recording_id"], []).append(s)
        fields = input_fields(led, list(chunk))
        for rid, r in chunk.items():  # chunk keeps URI order
            if by_rec.get(rid):
                yield {**r, "input_fields": fields.get(rid, {})}, sorted(by_rec[rid], key=lambda s: (s["start"], s["segment_index"]))
