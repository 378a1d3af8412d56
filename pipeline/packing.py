"""Window packing: utterances -> ASR inputs, and the model's words back to utterances.

A model that pads every input to a fixed window (Whisper: 30 s) wastes most of each call on a 5 s
utterance, so short utterances share a window with silence between them (cut & merge, as WhisperX
and faster-whisper's batched pipeline do). This module is the whole of that, model-free:

    pack(utterances, languages, window_s, mode, gap_s, min_piece_s) -> [Window]   the one entry point
    Window.split(result)         the window's words -> each packed utterance (clip-relative times)
    Window.skipped(min_cps)      the packed utterances the model passed over -> retry(...) -> windows again
    Window.cut(switch, gap_s)    a window whose utterances speak different languages -> pieces
    Utterance.join_pieces()      an utterance cut across two windows gets its words back whole
    by_speaker(utterance, turns) a transcribed utterance -> one piece per run of one speaker's words

Filling windows (mode "recording", `min_piece_s` > 0): whole utterances leave ~7 s of a 30 s window
empty on average; an utterance that does not fit the room left is cut at a pause inside it (the
latest pause VAD heard that fits: `cut_point`; without VAD, the quietest 100 ms if it is a real
pause: `pause_at`), its head fills the window and its tail opens the next. The output keeps the utterance whole: its pieces' words are joined back after ASR.

Times: an `Utterance`'s words are relative to its own clip; a `Window`'s offsets are seconds from
the window's start. Nothing here knows a model; `tests/test_packing.py` drives it with numbers.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import Literal, Sequence

import numpy as np

from pipeline.batching import pack_consecutive, pack_windows
from pipeline.records import NO_SPACE_LANGUAGES, SAMPLE_RATE, AsrResult, LanguageSwitch, Span
from pipeline.timeline import speaker_at, speaker_runs

PackMode = Literal["none", "recording", "corpus"]


@dataclass
class Utterance:
    """One utterance on its way through LID and ASR: where it came from (`row`, `span`), its
    samples, and what the models said about it."""

    row: int  # the recording's row in the stage's batch
    span: dict  # the recording stage's span: start, end (seconds, recording timeline), speaker, ...
    clip: np.ndarray
    result: AsrResult | None = None
    error: str | None = None
    lid: tuple[str, float] | None = None  # from a separate LID pass
    padded_s: float = 0.0  # its share of the model calls' padded seconds and wall time
    wall_s: float = 0.0
    offset_s: float = 0.0  # a piece: where it starts inside the whole utterance's clip
    retried: int = 0  # times it was sent again because a packed window passed over it (`retry`)
    pieces: list["Utterance"] = field(default_factory=list)  # set when it was cut to fill windows

    @property
    def duration(self) -> float:
        return len(self.clip) / SAMPLE_RATE

    def cut(self, at_s: float) -> tuple["Utterance", "Utterance"]:
        """Head and tail of this utterance (or piece) at `at_s` seconds into its clip."""
        n = int(at_s * SAMPLE_RATE)
        head = Utterance(self.row, self.span, self.clip[:n], lid=self.lid, offset_s=self.offset_s)
        tail = Utterance(self.row, self.span, self.clip[n:], lid=self.lid, offset_s=self.offset_s + n / SAMPLE_RATE)
        return head, tail

    def join_pieces(self) -> None:
        """Result, error and cost of a cut utterance from its pieces (no-op for a whole one). Words
        move back onto the utterance's clip; the language is the one spoken longest."""
        if not self.pieces:
            return
        self.padded_s = sum(p.padded_s for p in self.pieces)
        self.wall_s = sum(p.wall_s for p in self.pieces)
        self.error = next((p.error for p in self.pieces if p.error), None)
        if self.error or any(p.result is None for p in self.pieces):
            self.error = self.error or "asr: a piece of the utterance got no result"
            return
        results = [p.result for p in self.pieces]
        weights = [p.duration for p in self.pieces]
        spoken: dict[str | None, float] = {}
        for r, w in zip(results, weights):
            spoken[r.language] = spoken.get(r.language, 0.0) + w
        language = max(spoken, key=spoken.__getitem__)
        words = [w.shifted(p.offset_s, 0.0, self.duration) for p in self.pieces for w in p.result.words]
        text = join_words([r.text for r in results if r.text], language)
        self.result = AsrResult(
            text=text,
            words=words,
            confidence=float(np.mean([w.confidence for w in words]))
            if words
            else float(np.average([r.confidence for r in results], weights=weights)),
            language=language,
            language_prob=_weighted([r.language_prob for r in results], weights),
            avg_logprob=_weighted([r.avg_logprob for r in results], weights),
            no_speech_prob=min((r.no_speech_prob for r in results if r.no_speech_prob is not None), default=None),
            compression_ratio=compression_ratio(text),
        )


