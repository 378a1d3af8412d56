"""Pure time helpers: frame probabilities -> speech regions and speaker turns; regions -> utterances;
words -> speakers. Seconds, original timeline.

Kept free of models and Ray so the rules that shape every training example are unit-testable. Model
outputs are turned into time spans here (`probs_to_regions` for frame VAD, `exclusive_turns` for
per-frame speaker activity and `overlapped_speech` for where two or more speakers are active at once,
`stitch_chunk_activity` for chunked diarization). The utterance rules, on VAD regions alone:
  * an utterance is at most `max_segment_s` long (long speech is split at its quietest moment);
  * neighbouring regions closer than `merge_gap_s` are merged while they fit
    ("cut & merge": Whisper pads every clip to 30 s, so fewer, fuller clips cost less);
  * speech shorter than `min_segment_s` is dropped.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from pipeline.config import SegmentationConfig
from pipeline.records import SAMPLE_RATE, Overlap, Span


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


def outside(span: Span, others: Sequence[Span], min_s: float = 0.05) -> list[Span]:
    """The parts of `span` that none of `others` (sorted, not overlapping) covers, at least `min_s` long."""
    parts, start = [], span.start
    for o in others:
        if o.end <= start or o.start >= span.end:
            continue
        if o.start - start >= min_s:
            parts.append(Span(round(start, 3), round(o.start, 3), span.speaker))
        start = max(start, o.end)
    if span.end - start >= min_s:
        parts.append(Span(round(start, 3), span.end, span.speaker))
    return parts


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


def utterances(regions: Sequence[Span], cfg: SegmentationConfig, audio: np.ndarray | None = None) -> list[Span]:
    """The segmentation rule of the recording stage (see module docstring): VAD regions and length
    only, never speakers (see "speakers after recognition" below)."""
    spans = merge_spans(regions, cfg.merge_gap_s, cfg.max_segment_s)
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
    to the larger share); with no overlap at all (a word of no duration, or in a gap), the turn
    that holds its middle, else the nearest turn; None without turns."""
    best, best_overlap = None, 0.0
    for t in turns:
        overlap = min(end, t.end) - max(start, t.start)
        if overlap > best_overlap:
            best, best_overlap = t.speaker, overlap
    if best is not None or not turns:
        return best
    mid = (start + end) / 2
    for t in turns:
        if t.start <= mid < t.end:
            return t.speaker
    return min(turns, key=lambda t: min(abs(mid - t.start), abs(mid - t.end))).speaker


#: A gap between two words at least this long is a pause that supports a change of speaker (people
#: take turns with 0.2-0.5 s between them; Whisper's word times leave 0-0.15 s inside a phrase).
TURN_PAUSE_S = 0.2
#: A speaker's run of words without a pause on both sides lasts at least this long and holds at least
#: `MIN_RUN_WORDS` words; shorter, it is the diarizer's blur at a turn change, not a turn.
MIN_RUN_S = 0.5
MIN_RUN_WORDS = 2
#: A change of speaker between words without a pause moves to the longest pause this close (seconds).
SNAP_S = 1.0


def speaker_runs(words: Sequence[tuple[float, float]], turns: Sequence[Span]) -> list[tuple[str | None, list[int]]]:
    """Words (start, end seconds, original timeline) of one segment -> runs of consecutive word
    indices with one speaker each, in order: where the segment must be split.

    Each word takes the speaker it overlaps most (`speaker_at`), then the rules against confetti:
      * a run is a turn only if it holds `MIN_RUN_WORDS` words over `MIN_RUN_S` seconds, or stands
        between pauses (`TURN_PAUSE_S`) on both sides (a whole utterance, such as a backchannel; the
        segment's own edges are pauses); shorter runs, and any run of no duration, join a neighbour
        (both neighbours when they are one speaker, else the one it is closer to in time), shortest first;
      * then a change of speaker between two words without a pause moves to the longest pause within
        `SNAP_S` of it (diarization's turns come from 0.5-1.6 s windows; the words' pauses are where
        people actually take turns), so a phrase is not split between two speakers.
    So no split leaves a fragment of no duration, or under `MIN_RUN_S`, unless it is a whole utterance."""
    if not words:
        return []
    labels = [speaker_at(a, b, turns) for a, b in words]
    # gaps[i]: the pause before word i; gaps[n]: after the last word (the segment's edges are pauses)
    gaps = [math.inf] + [max(0.0, words[i][0] - words[i - 1][1]) for i in range(1, len(words))] + [math.inf]
    runs = _absorb_confetti(_runs_of(labels), words, gaps)
    labels = _snap_to_pauses([who for who, idx in runs for _ in idx], words, gaps)
    return _absorb_confetti(_runs_of(labels), words, gaps)


