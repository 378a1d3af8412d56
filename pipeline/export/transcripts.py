"""Subtitles (`srt`, `vtt`) and transcripts (`txt`, `json`), one file per input: cues cut at word
timestamps, rejected segments marked."""

from __future__ import annotations

import json
import textwrap
from typing import TYPE_CHECKING, Literal

from pipeline.config import OutputConfig
from pipeline.export.dest import relative_name
from pipeline.export.read import iter_recordings

if TYPE_CHECKING:
    from pipeline.export.dest import _Dest

CUE_LINE_CHARS = 42
CUE_MAX_LINES = 2
CUE_MAX_SECONDS = 7.0


def _join(words: list[str]) -> str:
    if any(w.startswith(" ") for w in words):
        return "".join(words).strip()
    return " ".join(w.strip() for w in words).strip()


def cues(s: dict) -> list[tuple[float, float, str]]:
    """(start, end, text) cues of one segment: at most CUE_LINE_CHARS x CUE_MAX_LINES characters and
    CUE_MAX_SECONDS each, cut between words at their timestamps (a segment without words is one cue)."""
    limit = CUE_LINE_CHARS * CUE_MAX_LINES
    text = " ".join(s["text"].split())
    words = [w for w in (s["words"] or []) if w["word"].strip()]
    if (len(text) <= limit and s["end"] - s["start"] <= CUE_MAX_SECONDS) or not words:
        return [(s["start"], s["end"], text)]
    out, cur = [], []
    for w in words:
        trial = _join([x["word"] for x in cur + [w]])
        if cur and (len(trial) > limit or w["end"] - cur[0]["start"] > CUE_MAX_SECONDS):
            out.append(cur)
            cur = []
        cur.append(w)
    if cur:
        out.append(cur)
    res = []
    for k, ws in enumerate(out):
        start = s["start"] if k == 0 else ws[0]["start"]
        end = s["end"] if k == len(out) - 1 else max(ws[-1]["end"], start + 0.001)
        res.append((start, end, _join([x["word"] for x in ws])))
    return res


def _wrap(text: str) -> str:
    return "\n".join(textwrap.wrap(text, CUE_LINE_CHARS, break_long_words=False, break_on_hyphens=False)) or text


def _ts(t: float, fmt: str) -> str:
    ms = int(round(t * 1000))
    h, ms = divmod(ms, 3600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    sep = "," if fmt == "srt" else "."
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def subtitle_text(segs: list[dict], fmt: Literal["srt", "vtt"]) -> str:
    blocks = ["WEBVTT\n"] if fmt == "vtt" else []
    n = 0
    for s in segs:
        rejected = not s["accepted"]
        if fmt == "vtt" and rejected:
            blocks.append(f"NOTE rejected: {', '.join(s['reject_reasons'] or [])}\n")
        for start, end, text in cues(s):
            n += 1
            times = f"{_ts(start, fmt)} --> {_ts(end, fmt)}"
            body = _wrap(text)
            if fmt == "vtt":
                body = body.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                if s["speaker"]:
                    body = f"<v {s['speaker']}>{body}</v>"
                blocks.append(f"{n}\n{times}\n{body}\n")
            else:
                who = f"[{s['speaker']}] " if s["speaker"] else ""
                blocks.append(f"{n}\n{times}\n{'[?] ' if rejected else ''}{who}{body}\n")
    return "\n".join(blocks)


def subtitles(output: OutputConfig, fmt: Literal["srt", "vtt"]) -> dict[str, str]:
    """recording uri -> subtitle text (every segment with text; rejected ones marked)."""
    return {r["uri"]: subtitle_text(segs, fmt) for r, segs in iter_recordings(output, accepted_only=False)}


def _transcript_json(rec: dict, segs: list[dict]) -> bytes:
    keep = [
        "segment_index",
        "start",
        "end",
        "speaker",
        "language",
        "text",
        "confidence",
        "accepted",
        "reject_reasons",
        "words",
    ]
    doc = {
        "uri": rec["uri"],
        "recording_id": rec["recording_id"],
        "duration": rec["duration"],
        "language": rec["language"],
        "input_fields": rec.get("input_fields") or {},
        "segments": [{k: s[k] for k in keep} for s in segs],
    }
    return json.dumps(doc, ensure_ascii=False, indent=1).encode()


def _export_transcripts(output: OutputConfig, out: _Dest, root: str, fmt: str, drop_rejected: bool) -> int:
    """One file per input under its path relative to `root`; returns the number of files."""
    n = 0
    for rec, segs in iter_recordings(output, accepted_only=False, drop_rejected=drop_rejected):
        name = relative_name(rec["uri"], root, fmt)
        if fmt in ("srt", "vtt"):
            data = subtitle_text(segs, fmt).encode()
        elif fmt == "txt":
            data = "".join(f"{'[' + s['speaker'] + '] ' if s['speaker'] else ''}{s['text']}\n" for s in segs).encode()
        else:
            data = _transcript_json(rec, segs)
        out.put_bytes(name, data)
        n += 1
    return n