@dataclass
class Window:
    """One ASR input: one utterance, or several of one language laid out with `gap_s` of silence
    between them."""

    items: list[Utterance]
    offsets: list[float]  # seconds: where each utterance starts inside `audio`
    audio: np.ndarray
    language: str | None  # None: the ASR backend reads it (fused LID)

    @classmethod
    def of(cls, items: list[Utterance], language: str | None, gap_s: float) -> "Window":
        if len(items) == 1:
            return cls(items, [0.0], items[0].clip, language)
        gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
        pieces, offsets, pos = [], [], 0
        for k, it in enumerate(items):
            if k:
                pieces.append(gap)
                pos += len(gap)
            offsets.append(pos / SAMPLE_RATE)
            pieces.append(it.clip)
            pos += len(it.clip)
        return cls(items, offsets, np.concatenate(pieces), language)

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def parts(self) -> list[tuple[float, float]]:
        """Where each packed utterance lies in `audio`, in seconds."""
        return [(o, o + it.duration) for o, it in zip(self.offsets, self.items)]

    def alone(self) -> list["Window"]:
        """The window taken apart: one window per utterance (to retry a failed call item by item)."""
        return [Window.of([it], self.language, 0.0) for it in self.items]

    def cut(self, switch: LanguageSwitch, gap_s: float) -> list["Window"]:
        """The window cut where its utterances' language changes: one piece per run of one language."""
        pieces: list[Window] = []
        run: list[Utterance] = []
        for k, it in enumerate(self.items):
            if run and switch.languages[k][0] != switch.languages[k - 1][0]:
                pieces.append(Window.of(run, self.language, gap_s))
                run = []
            run.append(it)
        pieces.append(Window.of(run, self.language, gap_s))
        return pieces

    def split(self, res: AsrResult) -> None:
        """Give each packed utterance the words whose middle falls inside it, clip-relative."""
        if len(self.items) == 1:
            self.items[0].result = res
            return
        for k, (it, start) in enumerate(zip(self.items, self.offsets)):
            lo, hi = self._bounds(k)
            words = [w.shifted(-start, 0.0, it.duration) for w in res.words if lo <= (w.start + w.end) / 2 < hi]
            it.result = replace(
                res,
                text=join_words([w.word for w in words], res.language),
                words=words,
                confidence=float(np.mean([w.confidence for w in words])) if words else 0.0,
            )
            it.result.compression_ratio = compression_ratio(it.result.text)

    def skipped(self, min_cps: float, min_s: float = 1.5) -> list[Utterance]:
        """After `split`: the packed utterances the model passed over. Whisper decoding a window of
        several utterances sometimes leaves one out whole (on four long test files, 165 of 608
        English reference words were deleted packed), so an utterance of `min_s` or more whose words
        make fewer than `min_cps` characters per second is sent again (`retry`). Normal speech runs
        at 10-15 characters per second."""
        if len(self.items) < 2 or not min_cps:
            return []
        return [
            it
            for it in self.items
            if it.duration >= min_s and len(it.result.text if it.result else "") < min_cps * it.duration
        ]

    def _bounds(self, k: int) -> tuple[float, float]:
        """Window-time range owned by utterance k: its span, extended halfway into the gaps beside it."""
        ends = [o + it.duration for o, it in zip(self.offsets, self.items)]
        lo = float("-inf") if k == 0 else (ends[k - 1] + self.offsets[k]) / 2
        hi = float("inf") if k == len(self.items) - 1 else (ends[k] + self.offsets[k + 1]) / 2
        return lo, hi


