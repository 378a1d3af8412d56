"""Pure time helpers: speech regions + speaker turns -> utterances. Seconds, original timeline.

Kept free of models and Ray so the rules that shape every training example are unit-testable:
  * an utterance never crosses a speaker change;
  * an utterance is at most `max_segment_s` long (long speech is split at its quietest moment);
  * neighbouring regions of one speaker closer than `merge_gap_s` are merged while they fit
    ("cut & merge": Whisper pads every clip to 30 s, so fewer, fuller clips cost less);
  * speech shorter than `min_segment_s` is dropped.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.config import SegmentationConfig
from pipeline.records import SAMPLE_RATE, Span



def assign_speakers(regions: Sequence[Span], turns: Sequence[Span]) -> list[Span]:
    """Intersect VAD regions with speaker turns: every piece of speech gets the turn's speaker."""
    out: list[Span] = []
    for r in regions:
        for t in turns:
            start, end = max(r.start, t.start), min(r.end, t.end)
            if end > start:
                out.append(Span(round(start, 3), round(end, 3), t.speaker))
    out.sort(key=lambda s: s.start)
    return out


def merge_spans(spans: Sequence[Span], max_gap: float, max_len: float) -> list[Span]:
    """Merge consecutive spans of the same speaker when the gap is small and the result fits."""
    out: list[Span] = []
    for s in spans:
        if out:
            prev = out[-1]
            if prev.speaker == s.speaker and s.start - prev.end <= max_gap and s.end - prev.start <= max_len:
                out[-1] = Span(prev.start, max(prev.end, s.end), prev.speaker)
                continue
        out.append(s)
    return out


def split_long(span: Span, max_len: float, audio: np.ndarray | None) -> list[Span]:
    """Split a span longer than `max_len` at the quietest 100 ms in the last 40% of each piece."""
    pieces: list[Span] = []
    start = span.start
    while span.end - start > max_len:
        lo, hi = start + 0.6 * max_len, start + max_len
        cut = _quietest(audio, lo, hi) if audio is not None else hi
        pieces.append(Span(round(start, 3), round(cut, 3), span.speaker))
        start = cut
    pieces.append(Span(round(start, 3), span.end, span.speaker))
    return pieces


def _quietest(audio: np.ndarray, lo: float, hi: float, frame_s: float = 0.1) -> float:
    a, b = int(lo * SAMPLE_RATE), int(hi * SAMPLE_RATE)
    seg = audio[a:b]
    n = int(frame_s * SAMPLE_RATE)
    if len(seg) < 2 * n:
        return hi
    frames = seg[: len(seg) // n * n].reshape(-1, n)
    energy = (frames.astype(np.float64) ** 2).mean(axis=1)
    k = int(np.argmin(energy))
    return lo + (k + 0.5) * frame_s


def utterances(
    regions: Sequence[Span], turns: Sequence[Span] | None, cfg: SegmentationConfig, audio: np.ndarray | None = None
) -> list[Span]:
    """The segmentation rule of the recording stage (see module docstring)."""
    spans = assign_speakers(regions, turns) if turns is not None else list(regions)
    spans = merge_spans(spans, cfg.merge_gap_s, cfg.max_segment_s)
    out: list[Span] = []
    for s in spans:
        out.extend(split_long(s, cfg.max_segment_s, audio))
    return [s for s in out if s.duration >= cfg.min_segment_s]


# -- speakers after recognition ------------------------------------------------------------------
# Diarization never cuts what ASR hears (a diarization mistake would cut a sentence and cost Whisper
# its context on both sides); speakers are given to the recognised WORDS afterwards, by overlap with
# the speaker turns, as WhisperX does, and a segment is split where its words change speaker.


def speaker_at(start: float, end: float, turns: Sequence[Span]) -> str | None:
    """The speaker of [start, end]: the turn that overlaps it most (a word straddling a change goes
    to the larger share); with no overlap at all, the nearest turn; None without turns."""
    best, best_overlap = None, 0.0
    for t in turns:
        overlap = min(end, t.end) - max(start, t.start)
        if overlap > best_overlap:
            best, best_overlap = t.speaker, overlap
    if best is not None or not turns:
        return best
    mid = (start + end) / 2
    return min(turns, key=lambda t: min(abs(mid - t.start), abs(mid - t.end))).speaker


def speaker_runs(words: Sequence[tuple[float, float]], turns: Sequence[Span]) -> list[tuple[str | None, list[int]]]:
    """Words (start, end seconds, original timeline) -> runs of consecutive word indices with one
    speaker each, in order. Where a segment must be split."""
    runs: list[tuple[str | None, list[int]]] = []
    for i, (a, b) in enumerate(words):
        who = speaker_at(a, b, turns)
        if runs and runs[-1][0] == who:
            runs[-1][1].append(i)
        else:
            runs.append((who, [i]))
    return runs
