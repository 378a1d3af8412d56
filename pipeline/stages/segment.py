"""Segment stage (actor): pooled, duration-bucketed LID -> ASR -> punctuation -> quality.

Segments of every recording in the Ray batch are pooled, sorted by duration and packed into model
calls under a padded-seconds budget (pipeline/batching.py), then regrouped per recording. Language
is identified per segment, so a file that switches language is transcribed in both: by a separate
LID model, or (Whisper) fused into the ASR call, which reads each packed segment's language from the
window's own encoder pass and hands back a window that switches language, to be cut and run again. A model call
that fails is retried item by item; an item that still fails marks its recording "error" with the
message, and the other recordings of the batch are unaffected.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pyarrow as pa

from pipeline.backends.registry import make_asr, make_lid
from pipeline.batching import pack_consecutive, pack_windows, plan_batches, with_quadratic
from pipeline import vocabulary
from pipeline.config import JobConfig
from pipeline.records import NO_SPACE_LANGUAGES, SEGMENT_TYPE, AsrResult, LanguageSwitch, Span, Word, peak_rss_mb
from pipeline.stages.punctuation import needs_punctuation_warning
from pipeline.stages.quality import judge, text_signals
from pipeline.stages.decode import samples_at
from pipeline.stages.recording import SEGMENTED_SCHEMA
from pipeline.timeline import speaker_at, speaker_runs

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000

_KEEP = [f for f in SEGMENTED_SCHEMA.names if f not in ("audio", "spans", "turns")]  # audio is dropped here

TRANSCRIBED_SCHEMA = pa.schema(
    [SEGMENTED_SCHEMA.field(n) for n in _KEEP]
    + [
        ("language", pa.string()),
        ("segments", pa.list_(SEGMENT_TYPE)),
        ("punctuated", pa.bool_()),
        ("asr_audio_seconds", pa.float64()),
        ("asr_padded_seconds", pa.float64()),
        ("asr_wall_seconds", pa.float64()),
        ("segment_peak_rss_mb", pa.float64()),
        ("vocabulary_hits", pa.int32()),  # segments holding a vocabulary term (None: no vocabulary)
        ("vocabulary_warning", pa.string()),  # why the ASR backend could not honour the vocabulary
    ]
)


@dataclass
class _Item:
    row: int
    span: dict
    clip: np.ndarray
    result: AsrResult | None = None
    error: str | None = None
    lid: tuple[str, float] | None = None
    padded_s: float = 0.0
    wall_s: float = 0.0

    @property
    def duration(self) -> float:
        return len(self.clip) / SAMPLE_RATE


@dataclass
class _Unit:
    """What one ASR input holds: one segment, or several short segments of one language packed into
    a shared window with silence between them (Whisper pads every input to 30 s anyway)."""

    items: list[_Item]
    offsets: list[float]  # seconds: where each item starts inside `audio`
    audio: np.ndarray
    language: str | None

    @classmethod
    def pack(cls, items: list[_Item], language: str | None, gap_s: float) -> "_Unit":
        gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
        pieces, offsets, pos = [], [], 0
        for k, it in enumerate(items):
            if k:
                pieces.append(gap)
                pos += len(gap)
            offsets.append(pos / SAMPLE_RATE)
            pieces.append(it.clip)
            pos += len(it.clip)
        return cls(items, offsets, np.concatenate(pieces) if len(pieces) > 1 else items[0].clip, language)

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def parts(self) -> list[tuple[float, float]]:
        """Where each packed segment lies in `audio`, in seconds."""
        return [(o, o + it.duration) for o, it in zip(self.offsets, self.items)]

    def cut(self, switch: LanguageSwitch, gap_s: float) -> list["_Unit"]:
        """The window cut where its segments' language changes: one piece per run of one language."""
        pieces: list[_Unit] = []
        run: list[_Item] = []
        for k, it in enumerate(self.items):
            if run and switch.languages[k][0] != switch.languages[k - 1][0]:
                pieces.append(_Unit.pack(run, self.language, gap_s))
                run = []
            run.append(it)
        pieces.append(_Unit.pack(run, self.language, gap_s))
        return pieces

    def split(self, res: AsrResult) -> None:
        """Give each packed segment the words whose middle falls inside it (times made clip-relative)."""
        if len(self.items) == 1:
            self.items[0].result = res
            return
        from faster_whisper.transcribe import get_compression_ratio

        for k, (it, start) in enumerate(zip(self.items, self.offsets)):
            lo, hi = self._bounds(k)
            mine = [w for w in res.words if lo <= (w.start + w.end) / 2 < hi]
            words = [
                Word(w.word, round(min(max(w.start - start, 0.0), it.duration), 3),
                     round(min(max(w.end - start, 0.0), it.duration), 3), w.confidence)
                for w in mine
            ]
            text = _join_words([w.word for w in words], res.language)
            it.result = AsrResult(
                text=text,
                words=words,
                confidence=float(np.mean([w.confidence for w in words])) if words else 0.0,
                language=res.language,
                language_prob=res.language_prob,
                avg_logprob=res.avg_logprob,
                no_speech_prob=res.no_speech_prob,
                compression_ratio=float(get_compression_ratio(text)) if text else 0.0,
            )

    def _bounds(self, k: int) -> tuple[float, float]:
        """Window-time range owned by item k: its span, extended halfway into the gaps beside it."""
        ends = [o + it.duration for o, it in zip(self.offsets, self.items)]
        lo = float("-inf") if k == 0 else (ends[k - 1] + self.offsets[k]) / 2
        hi = float("inf") if k == len(self.items) - 1 else (ends[k] + self.offsets[k + 1]) / 2
        return lo, hi