def pack(
    items: Sequence[Utterance],
    languages: Sequence[str | None],
    window_s: float | None,
    mode: PackMode,
    gap_s: float,
    min_piece_s: float = 0.0,
) -> list[Window]:
    """The ASR inputs for `items` (in time order per recording), each with its language (None:
    the model detects it). Without a window (`window_s` None) or with `mode` "none": one window per
    utterance. "recording": consecutive utterances of one recording, speaker and language share a
    window, and with `min_piece_s` > 0 an utterance that does not fit is cut at a pause to fill it
    (pieces of at least `min_piece_s`). "corpus": utterances of one language from any recording,
    first-fit decreasing."""
    items = list(items)
    if not window_s or mode == "none" or len(items) < 2:
        return [Window.of([it], lang, 0.0) for it, lang in zip(items, languages)]
    if mode == "recording" and min_piece_s > 0:
        return _fill(items, languages, window_s, gap_s, min_piece_s)
    durations = [it.duration for it in items]
    if mode == "corpus":
        groups = pack_windows(durations, list(languages), window_s, gap_s)
    else:
        keys = [(it.row, it.span["speaker"], lang) for it, lang in zip(items, languages)]
        groups = pack_consecutive(durations, keys, window_s, gap_s)
    return [Window.of([items[i] for i in g], languages[g[0]], gap_s) for g in groups]


def retry(skipped: list[tuple[Utterance, str | None]], window_s: float | None, gap_s: float) -> list[Window]:
    """Windows for the utterances that packed windows passed over (`Window.skipped`), each with its
    window's language: the first time packed among themselves, as "recording" packing does (whether
    Whisper skips an utterance depends on what is beside it), the second time each alone, where
    nothing can be passed over."""
    for it, _ in skipped:
        it.retried += 1
    # in time order per recording: the calls they come from were sorted by window duration
    again = sorted(
        ((it, lang) for it, lang in skipped if it.retried == 1),
        key=lambda x: (x[0].row, x[0].span["start"] + x[0].offset_s),
    )
    out = [Window.of([it], lang, 0.0) for it, lang in skipped if it.retried > 1]
    return out + pack([it for it, _ in again], [lang for _, lang in again], window_s, "recording", gap_s)


def _fill(
    items: list[Utterance], languages: Sequence[str | None], window_s: float, gap_s: float, min_piece_s: float
) -> list[Window]:
    """Consecutive packing (as `pipeline.batching.pack_consecutive`) that cuts an utterance which does not
    fit at a pause, so the window is filled; the pieces are recorded on their utterance."""
    out: list[Window] = []
    current: list[Utterance] = []
    used, key = 0.0, None

    def close() -> None:
        nonlocal current, used
        if current:
            out.append(Window.of(current, key[2], gap_s))
        current, used = [], 0.0

    for whole, lang in zip(items, languages):
        k = (whole.row, whole.span["speaker"], lang)
        if k != key:
            close()
            key = k
        it = whole
        while current and used + gap_s + it.duration > window_s:
            at = cut_point(it, window_s - used - gap_s, min_piece_s)
            if at is not None:
                head, it = it.cut(at)
                whole.pieces.append(head)
                current.append(head)
            close()
        if it is not whole:
            whole.pieces.append(it)
        used += (gap_s if current else 0.0) + it.duration
        current.append(it)
    close()
    return out


