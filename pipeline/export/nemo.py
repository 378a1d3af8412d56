"""NeMo manifests: one JSON line per segment into its source file (offset, duration), or, with
`--with-audio`, into a WAV of the segment cut under DEST/audio/; one manifest per language on request."""

from __future__ import annotations

import json
import tempfile
from contextlib import ExitStack
from typing import Any

from pipeline.config import OutputConfig
from pipeline.export.cuts import _segment_wav, lhotse_recording
from pipeline.export.dest import _Dest, _safe_component
from pipeline.export.read import iter_recordings


def nemo_line(s: dict, audio_filepath: str, offset: float | None, duration: float) -> str:
    """One NeMo manifest line; ensure_ascii so U+2028 and friends stay inside the line."""
    d: dict[str, Any] = {"audio_filepath": audio_filepath}
    if offset is not None:
        d["offset"] = offset
    d.update(duration=duration, text=s["text"], lang=s["language"], speaker=s["speaker"], confidence=s["confidence"])
    return json.dumps(d, ensure_ascii=True)


def nemo_manifest(output: OutputConfig, accepted_only: bool = True) -> str:
    """NeMo JSONL in memory (small outputs; the export streams to a file)."""
    lines = [
        nemo_line(s, r["uri"], s["start"], round(s["end"] - s["start"], 3))
        for r, segs in iter_recordings(output, accepted_only)
        for s in segs
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def _export_nemo(output: OutputConfig, out: _Dest, accepted_only: bool, with_audio: bool, split: bool) -> int:
    n = 0
    names: dict[str, str] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="scriptorium-probe-") as tmp:
        files: dict[str, Any] = {}

        def handle(lang: str | None):
            key = (lang or "unknown") if split else ""
            if key not in files:
                names[key] = f"manifest_{_safe_component(key)}.jsonl" if split else "manifest.jsonl"
                files[key] = stack.enter_context(open(out.staging(names[key]), "w", encoding="ascii"))
            return files[key]

        for rec_row, segs in iter_recordings(output, accepted_only):
            rec = lhotse_recording(rec_row, output.storage, tmp) if with_audio else None
            for s in segs:
                if with_audio:
                    got = _segment_wav(rec, s)
                    if got is None:
                        continue
                    rel = f"audio/{s['recording_id']}/{s['segment_index']:05d}.wav"
                    out.put_bytes(rel, got[0])
                    line = nemo_line(s, rel, None, round(got[1] / 16000, 4))
                else:
                    line = nemo_line(s, s["uri"], s["start"], round(s["end"] - s["start"], 3))
                handle(s["language"]).write(line + "\n")
                n += 1
    for _key, name in sorted(names.items()):
        out.put_file(name, out.staging(name))
    return n
