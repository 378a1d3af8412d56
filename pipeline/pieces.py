"""Long recordings as pieces: cut in decode, clipped in the recording stage, joined in the sink.

Why: a recording's samples are float32 at 16 kHz (4 h: 922 MB). Held whole, every stage's memory grows
with the longest file, and ASR waits until the whole file is decoded and VAD'd. Cut into pieces of
`decode.piece_s` (600 s), a stage holds one piece (~40 MB) and the first piece reaches ASR as soon as
it is decoded. The rules, one per stage:

- decode (`cut`): the boundary between piece k and k+1 is the quietest 100 ms within
  `piece_overlap_s` / 2 of (k+1) x `piece_s`, found in the decoded samples. Piece k answers for its
  core, from its boundary to the next, and carries `piece_overlap_s` of audio past both, so VAD sees the
  speech around a boundary in context.
- recording stage (`clip_to_core`): a piece keeps the speech regions of its core. A region across a
  boundary goes whole to the piece that holds most of it when both neighbours see all of it (each
  part within the overlap), else it is cut at the boundary, the quietest spot near it. Both pieces
  apply the same rule, so no speech is transcribed twice or lost.
- sink (`join`): once every piece of a recording is there, one recording row (segments in time order,
  renumbered; times summed; the worst status, every error kept) and one commit, as for a short file.
  With diarization, each piece has clustered its own speakers; their mean voices are clustered
  together (`stitch`), so a speaker keeps one label across the whole recording.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from pipeline.records import SAMPLE_RATE, Span

#: Length of the frames among which a boundary picks the quietest (s).
FRAME_S = 0.1
#: A clipped region shorter than this is dropped (a VAD edge, not speech).
MIN_REGION_S = 0.1


@dataclass(frozen=True)
class Piece:
    """Decoded samples of a recording or of one of its pieces.

    `index` is None for a recording that fits in one piece (`buffer` is then decode's own buffer)."""

    index: int | None
    start: float  # where `buffer`'s first sample lies in the recording (s)
    core_start: float  # the stretch this piece answers for (s)
    core_end: float
    last: bool
    buffer: Any  # float32 little-endian samples (bytearray or ndarray)

    def row(self) -> dict[str, Any]:
        """The piece columns of a decoded row (pipeline/records.py DECODED_SCHEMA)."""
        if self.index is None:
            return {"piece": None, "piece_start": None, "core_start": None, "core_end": None, "last_piece": None}
        return {
            "piece": self.index,
            "piece_start": self.start,
            "core_start": self.core_start,
            "core_end": self.core_end,
            "last_piece": self.last,
        }


def quietest(samples: np.ndarray, lo: int, hi: int) -> int:
    """Sample index of the middle of the quietest FRAME_S frame within samples[lo:hi]."""
    n = int(FRAME_S * SAMPLE_RATE)
    span = samples[lo:hi]
    frames = len(span) // n
    if frames < 1:
        return (lo + hi) // 2
    energy = (span[: frames * n].astype(np.float64).reshape(frames, n) ** 2).mean(axis=1)
    return lo + int(np.argmin(energy)) * n + n // 2


def cut(windows: Iterable[np.ndarray], piece_s: float, overlap_s: float) -> Iterator[Piece]:
    """Decoded windows -> pieces, each as soon as its audio is decoded (see the module doc).

    A recording no longer than `piece_s` + `overlap_s` (or any, with `piece_s` 0) comes out as ONE
    Piece with index None whose buffer is the one bytearray the windows were appended to: ~1x its
    samples, as `pipeline.audio.decode`. A longer one never holds more than about
    `piece_s` + 2 x `overlap_s` + one window."""
    p, v, w = int(piece_s * SAMPLE_RATE), int(overlap_s * SAMPLE_RATE), int(overlap_s * SAMPLE_RATE / 2)
    buf = bytearray()
    base = 0  # recording sample index of buf[0]
    k, bound = 0, 0  # the next piece's index and its first core sample

    def view(a: int, b: int | None = None) -> np.ndarray:
        return np.frombuffer(buf, dtype="<f4")[a - base : None if b is None else b - base]

    for win in windows:
        buf += memoryview(np.ascontiguousarray(win, dtype="<f4")).cast("B")
        decoded = base + len(buf) // 4
        # piece k's next boundary can be chosen once its search range and the audio after it are in
        while p and decoded > (k + 1) * p + w + v:
            nxt = quietest(view(base), (k + 1) * p - w - base, (k + 1) * p + w - base) + base
            lead = max(0, bound - v)
            samples = view(lead, nxt + v).copy()  # its own memory: the buffer moves on
            yield Piece(k, lead / SAMPLE_RATE, bound / SAMPLE_RATE, nxt / SAMPLE_RATE, False, samples)
            k, bound = k + 1, nxt
            drop = (bound - v) - base  # keep from the next piece's lead-in on
            del buf[: drop * 4]
            base += drop
    end = base + len(buf) // 4
    if k == 0:
        yield Piece(None, 0.0, 0.0, end / SAMPLE_RATE, True, buf)
        return
    lead = bound - v
    yield Piece(k, lead / SAMPLE_RATE, bound / SAMPLE_RATE, end / SAMPLE_RATE, True, view(lead).copy())


def clip_to_core(regions: list[Span], row: dict[str, Any], audio_s: float) -> list[Span]:
    """Speech regions of a piece (seconds into its `audio_s` of audio) that this piece answers for;
    a whole recording's regions as they are.

    A region inside the core is kept. A region across a boundary that both neighbours see whole
    (each part no longer than the overlap, and not cut off by this piece's audio edge) goes whole to
    the piece holding its larger part (a tie: the earlier piece), so a word just past a boundary is
    not left as a fragment too short to transcribe. A longer one is cut at the boundary, the quietest
    spot near it. Both neighbours apply the same rule to the same region, so each is kept once."""
    if row.get("piece") is None:
        return regions
    lo = row["core_start"] - row["piece_start"]
    hi = row["core_end"] - row["piece_start"]
    v = max(lo, audio_s - hi)  # the overlap: the lead-in before the core, or the tail after it
    edge = 0.05  # a region this close to the audio's edge may go on beyond it: not seen whole
    out = []
    for r in regions:
        if r.end <= lo or r.start >= hi:
            continue
        start, end = r.start, r.end
        if start < lo:  # across the boundary with the previous piece
            before, after = lo - start, end - lo
            if before <= v and after <= v and start > edge:
                if after <= before:
                    continue  # the previous piece holds the larger part: it is that piece's
            else:
                start = lo
        if end > hi:  # across the boundary with the next piece
            before, after = hi - r.start, end - hi
            if before <= v and after <= v and end < audio_s - edge:
                if after > before:
                    continue  # the next piece's
            else:
                end = hi
        if end - start >= MIN_REGION_S:
            out.append(Span(round(start, 3), round(end, 3), r.speaker))
    return out


# -- the sink's side -------------------------------------------------------------------------------
def complete(staged: set[int], last: int | None) -> bool:
    """Whether every piece 0..last is staged (`last`: the index of the piece marked last, if staged)."""
    return last is not None and set(range(last + 1)) <= staged


_SUMMED = (
    "duration",
    "speech_seconds",
    "overlap_seconds",
    "asr_audio_seconds",
    "asr_padded_seconds",
    "asr_wall_seconds",
    "recording_wall_seconds",
    "decode_wall_seconds",
    "vocabulary_guarded",
)
_PEAK = ("decode_peak_rss_mb", "recording_peak_rss_mb", "segment_peak_rss_mb")


def stitch(rows: list[dict[str, Any]], cfg: Any) -> dict[tuple[int, str], str]:
    """(piece, its speaker label) -> the recording's speaker label, by clustering every piece's
    speakers by voice: average link, stopped at the median of the thresholds the pieces clustered
    their own windows at (each follows its piece's voices: pipeline/clustering.py), within the job's
    speaker bounds (cfg is the DiarizationConfig). A voice is the
    mean of a speaker's unit d-vectors, so 1 - a.b is the average cosine distance between the two
    speakers' windows: the same scale as the threshold. A piece clusters its own windows first, so a
    speaker it split in two (a user's `num_speakers` it does not hold) is merged back here. A label
    that came without a voice (a piece too short to embed) goes to the most heard speaker."""
    from scipy.cluster.hierarchy import fcluster, linkage  # heavy: SciPy takes about a second to import
    from scipy.spatial.distance import squareform

    found = [(r["piece"], v) for r in rows for v in (r.get("voices") or [])]
    if not found:
        return {}
    keys = [(k, v["speaker"]) for k, v in found]
    voices = np.array([v["embedding"] for _, v in found], dtype=np.float64)
    seconds = [v["seconds"] for _, v in found]
    if len(keys) == 1:
        labels = np.ones(1, dtype=int)
    else:
        dist = np.clip(1.0 - voices @ voices.T, 0.0, 2.0)
        np.fill_diagonal(dist, 0.0)
        tree = linkage(squareform(dist, checks=False), method="average")
        thresholds = [v["threshold"] for _, v in found if v.get("threshold")]
        threshold = float(np.median(thresholds)) if thresholds else cfg.cluster_threshold
        labels = fcluster(tree, threshold, criterion="distance")
        bound = cfg.num_speakers or min(max(len(set(labels)), cfg.min_speakers), cfg.max_speakers)
        if bound != len(set(labels)):
            labels = fcluster(tree, bound, criterion="maxclust")
    order: dict[int, int] = {}
    for lab in labels:  # numbered by first appearance, as a whole recording's are
        order.setdefault(int(lab), len(order))
    mapping = {key: f"spk{order[int(lab)]}" for key, lab in zip(keys, labels)}
    heard: Counter = Counter()
    for key, s in zip(keys, seconds):
        heard[mapping[key]] += s
    most = heard.most_common(1)[0][0]
    for r in rows:
        for seg in r.get("segments") or []:
            for name in [seg.get("speaker"), *(w.get("speaker") for w in seg.get("words") or [])]:
                if name is not None:
                    mapping.setdefault((r["piece"], name), most)
    return mapping


def _relabel(row: dict[str, Any], mapping: dict[tuple[int, str], str]) -> None:
    k = row["piece"]
    for seg in row.get("segments") or []:
        if seg.get("speaker") is not None:
            seg["speaker"] = mapping[(k, seg["speaker"])]
        for w in seg.get("words") or []:
            if w.get("speaker") is not None:
                w["speaker"] = mapping[(k, w["speaker"])]


def join(pieces: list[dict[str, Any]], diarization: Any = None) -> dict[str, Any]:
    """The rows of one recording's pieces (segment stage output, any order) -> its one row.

    Status: "error" if any piece failed (the recording must be redone, so a rerun retries it), else
    "ok" if any piece holds speech, else "no_speech". Every piece's error or warning is kept.
    Speakers: with `diarization` (the job's DiarizationConfig) and pieces that carry voices, each
    piece's labels become the recording's (`stitch`)."""
    rows = sorted(pieces, key=lambda r: r["piece"])
    if diarization is not None and any(r.get("voices") for r in rows):
        mapping = stitch(rows, diarization)
        for r in rows:
            _relabel(r, mapping)
    out = dict(rows[0])
    out.update(piece=None, piece_start=None, core_start=None, core_end=None, last_piece=None, voices=None)
    for name in _SUMMED:
        values = [r.get(name) for r in rows if r.get(name) is not None]
        out[name] = sum(values) if values else None
    for name in _PEAK:
        out[name] = max((r.get(name) or 0.0 for r in rows), default=0.0)
    statuses = [r["status"] for r in rows]
    out["status"] = "error" if "error" in statuses else "ok" if "ok" in statuses else "no_speech"
    errors = [f"piece {r['piece']}: {r['error']}" for r in rows if r.get("error")]
    out["error"] = "; ".join(errors) or None
    segments = sorted((s for r in rows for s in (r.get("segments") or [])), key=lambda s: (s["start"], s["end"]))
    out["segments"] = [{**s, "segment_index": i} for i, s in enumerate(segments)]
    if out["status"] == "error":
        out["segments"] = []  # a failed recording commits no segments, as a short one does
    lang: Counter = Counter()
    for s in out["segments"]:
        if s.get("text"):
            lang[s["language"]] += s["end"] - s["start"]
    out["language"] = lang.most_common(1)[0][0] if lang else None
    speakers = {s.get("speaker") for s in out["segments"] if s.get("speaker") is not None}
    out["num_speakers"] = len(speakers) if speakers else (max((r.get("num_speakers") or 0) for r in rows) or 0)
    hits = [r.get("vocabulary_hits") for r in rows if r.get("vocabulary_hits") is not None]
    out["vocabulary_hits"] = sum(hits) if hits else None
    punct = [r.get("punctuated") for r in rows if r.get("punctuated") is not None]
    out["punctuated"] = all(punct) if punct else None
    return out


class PieceRegistry:
    """Which pieces of each long recording the sink has staged (a Ray actor per run, pipeline/execution/sink.py).

    One actor answers every write task in turn, so exactly one task is told to join and commit a
    recording: the one whose piece completed it. A retry of that task is told again (the same piece
    completes it); every other piece's task, retried or not, is told no."""

    def __init__(self) -> None:
        self.staged: dict[str, set[int]] = {}
        self.last: dict[str, int] = {}
        self.completer: dict[str, int] = {}

    def add_piece(self, recording_id: str, piece: int, last: bool) -> bool:
        """Piece `piece` of `recording_id` is staged; True if its task is the one to commit the recording."""
        if recording_id in self.completer:
            return self.completer[recording_id] == piece
        self.staged.setdefault(recording_id, set()).add(piece)
        if last:
            self.last[recording_id] = piece
        if complete(self.staged[recording_id], self.last.get(recording_id)):
            self.completer[recording_id] = piece
            del self.staged[recording_id]
            return True
        return False