def cut_point(it: Utterance, room_s: float, min_piece_s: float) -> float | None:
    """Seconds into `it`'s clip where it may be cut so that its head fits `room_s`, both pieces at
    least `min_piece_s`: the latest pause VAD heard there (`span["pauses"]`, recording timeline); for
    an utterance that came without them (no VAD), the quietest frame if it is a pause (`pause_at`)."""
    pauses = it.span.get("pauses")
    if pauses is None:
        return pause_at(it.clip, room_s, min_piece_s)
    origin = it.span["start"] + it.offset_s
    hi = min(room_s, it.duration - min_piece_s)
    fits = [p - origin for p in pauses if min_piece_s <= p - origin <= hi]
    return round(max(fits), 3) if fits else None


def pause_at(clip: np.ndarray, room_s: float, min_piece_s: float, frame_s: float = 0.1) -> float | None:
    """Seconds into `clip` where it can be cut so that its head fits `room_s`: the quietest
    `frame_s` frame between halfway and the room's end (both pieces at least `min_piece_s`), if
    that frame is a pause (energy below a tenth of the clip's median frame: -10 dB); else None."""
    n = int(frame_s * SAMPLE_RATE)
    hi = min(room_s, len(clip) / SAMPLE_RATE - min_piece_s)
    lo = max(min_piece_s, hi / 2)
    if hi - lo < 2 * frame_s or len(clip) < 4 * n:
        return None
    energy = (clip[: len(clip) // n * n].astype(np.float64).reshape(-1, n) ** 2).mean(axis=1)
    a, b = int(np.ceil(lo / frame_s)), int(hi / frame_s)
    k = a + int(np.argmin(energy[a:b]))
    if energy[k] > 0.1 * float(np.median(energy)):
        return None
    return (k + 0.5) * frame_s


def _weighted(values: list[float | None], weights: list[float]) -> float | None:
    if any(v is None for v in values):
        return None
    return float(np.average(values, weights=weights))


def by_speaker(it: Utterance, turns: list[dict]) -> list[Utterance]:
    """A transcribed utterance -> one piece per run of words with one speaker (`timeline.speaker_runs`):
    each piece keeps its words, its share of the text and of the cost, and every signal of the
    whole; its span runs from its first word to its last (the first piece starts, and the last
    ends, where the utterance did). Without words it takes the speaker it overlaps most."""
    spans = [Span(t["start"], t["end"], t["speaker"]) for t in turns]
    res, start, end = it.result, it.span["start"], it.span["end"]
    if res is None or not res.words:
        return [replace(it, span={**it.span, "speaker": speaker_at(start, end, spans)})]
    runs = speaker_runs([(start + w.start, start + w.end) for w in res.words], spans)
    pieces = []
    for k, (who, idx) in enumerate(runs):
        words = [res.words[i] for i in idx]
        a = start if k == 0 else round(start + words[0].start, 3)
        b = end if k == len(runs) - 1 else round(start + words[-1].end, 3)
        moved = [replace(w.shifted(start - a), speaker=who) for w in words]  # relative to the piece
        share = len(idx) / len(res.words)
        piece = (
            res
            if len(runs) == 1
            else replace(
                res,
                text=join_words([w.word for w in words], res.language),
                confidence=float(np.mean([w.confidence for w in words])),
            )
        )
        pieces.append(
            replace(
                it,
                span={**it.span, "start": a, "end": b, "speaker": who},
                result=replace(piece, words=moved),
                padded_s=it.padded_s * share,
                wall_s=it.wall_s * share,
            )
        )
    return pieces


def join_words(words: list[str], language: str | None) -> str:
    """Words back into text (Whisper's words carry their leading space, NeMo's do not)."""
    return ("" if language in NO_SPACE_LANGUAGES else " ").join(w.strip() for w in words).strip()


def compression_ratio(text: str) -> float:
    """gzip ratio of the text, as faster-whisper computes it (its `get_compression_ratio`; written
    here so that a NeMo job does not import faster-whisper's transcribe module for one line)."""
    if not text:
        return 0.0
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))