def padded_budget(cfg: JobConfig, use_gpu: bool) -> float:
    """Padded audio seconds per model call. On a GPU with `batching.max_padded_s_per_gib` set, the
    budget follows the memory of the GPU share this actor reserves, so one preset fits a 24 GB L4
    and an 80 GB H100 without retuning; elsewhere it is `batching.max_padded_s`."""
    per_gib = cfg.batching.max_padded_s_per_gib
    if not (use_gpu and per_gib):
        return cfg.batching.max_padded_s
    import torch

    total_gib = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
    share = min(1.0, cfg.segment_stage.resources.num_gpus)
    budget = per_gib * total_gib * share
    log.info("segment stage: %.0f padded s per call (%.1f GiB GPU x %.2f share)", budget, total_gib, share)
    return budget


def _by_speaker(it: _Item, turns: list[dict]) -> list[_Item]:
    """A transcribed segment -> one piece per run of words with one speaker (pipeline/timeline.py
    `speaker_runs`): each piece keeps its words, its share of the text and of the cost, and every
    signal of the whole; its span runs from its first word to its last (the first piece starts, and
    the last ends, where the segment did). Without words the segment takes the speaker it overlaps most."""
    spans = [Span(t["start"], t["end"], t["speaker"]) for t in turns]
    res, start, end = it.result, it.span["start"], it.span["end"]
    if res is None or not res.words:
        return [replace(it, span={**it.span, "speaker": speaker_at(start, end, spans)})]
    runs = speaker_runs([(start + w.start, start + w.end) for w in res.words], spans)
    if len(runs) == 1:
        words = [replace(w, speaker=runs[0][0]) for w in res.words]
        return [replace(it, span={**it.span, "speaker": runs[0][0]}, result=replace(res, words=words))]
    pieces = []
    for k, (who, idx) in enumerate(runs):
        words = [res.words[i] for i in idx]
        a = start if k == 0 else round(start + words[0].start, 3)
        b = end if k == len(runs) - 1 else round(start + words[-1].end, 3)
        shift = a - start  # word times stay relative to the piece's own start
        moved = [replace(w, start=round(w.start - shift, 3), end=round(w.end - shift, 3), speaker=who) for w in words]
        share = len(idx) / len(res.words)
        piece = replace(
            res, words=moved, text=_join_words([w.word for w in words], res.language),
            confidence=float(np.mean([w.confidence for w in words])),
        )
        pieces.append(replace(it, span={**it.span, "start": a, "end": b, "speaker": who}, result=piece,
                              padded_s=it.padded_s * share, wall_s=it.wall_s * share))
    return pieces