def _runs_of(labels: Sequence[str | None]) -> list[tuple[str | None, list[int]]]:
    runs: list[tuple[str | None, list[int]]] = []
    for i, who in enumerate(labels):
        if runs and runs[-1][0] == who:
            runs[-1][1].append(i)
        else:
            runs.append((who, [i]))
    return runs


def _snap_to_pauses(
    labels: list[str | None], words: Sequence[tuple[float, float]], gaps: Sequence[float]
) -> list[str | None]:
    """Move each change of speaker that has no pause to the longest pause within `SNAP_S` of it that
    does not cross another change (see `speaker_runs`)."""
    labels = list(labels)
    changes = [i for i in range(1, len(labels)) if labels[i] != labels[i - 1]]
    prev_change = 0  # where the previous change ended up
    for n, i in enumerate(changes):
        if gaps[i] >= TURN_PAUSE_S:
            prev_change = i
            continue
        next_change = changes[n + 1] if n + 1 < len(changes) else len(labels)
        at = words[i][0]
        best = None
        for j in range(prev_change + 1, next_change):
            if j == i or gaps[j] < TURN_PAUSE_S:
                continue
            if abs((words[j - 1][1] + words[j][0]) / 2 - at) > SNAP_S:
                continue
            if best is None or (gaps[j], -abs(j - i)) > (gaps[best], -abs(best - i)):
                best = j
        if best is None:
            prev_change = i
            continue
        before, after = labels[i - 1], labels[i]
        for k in range(min(i, best), max(i, best)):
            labels[k] = after if best < i else before
        prev_change = best
    return labels


def _absorb_confetti(
    runs: list[tuple[str | None, list[int]]], words: Sequence[tuple[float, float]], gaps: Sequence[float]
) -> list[tuple[str | None, list[int]]]:
    """Fold the runs that are not turns (see `speaker_runs`) into their neighbours, shortest first."""
    runs = [(who, list(idx)) for who, idx in runs]

    def duration(idx: list[int]) -> float:
        return words[idx[-1]][1] - words[idx[0]][0]

    def confetti(idx: list[int]) -> bool:
        if duration(idx) <= 0:
            return True
        between_pauses = gaps[idx[0]] >= TURN_PAUSE_S and gaps[idx[-1] + 1] >= TURN_PAUSE_S
        return not between_pauses and (duration(idx) < MIN_RUN_S or len(idx) < MIN_RUN_WORDS)

    while len(runs) > 1:
        small = [k for k, (_, idx) in enumerate(runs) if confetti(idx)]
        if not small:
            break
        k = min(small, key=lambda k: (duration(runs[k][1]), len(runs[k][1])))
        idx = runs[k][1]
        left = runs[k - 1] if k > 0 else None
        right = runs[k + 1] if k + 1 < len(runs) else None
        if left and right and left[0] == right[0]:
            runs[k - 1 : k + 2] = [(left[0], left[1] + idx + right[1])]
        elif right is None or (left is not None and gaps[idx[0]] <= gaps[idx[-1] + 1]):
            runs[k - 1 : k + 1] = [(left[0], left[1] + idx)]
        else:
            runs[k : k + 2] = [(right[0], idx + right[1])]
    return runs


# -- model outputs -> spans ----------------------------------------------------------------------


