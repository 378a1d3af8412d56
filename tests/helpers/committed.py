"""An output committed without a run: one `recordings` row (and, unless it failed, one segment) per
input file, written by the sink's own `write_table` under a given fingerprint. For the tests of what
reads an output's state (`status`, `plan`, the check before a large redo): no Ray, no model."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from pipeline.config import OutputConfig
from pipeline.execution.sink import write_table
from pipeline.records import TRANSCRIBED_SCHEMA, recording_id_for

RUN_ID = "20260101T000000-abcdef"


def commit_files(
    output: OutputConfig,
    files: list[Path],
    fingerprint: str,
    *,
    status: str = "ok",
    error: str | None = None,
    duration: float = 1.0,
) -> None:
    """Commit `files` (as they are on disk now: size, mtime) with `status`; an ok file holds one
    segment "hi" of 0-1 s, a failed one none."""
    rows = []
    for f in files:
        st = os.stat(f)
        rows.append(
            {
                "recording_id": recording_id_for(str(f)),
                "uri": str(f),
                "size": st.st_size,
                "etag": None,
                "mtime": st.st_mtime,
                "status": status,
                "error": error,
                "duration": duration,
                "segments": [] if status == "error" else [{"segment_index": 0, "start": 0.0, "end": 1.0, "text": "hi"}],
            }
        )
    write_table(output, pa.Table.from_pylist(rows, schema=TRANSCRIBED_SCHEMA), RUN_ID, fingerprint)