def _join_words(words: list[str], language: str | None) -> str:
    """Words back into text (Whisper's words carry their leading space, NeMo's do not)."""
    return ("" if language in NO_SPACE_LANGUAGES else " ").join(w.strip() for w in words).strip()


class SegmentStage:
    name = "segment"
    vocabulary = None  # the job's VocabularyConfig when it has terms (set in __init__)
    _vocab_warning: str | None = None

    def __init__(self, cfg: JobConfig):
        use_gpu = cfg.models.use_gpu(cfg.segment_stage.resources)
        self.cfg = cfg
        self.max_padded_s = padded_budget(cfg, use_gpu)
        self.asr = make_asr(cfg.asr, cfg.models, use_gpu)
        self.lid = make_lid(cfg.lid, cfg.asr, self.asr, cfg.models, use_gpu)
        # word boosting: the terms were resolved on the driver and travel inside cfg (pipeline/vocabulary.py)
        self.vocabulary = None if vocabulary.is_empty(cfg.vocabulary) else cfg.vocabulary
        self._vocab_warning: str | None = None
        self._matchers: dict[str | None, object] = {}
        if self.vocabulary is not None:
            setter = getattr(self.asr, "set_vocabulary", None)
            found = setter(self.vocabulary) if setter else [f"vocabulary ignored: ASR backend {cfg.asr.backend!r} has no word boosting"]
            self._vocab_warning = "; ".join(found) or None
        self.itn: Callable[[str, str | None], str] | None = None
        if cfg.itn.enabled:
            from pipeline.stages.itn import make_itn

            self.itn = make_itn(cfg.itn)

    @property
    def _fused(self) -> bool:
        """Whisper LID on the ASR model itself: languages come out of the ASR call, no separate pass."""
        return self.lid is not None and self.lid is self.asr

    def __call__(self, batch: pa.Table) -> pa.Table:
        speech = batch.column("audio")
        rows = batch.drop_columns(["audio"]).to_pylist()
        items: list[_Item] = []
        for r, row in enumerate(rows):
            if row["status"] != "ok" or not row["spans"]:
                continue
            audio = samples_at(speech, r)  # the recording's speech, read in place
            for span in row["spans"]:
                clip = audio[span["audio_offset"] : span["audio_offset"] + span["num_samples"]]
                items.append(_Item(r, span, clip))
        self._run_models(items)
        log.info("segment stage: %d segments pooled from %d recordings", len(items), len(rows))
        return self._regroup(rows, items)

    # -- models ---------------------------------------------------------------------------------
    def _run_models(self, items: list[_Item]) -> None:
        """Plan and run the model calls. A Whisper window whose packed segments turn out to speak
        different languages comes back cut (see `_call`); its pieces go through another round."""
        units = self._units(items)
        while units:
            units = self._run_round(units)

    def _run_round(self, units: list[_Unit]) -> list[_Unit]:
        bcfg = self.cfg.batching
        durations = [u.duration for u in units]
        cost = with_quadratic(self.asr.padded_seconds, bcfg.quadratic_s)
        # Whisper decodes one language per call: windows of a known language are planned by language
        groups = [u.language for u in units] if getattr(self.asr, "batch_by_language", False) else None
        again: list[_Unit] = []
        for idx in plan_batches(
            durations, cost, self.max_padded_s, bcfg.max_items, bcfg.enabled, bcfg.max_extra_padding, groups
        ):
            group = [units[i] for i in idx]
            t0 = time.perf_counter()
            again += self._call(group)
            wall = time.perf_counter() - t0
            padded = self.asr.padded_seconds([durations[i] for i in idx])
            speech = sum(it.duration for u in group for it in u.items) or 1.0
            for u in group:
                for it in u.items:  # attribute the call's cost to its segments by their share of speech
                    it.padded_s += padded * it.duration / speech
                    it.wall_s += wall * it.duration / speech
        return again

    def _units(self, items: list[_Item]) -> list[_Unit]:
        """The ASR inputs: segments alone, or (Whisper) packed into shared 30 s windows."""
        bcfg = self.cfg.batching
        window = getattr(self.asr, "window_s", None)
        packing = bool(window) and bcfg.pack != "none" and self.cfg.asr.word_timestamps and len(items) > 1
        if self._fused and (not packing or bcfg.pack == "recording"):
            # Whisper LID fused with ASR: each window's language is read from its own encoder pass
            # (per packed segment, so a switch inside a window is caught: see WhisperAsr.transcribe).
            if not packing:
                return [_Unit.pack([it], None, 0.0) for it in items]
            keys = [(it.row, it.span["speaker"]) for it in items]
            windows = pack_consecutive([it.duration for it in items], keys, window, bcfg.pack_gap_s)
            return [_Unit.pack([items[i] for i in w], None, bcfg.pack_gap_s) for w in windows]
        languages = self._identify(items)
        if not packing:
            return [_Unit.pack([it], lang, 0.0) for it, lang in zip(items, languages)]
        durations = [it.duration for it in items]
        if bcfg.pack == "corpus":
            idx_windows = pack_windows(durations, languages, window, bcfg.pack_gap_s)
        else:
            keys = [(it.row, it.span["speaker"], lang) for it, lang in zip(items, languages)]
            idx_windows = pack_consecutive(durations, keys, window, bcfg.pack_gap_s)
        return [_Unit.pack([items[i] for i in w], languages[w[0]], bcfg.pack_gap_s) for w in idx_windows]

    def _identify(self, items: list[_Item]) -> list[str | None]:
        """Language per segment from a separate LID pass (or the fixed `lid.language`). With bucketing
        on, calls take segments sorted by duration, so a padded LID model wastes little."""
        if self.lid is None:
            return [self.cfg.lid.language] * len(items)
        order = sorted(items, key=lambda it: it.duration) if self.cfg.batching.enabled else items
        step = self.cfg.batching.max_items
        for k in range(0, len(order), step):
            self._identify_chunk(order[k : k + step])
        return [it.lid[0] if it.lid else None for it in items]

    def _identify_chunk(self, chunk: list[_Item]) -> None:
        """One LID call; on failure, one call per segment; a segment that still fails is an error."""
        assert self.lid is not None
        clips = [it.clip for it in chunk]
        try:
            found = self.lid.identify(clips)
            for it, lid in zip(chunk, found):
                it.lid = lid
        except Exception as exc:  # noqa: BLE001
            if len(chunk) > 1:
                for it in chunk:
                    self._identify_chunk([it])
            else:
                log.exception("language ID failed")
                chunk[0].error = f"lid: {type(exc).__name__}: {exc}"

    def _call(self, group: list[_Unit]) -> list[_Unit]:
        """One model call; on failure, retry each unit alone, then each segment alone. Returns the
        pieces of windows the backend found to switch language, for another round."""
        pieces: list[_Unit] = []
        try:
            audio, languages = [u.audio for u in group], [u.language for u in group]
            if self._fused:
                results = self.asr.transcribe(audio, languages, parts=[u.parts for u in group])
            else:
                results = self.asr.transcribe(audio, languages)
            for u, res in zip(group, results):
                if isinstance(res, LanguageSwitch):
                    pieces += u.cut(res, self.cfg.batching.pack_gap_s)
                else:
                    u.split(res)
        except Exception as exc:  # noqa: BLE001
            if len(group) > 1:
                log.warning("ASR call on %d windows failed (%s); retrying one at a time", len(group), exc)
                return [p for u in group for p in self._call([u])]
            if len(group[0].items) > 1:
                return [p for it in group[0].items for p in self._call([_Unit.pack([it], group[0].language, 0.0)])]
            log.exception("segment failed")
            group[0].items[0].error = f"asr: {type(exc).__name__}: {exc}"
        return pieces

    # -- regroup --------------------------------------------------------------------------------
    def _regroup(self, rows: list[dict], items: list[_Item]) -> pa.Table:
        by_row: dict[int, list[_Item]] = {}
        for it in items:
            by_row.setdefault(it.row, []).append(it)
        punctuated = not needs_punctuation_warning(self.cfg.punctuation, self.asr)
        rss = peak_rss_mb()
        out = []
        for r, row in enumerate(rows):
            mine = sorted(by_row.get(r, []), key=lambda it: it.span["start"])
            rec = {k: row[k] for k in _KEEP}
            rec.update(
                language=None,
                segments=[],
                punctuated=punctuated if mine else None,
                asr_audio_seconds=sum(len(it.clip) / 16000 for it in mine),
                asr_padded_seconds=sum(it.padded_s for it in mine),
                asr_wall_seconds=sum(it.wall_s for it in mine),
                segment_peak_rss_mb=rss,
                vocabulary_hits=None,
                vocabulary_warning=self._vocab_warning if mine else None,
            )
            errors = [it.error for it in mine if it.error]
            if errors:
                rec.update(status="error", error=f"{len(errors)} of {len(mine)} segments failed; first: {errors[0]}")
            elif mine:
                if row.get("turns") is not None:  # diarization ran: speakers go to the words now
                    mine = [piece for it in mine for piece in _by_speaker(it, row["turns"])]
                rec["segments"] = [self._segment(k, it) for k, it in enumerate(mine)]
                spoken = [s for s in rec["segments"] if s["text"]]
                if not spoken:
                    rec["status"] = "no_speech"
                lang = Counter()
                for s in spoken:
                    lang[s["language"]] += s["duration"]
                rec["language"] = lang.most_common(1)[0][0] if lang else None
                if self.vocabulary is not None:
                    rec["vocabulary_hits"] = sum(1 for s in spoken if self._has_term(s["text"], s["language"]))
            out.append(rec)
        return pa.Table.from_pylist(out, schema=TRANSCRIBED_SCHEMA)

    def _has_term(self, text: str, language: str | None) -> bool:
        """Whether `text` holds a vocabulary term of its language (case-insensitive, whole words)."""
        self._matchers = getattr(self, "_matchers", {})
        if language not in self._matchers:
            self._matchers[language] = vocabulary.matcher(vocabulary.terms_for(self.vocabulary, language))
        return vocabulary.contains_term(text, self._matchers[language])

    def _segment(self, index: int, it: _Item) -> dict:
        res = it.result
        assert res is not None
        start, end = it.span["start"], it.span["end"]
        text = res.text
        language = res.language or (it.lid[0] if it.lid else self.cfg.lid.language)
        language_prob = res.language_prob if res.language_prob is not None else (it.lid[1] if it.lid else None)
        if self.itn and text:
            text = self.itn(text, language)
        words = [
            {
                "word": w.word,
                "start": round(min(max(start + w.start, start), end), 3),
                "end": round(min(max(start + w.end, start), end), 3),
                "confidence": w.confidence,
                "speaker": w.speaker,
            }
            for w in res.words
        ]
        duration = round(end - start, 3)
        seg = {
            "segment_index": index,
            "start": start,
            "end": end,
            "duration": duration,
            "speaker": it.span["speaker"],
            "language": language,
            "language_prob": language_prob,
            "text": text,
            "words": words,
            "confidence": res.confidence,
            "avg_logprob": res.avg_logprob,
            "no_speech_prob": res.no_speech_prob,
            "compression_ratio": res.compression_ratio,
            "chars_per_second": round(len(text) / duration, 3) if duration > 0 else None,
            **text_signals(text, language),
            "language_agreement": (it.lid[0] == res.language) if (it.lid and res.language) else None,
        }
        seg["accepted"], seg["reject_reasons"] = judge(seg, self.cfg.quality)
        return seg
