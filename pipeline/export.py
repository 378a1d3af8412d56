"""Committed transcripts -> training data and subtitles: NeMo manifests, Lhotse cuts, SRT/VTT.

Exports read only committed rows (pipeline.ledger.read_output), so they never include a half-written
recording. Pseudo-labels keep only `accepted` segments unless told otherwise; the audio is referenced
by URI and offset, never copied, so a NeMo or Lhotse dataloader reads it straight from the source.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Literal

from pipeline.config import OutputConfig
from pipeline.ledger import read_output
from pipeline.storage import filesystem, put_atomic

Format = Literal["nemo", "lhotse", "srt", "vtt"]


def _segments(output: OutputConfig, accepted_only: bool) -> list[dict]:
    rows = read_output(output, "segments").to_pylist()
    rows = [r for r in rows if r["text"] and (r["accepted"] or not accepted_only)]
    return sorted(rows, key=lambda r: (r["uri"], r["start"]))


def nemo_manifest(output: OutputConfig, accepted_only: bool = True) -> str:
    """NeMo JSONL: one utterance per line as (audio_filepath, offset, duration) into the source file."""
    lines = []
    for r in _segments(output, accepted_only):
        lines.append(
            json.dumps(
                {
                    "audio_filepath": r["uri"],
                    "offset": r["start"],
                    "duration": round(r["end"] - r["start"], 3),
                    "text": r["text"],
                    "lang": r["language"],
                    "speaker": r["speaker"],
                    "confidence": r["confidence"],
                },
                ensure_ascii=False,
            )
        )
    return "\n".join(lines) + ("\n" if lines else "")


def lhotse_cuts(output: OutputConfig, accepted_only: bool = True):
    """A Lhotse CutSet with one cut per accepted utterance, its supervision and word alignment."""
    from lhotse import AudioSource, CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
    from lhotse.supervision import AlignmentItem

    recs = {r["recording_id"]: r for r in read_output(output, "recordings").to_pylist() if r["status"] == "ok"}
    recordings, sups = {}, []
    for s in _segments(output, accepted_only):
        rec = recs.get(s["recording_id"])
        if rec is None:
            continue
        if rec["recording_id"] not in recordings:
            sr, ch = rec["source_sample_rate"], max(1, rec["source_channels"] or 1)
            kind = "url" if "://" in rec["uri"] else "file"
            recordings[rec["recording_id"]] = Recording(
                id=rec["recording_id"],
                sources=[AudioSource(type=kind, channels=list(range(ch)), source=rec["uri"])],
                sampling_rate=sr,
                num_samples=int(round(rec["duration"] * sr)),
                duration=rec["duration"],
                channel_ids=list(range(ch)),
            )
        ch_ids = recordings[rec["recording_id"]].channel_ids
        sups.append(
            SupervisionSegment(
                id=f"{s['recording_id']}-{s['segment_index']:05d}",
                recording_id=s["recording_id"],
                start=s["start"],
                duration=round(s["end"] - s["start"], 3),
                channel=ch_ids[0] if len(ch_ids) == 1 else ch_ids,
                text=s["text"],
                language=s["language"],
                speaker=f"{s['recording_id']}-{s['speaker']}" if s["speaker"] else None,
                custom={"confidence": s["confidence"], "language_prob": s["language_prob"]},
                alignment={
                    "word": [
                        AlignmentItem(symbol=w["word"], start=w["start"], duration=round(w["end"] - w["start"], 3), score=w["confidence"])
                        for w in s["words"]
                    ]
                },
            )
        )
    cuts = CutSet.from_manifests(
        recordings=RecordingSet.from_recordings(recordings.values()), supervisions=SupervisionSet.from_segments(sups)
    )
    return cuts.trim_to_supervisions(keep_overlapping=False)


def subtitles(output: OutputConfig, fmt: Literal["srt", "vtt"]) -> dict[str, str]:
    """recording uri -> subtitle text (every segment with text, accepted or not: it is the transcript)."""
    by_uri: dict[str, list[dict]] = defaultdict(list)
    for s in _segments(output, accepted_only=False):
        by_uri[s["uri"]].append(s)
    out = {}
    for uri, segs in by_uri.items():
        blocks = ["WEBVTT\n"] if fmt == "vtt" else []
        for n, s in enumerate(segs, 1):
            who = f"[{s['speaker']}] " if s["speaker"] else ""
            times = f"{_ts(s['start'], fmt)} --> {_ts(s['end'], fmt)}"
            blocks.append(f"{n}\n{times}\n{who}{s['text']}\n" if fmt == "srt" else f"{times}\n{who}{s['text']}\n")
        out[uri] = "\n".join(blocks)
    return out


def _ts(t: float, fmt: str) -> str:
    ms = int(round(t * 1000))
    h, ms = divmod(ms, 3600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    sep = "," if fmt == "srt" else "."
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def export(output: OutputConfig, fmt: Format, dest: str, accepted_only: bool = True) -> list[str]:
    """Write an export under `dest` (any fsspec URI); returns the paths written."""
    fs, root = filesystem(dest, output.storage)
    root = root.rstrip("/")
    if fmt == "nemo":
        path = f"{root}/manifest.jsonl"
        put_atomic(fs, path, nemo_manifest(output, accepted_only).encode())
        return [path]
    if fmt == "lhotse":
        import tempfile

        cuts = lhotse_cuts(output, accepted_only)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "cuts.jsonl.gz"
            cuts.to_file(local)
            path = f"{root}/cuts.jsonl.gz"
            put_atomic(fs, path, local.read_bytes())
        return [path]
    written = []
    for uri, text in subtitles(output, fmt).items():
        name = uri.rstrip("/").rsplit("/", 1)[-1]  # keep the extension: a.wav and a.mp3 must not collide
        path = f"{root}/{name}.{fmt}"
        put_atomic(fs, path, text.encode())
        written.append(path)
    return written
