"""Subtitles (`srt`, `vtt`) and transcripts (`txt`, `json`), one file per input: cues cut at word
timestamps, rejected segments marked."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal

from pipeline.config import OutputConfig
from pipeline.export.dest import relative_name
from pipeline.export.read import iter_recordings

if TYPE_CHECKING:
    from pipeline.export.dest import _Dest

CUE_LINE_CHARS = 42  # every line of a cue, speaker tag and rejected marker included (raw characters)
CUE_MAX_LINES = 2
CUE_MAX_SECONDS = 7.0
CUE_MIN_SECONDS = 0.5  # a cue cut out of a longer utterance is at least this long (a whole one may be shorter)
CUE_PAUSE_S = 0.3  # a gap between two words this long is a good place to end a cue
REJECTED_MARKER = "[?]"  # SRT: the text before a rejected segment's cues (VTT: a NOTE block)
_SENTENCE_END = tuple(".?!。？！…")
_CLAUSE_END = tuple(",;:、，；：-–—")


def _join(words: list[str]) -> str:
    if any(w.startswith(" ") for w in words):
        return "".join(words).strip()
    return " ".join(w.strip() for w in words).strip()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _words(s: dict) -> list[dict]:
    """The segment's words with times; a segment without word times gets its text's words, timed in
    proportion to their characters over the segment (so a long one can still be split)."""
    words = [w for w in (s["words"] or []) if w["word"].strip()]
    if words:
        return words
    tokens = (s["text"] or "").split()
    total = sum(len(t) + 1 for t in tokens) or 1
    out, at, span = [], s["start"], max(0.0, s["end"] - s["start"])
    for t in tokens:
        length = span * (len(t) + 1) / total
        out.append({"word": " " + t, "start": at, "end": at + length})
        at += length
    return out


def _break_score(words: list[dict], i: int) -> float:
    """How good a place the gap after words[i] is to end a cue or a line: a sentence end, then a
    clause end, then a pause (longer is better); 0 elsewhere."""
    text = words[i]["word"].strip()
    score = 3.0 if text.endswith(_SENTENCE_END) else 2.0 if text.endswith(_CLAUSE_END) else 0.0
    if i + 1 < len(words):
        gap = (words[i + 1]["start"] or 0.0) - (words[i]["end"] or 0.0)
        if gap >= CUE_PAUSE_S:
            score += 1.5 + min(gap, 2.0)
    return score


def _lines(words: list[dict], first: str, last: str, esc) -> list[str] | None:
    """The cue's text in at most CUE_MAX_LINES lines of at most CUE_LINE_CHARS raw characters, `first`
    before the first line and `last` after the last (marker, speaker tag); None when it does not fit.
    Two lines break at the best place (punctuation, a pause), then the most even one."""
    one = first + esc(_join([w["word"] for w in words])) + last
    if len(one) <= CUE_LINE_CHARS:
        return [one]
    best, best_key = None, None
    for k in range(1, len(words)):
        a = first + esc(_join([w["word"] for w in words[:k]]))
        b = esc(_join([w["word"] for w in words[k:]])) + last
        if len(a) > CUE_LINE_CHARS or len(b) > CUE_LINE_CHARS:
            continue
        key = (_break_score(words, k - 1) > 0, -abs(len(a) - len(b)))
        if best_key is None or key > best_key:
            best, best_key = [a, b], key
    return best


def _cue_spans(words: list[dict], first: str, last: str, esc) -> list[tuple[int, int]]:
    """Words -> cues `(i, j)` (words[i:j]): each fits `_lines` and CUE_MAX_SECONDS. A cue that must
    close ends at the best break it holds (sentence end, clause end, pause), not at the last word that
    fit (a sentence end beats a clause end beats a pause beats none; among equals the fuller cue), in
    its last three quarters; a break that would leave a cue under CUE_MIN_SECONDS only when there is
    no other."""
    spans, i, n = [], 0, len(words)
    while i < n:
        j = i + 1  # a single word always makes a cue, however long it is
        while j < n and _fits(words[i : j + 1], first, last, esc):
            j += 1
        if j < n:  # the cue must close before words[j]: at its best break, the fuller the better
            full = len(_join([w["word"] for w in words[i:j]]))

            def key(k: int) -> tuple[bool, float]:
                filled = len(_join([w["word"] for w in words[i:k]])) / full
                long_enough = _span_s(words, i, k) >= CUE_MIN_SECONDS or k == j
                return long_enough and filled >= 0.25, _break_score(words, k - 1) + filled

            j = max(range(i + 1, j + 1), key=key)
        spans.append((i, j))
        i = j
    # a last cue under CUE_MIN_SECONDS joins the one before when they fit together, else takes its words
    while len(spans) > 1 and _span_s(words, *spans[-1]) < CUE_MIN_SECONDS:
        (a, b), (_, c) = spans[-2], spans[-1]
        if _fits(words[a:c], first, last, esc):
            spans[-2:] = [(a, c)]
        elif b - a > 1 and _fits(words[b - 1 : c], first, last, esc):
            spans[-2:] = [(a, b - 1), (b - 1, c)]
        else:
            break
    return spans


def _span_s(words: list[dict], i: int, j: int) -> float:
    return (words[j - 1]["end"] or 0.0) - (words[i]["start"] or 0.0)


def _fits(words: list[dict], first: str, last: str, esc) -> bool:
    return _span_s(words, 0, len(words)) <= CUE_MAX_SECONDS and _lines(words, first, last, esc) is not None


def _decorations(s: dict, fmt: str, marker: str) -> tuple[str, str]:
    """What a cue's text carries before its first line and after its last: VTT's voice tag; SRT's
    rejected marker and speaker."""
    if fmt == "vtt":
        return (f"<v {s['speaker']}>", "</v>") if s["speaker"] else ("", "")
    rejected = not s["accepted"] and marker
    return (f"{marker} " if rejected else "") + (f"[{s['speaker']}] " if s["speaker"] else ""), ""


def cue_blocks(
    s: dict, fmt: Literal["srt", "vtt"] = "srt", marker: str = REJECTED_MARKER
) -> list[tuple[float, float, str]]:
    """(start, end, text) cues of one segment, text as written (lines, tags, marker): at most
    CUE_MAX_LINES lines of at most CUE_LINE_CHARS characters and CUE_MAX_SECONDS each, cut between
    words at their timestamps, at punctuation and pauses where there is a choice."""
    first, last = _decorations(s, fmt, marker)
    esc = _escape if fmt == "vtt" else (lambda t: t)
    words = _words(s)
    if not words:
        return []
    out = []
    spans = _cue_spans(words, first, last, esc)
    for k, (i, j) in enumerate(spans):
        start = s["start"] if k == 0 else words[i]["start"]
        end = s["end"] if k == len(spans) - 1 else words[j - 1]["end"]
        text = "\n".join(
            _lines(words[i:j], first, last, esc) or [first + esc(_join([w["word"] for w in words[i:j]])) + last]
        )
        out.append((start, max(end, start), text))
    return out


def cues(s: dict) -> list[tuple[float, float, str]]:
    """(start, end, text) cues of one segment, plain text (no tags, no marker)."""
    return [(a, b, t.replace("\n", " ")) for a, b, t in cue_blocks({**s, "speaker": None, "accepted": True})]


def _ts(t: float, fmt: str) -> str:
    ms = int(round(t * 1000))
    h, ms = divmod(ms, 3600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    sep = "," if fmt == "srt" else "."
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _no_zero_length(timed: list[list]) -> None:
    """A cue shorter than CUE_MIN_SECONDS (a very short utterance, or one diarization cut to nothing)
    is stretched towards it, up to the next cue's start, and is never shorter than a millisecond:
    `00:00:16.656 --> 00:00:16.656` shows nothing in most players."""
    for k, cue in enumerate(timed):
        start, end = cue[0], cue[1]
        if end - start >= CUE_MIN_SECONDS:
            continue
        nxt = min((c[0] for c in timed[k + 1 :] if c[0] > start), default=start + CUE_MIN_SECONDS)
        cue[1] = max(end, min(start + CUE_MIN_SECONDS, nxt))
        if round(cue[1] * 1000) <= round(start * 1000):
            cue[1] = start + CUE_MIN_SECONDS  # the next cue starts at the same instant: overlap, not nothing


def subtitle_text(segs: list[dict], fmt: Literal["srt", "vtt"], marker: str = REJECTED_MARKER) -> str:
    """A whole subtitle file: SRT or WebVTT cues of every segment with text, in start order; rejected
    segments marked (`marker` before SRT cues, "" for none; a NOTE block in VTT)."""
    timed: list[list] = []
    for s in segs:
        if fmt == "vtt" and not s["accepted"]:
            timed.append([s["start"], None, f"NOTE rejected: {', '.join(s['reject_reasons'] or [])}"])
        timed += [[a, b, t] for a, b, t in cue_blocks(s, fmt, marker)]
    cues_only = [c for c in timed if c[1] is not None]
    _no_zero_length(cues_only)
    blocks = ["WEBVTT\n"] if fmt == "vtt" else []
    n = 0
    for start, end, text in timed:
        if end is None:
            blocks.append(text + "\n")
            continue
        n += 1
        blocks.append(f"{n}\n{_ts(start, fmt)} --> {_ts(end, fmt)}\n{text}\n")
    return "\n".join(blocks)


def subtitles(output: OutputConfig, fmt: Literal["srt", "vtt"], marker: str = REJECTED_MARKER) -> dict[str, str]:
    """recording uri -> subtitle text (every segment with text; rejected ones marked)."""
    return {r["uri"]: subtitle_text(segs, fmt, marker) for r, segs in iter_recordings(output, accepted_only=False)}


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


def _export_transcripts(
    output: OutputConfig, out: _Dest, root: str, fmt: str, drop_rejected: bool, marker: str = REJECTED_MARKER
) -> int:
    """One file per input under its path relative to `root`; returns the number of files."""
    n = 0
    for rec, segs in iter_recordings(output, accepted_only=False, drop_rejected=drop_rejected):
        name = relative_name(rec["uri"], root, fmt)
        if fmt in ("srt", "vtt"):
            data = subtitle_text(segs, fmt, marker).encode()
        elif fmt == "txt":
            data = "".join(f"{'[' + s['speaker'] + '] ' if s['speaker'] else ''}{s['text']}\n" for s in segs).encode()
        else:
            data = _transcript_json(rec, segs)
        out.put_bytes(name, data)
        n += 1
    return n
