"""Decode stage (CPU tasks): URI -> 16 kHz mono float32 samples, or an error row.

Reads through fsspec (streaming, with bounded retries on transient storage errors) and decodes with
PyAV (pipeline/audio.py). A file that fails never stops the job: it leaves as a row with
status="error" and a message a person can act on.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.audio import DecodeError, decode
from pipeline.config import DecodeConfig, StorageOptions
from pipeline.storage import filesystem, is_transient, with_retries

#: What a discovery row carries into the pipeline.
INPUT_SCHEMA = pa.schema(
    [("recording_id", pa.string()), ("uri", pa.string()), ("size", pa.int64()), ("etag", pa.string())]
)

#: What the decode stage hands to the recording stage. `audio` is float32 little-endian bytes.
DECODED_SCHEMA = pa.schema(
    list(INPUT_SCHEMA)
    + [
        ("duration", pa.float64()),
        ("source_sample_rate", pa.int32()),
        ("source_channels", pa.int32()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("audio", pa.large_binary()),
    ]
)


def decode_one(uri: str, cfg: DecodeConfig, storage: StorageOptions) -> dict:
    fs, path = filesystem(uri, storage)

    def attempt():
        with fs.open(path, "rb") as f:
            return decode(f, cfg.max_duration_s)

    try:
        audio = with_retries(attempt)
    except DecodeError as exc:
        return {"status": "error", "error": f"decode: {exc}"}
    except FileNotFoundError:
        return {"status": "error", "error": "input file not found (deleted after listing?)"}
    except Exception as exc:  # noqa: BLE001 - any failure of one file must become its error row
        kind = "storage (gave up after retries)" if is_transient(exc) else "decode"
        return {"status": "error", "error": f"{kind}: {type(exc).__name__}: {exc}"}
    return {
        "duration": audio.duration,
        "source_sample_rate": audio.source_sample_rate,
        "source_channels": audio.source_channels,
        "status": "ok",
        "error": "; ".join(audio.warnings) or None,
        "audio": audio.samples.astype("<f4").tobytes(),
    }


def decode_batch(batch: pa.Table, cfg: DecodeConfig, storage: StorageOptions) -> pa.Table:
    """Ray Data function: a batch of discovery rows -> decoded rows (one out per row in)."""
    rows = []
    for row in batch.select(INPUT_SCHEMA.names).to_pylist():
        out = {"duration": None, "source_sample_rate": None, "source_channels": None, "audio": None}
        out.update(decode_one(row["uri"], cfg, storage))
        rows.append({**row, **out})
    return pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)