def probs_to_regions(
    probs: np.ndarray,
    frame_s: float,
    onset: float,
    offset: float,
    min_speech_s: float,
    min_silence_s: float,
    pad_s: float,
    duration: float,
) -> list[Span]:
    """Frame speech probabilities -> speech regions, in seconds of the same timeline as frame 0.

    Hysteresis: speech starts at the first frame with p >= `onset` and ends at the first frame with
    p < `offset` (offset <= onset). Then, in order: pauses shorter than `min_silence_s` are bridged,
    regions shorter than `min_speech_s` are dropped, each region is padded by `pad_s` on both sides
    (clamped to [0, duration]) and regions that now touch are merged. Sorted, non-overlapping."""
    offset = min(offset, onset)
    raw: list[list[float]] = []
    start: int | None = None
    for i, p in enumerate(np.asarray(probs, dtype=np.float64)):
        if start is None and p >= onset:
            start = i
        elif start is not None and p < offset:
            raw.append([start * frame_s, i * frame_s])
            start = None
    if start is not None:
        raw.append([start * frame_s, len(probs) * frame_s])
    merged: list[list[float]] = []
    for s, e in raw:
        if merged and s - merged[-1][1] < min_silence_s:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    out: list[list[float]] = []
    for s, e in merged:
        if e - s < min_speech_s:
            continue
        s, e = max(0.0, s - pad_s), min(duration, e + pad_s)
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [Span(float(s), float(e)) for s, e in out]


#: A pause at least this long inside a speech region is a place where an utterance may be cut to
#: fill an ASR window (pipeline/packing.py); faster-whisper's batched pipeline cuts at 160 ms too.
PAUSE_S = 0.16


def pauses_inside(fine: Sequence[Span], regions: Sequence[Span]) -> list[float]:
    """The middles of the gaps between `fine` speech regions (VAD run with `PAUSE_S` as its minimum
    silence and no padding) that lie inside the coarse `regions`: seconds, sorted."""
    out = []
    for a, b in zip(fine, fine[1:]):
        mid = round((a.end + b.start) / 2, 3)
        if any(r.start < mid < r.end for r in regions):
            out.append(mid)
    return out


def exclusive_turns(
    probs: np.ndarray,
    frame_s: float,
    regions: Sequence[Span],
    min_turn_s: float = 0.3,
    names: Sequence[str] | None = None,
) -> list[Span]:
    """Per-frame speaker probabilities (T, S) -> non-overlapping speaker turns covering `regions`.

    Each frame inside a region goes to its most probable speaker (exclusive diarization: overlapped
    speech goes to the dominant speaker, so every word lands in exactly one turn; `overlapped_speech`
    says where a second speaker was talking too). Runs shorter than `min_turn_s` are absorbed by the
    previous run (or the next, at a region start). Turn boundaries are frame boundaries, except at
    region edges, which are kept exactly. Speakers are renamed "spk0", "spk1", ... in order of first
    appearance, or, given `names` (one per column of `probs`), column k is called names[k] (e.g. the
    channels "ch0", "ch1" of channel diarization)."""
    return turns_and_overlaps(probs, frame_s, regions, min_turn_s, names)[0]


def turns_and_overlaps(
    probs: np.ndarray,
    frame_s: float,
    regions: Sequence[Span],
    min_turn_s: float = 0.3,
    names: Sequence[str] | None = None,
    active: float = 0.5,
    min_overlap_s: float = 0.1,
) -> tuple[list[Span], list[Overlap]]:
    """`exclusive_turns` and `overlapped_speech` of the same activity, with the same speaker names (a
    speaker who is only ever heard under someone else is named after the others)."""
    runs = _exclusive_runs(np.asarray(probs, dtype=np.float64), frame_s, regions, min_turn_s)
    labels_of: dict[int, str] = {}

    def name_of(k: int) -> str:  # by first appearance as the dominant speaker, unless `names` says
        return names[k] if names is not None else labels_of.setdefault(k, f"spk{len(labels_of)}")

    for _s, _e, spk in runs:
        name_of(spk)
    turns: list[Span] = []
    for s, e, spk in runs:
        name = name_of(spk)
        if turns and turns[-1].speaker == name and abs(turns[-1].end - s) < 1e-9:
            turns[-1] = Span(turns[-1].start, e, name)
        else:
            turns.append(Span(float(s), float(e), name))
    overlaps = [
        Overlap(s, e, tuple(name_of(k) for k in cols))
        for s, e, cols in _overlap_runs(np.asarray(probs, dtype=np.float64), frame_s, regions, active, min_overlap_s)
    ]
    return turns, overlaps


