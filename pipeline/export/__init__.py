"""Committed transcripts -> training data and archives, readable without our code.

Formats (`scriptorium export OUTPUT --format F --to DEST`):
    nemo          manifest.jsonl: (audio_filepath, offset, duration, text, lang, ...) into the SOURCE file;
                  `--with-audio` cuts each segment to a 16 kHz mono WAV under DEST/audio/ and points the
                  manifest there (relative paths, which NeMo resolves against the manifest's folder), so an
                  S3 corpus becomes trainable by NeMo's standard datasets; `--split-by-language` writes
                  manifest_<lang>.jsonl per language.
    lhotse        cuts.jsonl.gz: one cut per segment; each recording's sampling rate, channels and length
                  are what `lhotse.Recording.from_file` sees (Opus/WebM report their container rate, not
                  48 kHz), so `load_audio()` and `lhotse.qa.validate(read_data=True)` hold.
    lhotse-shar   Shar shards (cuts + FLAC audio per cut) that `CutSet.from_shar` reads back.
    srt, vtt      subtitles per input, named after the input's path relative to the input root; a cue is at
                  most 2 lines of at most 42 characters, speaker tag and marker included (no third line), and
                  at most 7 s; long segments split at word timestamps, at a sentence end, a clause end or a
                  pause where there is a choice; a cue cut out of an utterance lasts at least 0.5 s, and no
                  cue is zero-length; VTT speakers as <v> tags, rejected segments marked (VTT NOTE / SRT
                  `--rejected-marker`, "[?]" by default, "" for none) or left out with --drop-rejected.
    txt, json     transcript per input, same naming.

Pseudo-label formats (nemo, lhotse, lhotse-shar) keep only `accepted` segments unless `--all`. Fields an
input manifest carried (reference text, ...) are recorded by each run (`record_input_fields`) and travel
into `json` (`input_fields`) and Lhotse cuts (`cut.custom["input_fields"]`).

Every export reads only committed rows, streams them (recordings stay Arrow; the segments table is scanned
with a Delta/Arrow filter one chunk at a time, at most CHUNK_RECORDINGS recordings and CHUNK_SEGMENTS segments,
so memory is bounded by a chunk, not the output), and is
idempotent: the same output exports to the same bytes. A missing, empty or mistyped output, an export that
would hold nothing, or a non-empty destination without `--overwrite` raise ExportError (exit 2).

One module per format, and the parts they share; every name is importable from `pipeline.export`:

    read.py         committed rows, chunk by chunk (`iter_recordings`); the recorded manifest fields; `ExportError`
    dest.py         the destination folder and the file names written into it
    nemo.py         `nemo`
    cuts.py         `lhotse`, `lhotse-shar`, and a segment's audio as WAV (`nemo --with-audio`)
    transcripts.py  `srt`, `vtt`, `txt`, `json`
"""

from __future__ import annotations

import logging
from typing import Literal

from pipeline.config import OutputConfig
from pipeline.export.cuts import _export_lhotse, _export_shar, iter_cuts, lhotse_cuts, lhotse_recording
from pipeline.export.dest import MARKER, MAX_NAME_BYTES, _Dest, _input_root, relative_name
from pipeline.export.nemo import _export_nemo, nemo_line, nemo_manifest
from pipeline.export.read import (
    CHUNK_RECORDINGS,
    CHUNK_SEGMENTS,
    INPUTS_TABLE,
    ExportError,
    _open,
    input_fields,
    iter_recordings,
    record_input_fields,
)
from pipeline.export.transcripts import (
    CUE_LINE_CHARS,
    CUE_MAX_LINES,
    CUE_MAX_SECONDS,
    CUE_MIN_SECONDS,
    REJECTED_MARKER,
    _export_transcripts,
    cue_blocks,
    cues,
    subtitle_text,
    subtitles,
)

log = logging.getLogger(__name__)

Format = Literal["nemo", "lhotse", "lhotse-shar", "srt", "vtt", "txt", "json"]
FORMATS = ("nemo", "lhotse", "lhotse-shar", "srt", "vtt", "txt", "json")

__all__ = [
    "CHUNK_RECORDINGS",
    "CHUNK_SEGMENTS",
    "CUE_LINE_CHARS",
    "CUE_MAX_LINES",
    "CUE_MAX_SECONDS",
    "CUE_MIN_SECONDS",
    "REJECTED_MARKER",
    "FORMATS",
    "INPUTS_TABLE",
    "MARKER",
    "MAX_NAME_BYTES",
    "ExportError",
    "Format",
    "cue_blocks",
    "cues",
    "export",
    "input_fields",
    "iter_cuts",
    "iter_recordings",
    "lhotse_cuts",
    "lhotse_recording",
    "nemo_line",
    "nemo_manifest",
    "record_input_fields",
    "relative_name",
    "subtitle_text",
    "subtitles",
]


def export(
    output: OutputConfig,
    fmt: Format,
    dest: str,
    accepted_only: bool = True,
    overwrite: bool = False,
    with_audio: bool = False,
    split_by_language: bool = False,
    drop_rejected: bool = False,
    shard_size: int = 1000,
    rejected_marker: str = REJECTED_MARKER,
) -> list[str]:
    """Write an export under `dest` (any fsspec URI); returns the paths written."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: {' | '.join(FORMATS)}")
    led, recs = _open(output)  # fails before the destination is touched
    out = _Dest(dest, output.storage, overwrite)
    if fmt == "nemo":
        n = _export_nemo(output, out, accepted_only, with_audio, split_by_language)
    elif fmt == "lhotse":
        n = _export_lhotse(output, out, accepted_only)
    elif fmt == "lhotse-shar":
        n = _export_shar(output, out, accepted_only, shard_size)
    else:
        n = _export_transcripts(output, out, _input_root(led, recs), fmt, drop_rejected, rejected_marker)
    if n == 0:
        out.tmp.cleanup()
        raise ExportError(
            f"nothing to export from {output.uri!r}: {recs.num_rows} recordings, no "
            f"{'accepted ' if accepted_only and fmt in ('nemo', 'lhotse', 'lhotse-shar') else ''}"
            "segment with text" + (" (--all includes rejected ones)" if accepted_only else "")
        )
    return out.finish({"format": fmt, "output": output.uri, "items": n, "accepted_only": accepted_only})