def _exclusive_runs(
    probs: np.ndarray, frame_s: float, regions: Sequence[Span], min_turn_s: float
) -> list[tuple[float, float, int]]:
    turns: list[tuple[float, float, int]] = []
    n_frames = probs.shape[0]
    for region in regions:
        lo = min(int(math.floor(region.start / frame_s)), max(n_frames - 1, 0))
        hi = max(min(int(math.ceil(region.end / frame_s)), n_frames), lo + 1)
        labels = speaker_per_frame(probs[lo:hi]) if n_frames else np.zeros(1, dtype=int)
        runs: list[list[int]] = []  # [first_frame, end_frame, speaker]
        for j, spk in enumerate(labels):
            if runs and runs[-1][2] == spk:
                runs[-1][1] = lo + j + 1
            else:
                runs.append([lo + j, lo + j + 1, int(spk)])
        min_frames = max(1, int(round(min_turn_s / frame_s)))
        smoothed: list[list[int]] = []
        for run in runs:
            if smoothed and (smoothed[-1][2] == run[2] or run[1] - run[0] < min_frames):
                smoothed[-1][1] = run[1]  # same speaker, or too short to be a turn: absorbed
            else:
                smoothed.append(list(run))
        if len(smoothed) > 1 and smoothed[0][1] - smoothed[0][0] < min_frames:
            smoothed[1][0] = smoothed[0][0]  # a too-short first run goes to the next speaker
            smoothed.pop(0)
        for k, (a, b, spk) in enumerate(smoothed):
            s = region.start if k == 0 else max(region.start, a * frame_s)
            e = region.end if k == len(smoothed) - 1 else min(region.end, b * frame_s)
            if e > s:
                turns.append((s, e, spk))
    return turns


def overlapped_speech(
    probs: np.ndarray,
    frame_s: float,
    regions: Sequence[Span],
    names: Sequence[str] | None = None,
    active: float = 0.5,
    min_overlap_s: float = 0.1,
) -> list[Overlap]:
    """Where two or more speakers talk at once: frames inside `regions` where at least two columns
    of `probs` (T, S) reach `active`. Gaps shorter than `min_overlap_s` are bridged, then runs shorter
    than it are dropped (a frame of co-activity at a turn change is the model's blur, not a second
    voice). Each overlap names every speaker active in it (column k is names[k], default "spk<k>";
    `turns_and_overlaps` names them as `exclusive_turns` does). Sorted, within the regions."""
    probs = np.asarray(probs, dtype=np.float64)
    return [
        Overlap(s, e, tuple(names[k] if names is not None else f"spk{k}" for k in cols))
        for s, e, cols in _overlap_runs(probs, frame_s, regions, active, min_overlap_s)
    ]


def _overlap_runs(
    probs: np.ndarray, frame_s: float, regions: Sequence[Span], active: float, min_overlap_s: float
) -> list[tuple[float, float, list[int]]]:
    if probs.ndim != 2 or probs.shape[1] < 2 or not probs.shape[0]:
        return []
    on = probs >= active
    both = on.sum(axis=1) >= 2
    min_frames = max(1, int(math.ceil(min_overlap_s / frame_s - 1e-9)))
    out: list[tuple[float, float, list[int]]] = []
    for region in regions:
        lo = max(0, int(math.floor(region.start / frame_s)))
        hi = min(len(both), int(math.ceil(region.end / frame_s)))
        runs: list[list[int]] = []  # [first_frame, end_frame]
        for j in np.where(both[lo:hi])[0] + lo:
            if runs and j - runs[-1][1] < min_frames:
                runs[-1][1] = j + 1  # a gap shorter than an overlap is bridged
            else:
                runs.append([j, j + 1])
        for j, k in runs:
            s, e = max(region.start, j * frame_s), min(region.end, k * frame_s)
            if k - j >= min_frames and e > s:
                cols = [int(c) for c in np.where(on[j:k].any(axis=0))[0]]
                out.append((round(float(s), 3), round(float(e), 3), cols))
    return out


def _bounds(o: Overlap | dict) -> tuple[float, float]:
    return (o["start"], o["end"]) if isinstance(o, dict) else (o.start, o.end)


def overlap_seconds(start: float, end: float, overlaps: Sequence[Overlap | dict] | None) -> float | None:
    """Seconds of [start, end] in overlapped speech (`Overlap`s, or their rows); None when the
    backend could not tell."""
    if overlaps is None:
        return None
    return round(sum(max(0.0, min(end, b) - max(start, a)) for a, b in map(_bounds, overlaps)), 3)


def word_in_overlap(start: float, end: float, overlaps: Sequence[Overlap | dict] | None) -> bool | None:
    """Whether a word [start, end] was spoken over someone else: at least half of it in overlapped
    speech (the same larger-share rule that gives the word its speaker); None when the backend could
    not tell. A zero-length word counts where its instant lies."""
    if overlaps is None:
        return None
    if end <= start:
        return any(a <= start < b for a, b in map(_bounds, overlaps))
    inside = sum(max(0.0, min(end, b) - max(start, a)) for a, b in map(_bounds, overlaps))
    return inside >= 0.5 * (end - start) - 1e-9


def speaker_per_frame(probs: np.ndarray, active: float = 0.5) -> np.ndarray:
    """Column index of the most probable speaker per frame of `probs` (T, S); frames where nobody
    reaches `active` (a pause inside a VAD region) take the speaker of the nearest active frame."""
    labels = probs.argmax(axis=1)
    is_active = probs.max(axis=1) >= active
    if is_active.all() or not is_active.any():
        return labels
    idx = np.where(is_active)[0]
    pos = np.searchsorted(idx, np.arange(len(labels)))
    left = idx[np.clip(pos - 1, 0, len(idx) - 1)]
    right = idx[np.clip(pos, 0, len(idx) - 1)]
    frames = np.arange(len(labels))
    nearest = np.where(np.abs(frames - left) <= np.abs(right - frames), left, right)
    return labels[nearest]


def stitch_chunk_activity(glob: np.ndarray, p: np.ndarray, f0: int, overlap: int) -> np.ndarray:
    """Merge one chunk's speaker activity `p` (T, S), starting at global frame `f0` and sharing its
    first `overlap` frames with what `glob` (T_total, G) already holds, into `glob`: the chunk's
    speakers are matched to global columns by co-activity on the overlap (Hungarian assignment; a
    match needs more than one frame's worth of shared activity); unmatched active speakers become
    new columns, silent slots are dropped. Overlap frames are averaged. Returns the new `glob`."""
    from scipy.optimize import linear_sum_assignment  # heavy: SciPy takes about a second to import

    total = glob.shape[0]
    p = p[: total - f0]
    overlap = min(overlap, len(p))
    mapping: dict[int, int] = {}
    if overlap > 0:
        a, b = glob[f0 : f0 + overlap], p[:overlap]
        sim = np.minimum(a[:, :, None], b[:, None, :]).sum(axis=0)  # (G, S)
        rows, cols = linear_sum_assignment(-sim)
        for g, s in zip(rows, cols):
            if sim[g, s] > 1.0:  # at least one frame's worth of shared activity
                mapping[int(s)] = int(g)
    for s in range(p.shape[1]):
        if s not in mapping:
            if p[:, s].max() < 0.5:
                continue  # a silent slot of this chunk
            glob = np.concatenate([glob, np.zeros((total, 1), dtype=glob.dtype)], axis=1)
            mapping[s] = glob.shape[1] - 1
    for s, g in mapping.items():
        seg = glob[f0 : f0 + len(p), g]
        new = p[:, s].copy()
        new[:overlap] = (seg[:overlap] + new[:overlap]) / 2
        glob[f0 : f0 + len(p), g] = new
    return glob
