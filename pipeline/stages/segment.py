"""Segment stage (actor): pooled, duration-bucketed LID -> ASR -> punctuation -> quality.

The utterances of every recording in the pooling window are pooled, packed into ASR inputs
(pipeline/packing.py) and planned into model calls under a padded-seconds budget
(pipeline/batching.py), then regrouped per recording. What the stage plans from is what the
backends declare (`AsrCapabilities`, pipeline/backends/base.py), never their class.

Language is identified per utterance, so a file that switches language is transcribed in both: by
a separate LID model, or (`FusedLid`) by the ASR model from each window's own encoder pass, which
hands back a `LanguageSwitch` for a window whose utterances disagree; the window is cut and its
pieces go through another round. A model call that fails is retried window by window, then
utterance by utterance; an utterance that still fails marks its recording "error" with the
message, and the other recordings of the window are unaffected.

One actor may be called with several windows at once (`segment_stage.windows_at_once`, from Ray's
threads): their model calls all go through the stage's one thread pool, as many at once as the
backend declares (`concurrent_calls`), so a backend never sees more calls together than it takes.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Callable

import pyarrow as pa

from pipeline import vocabulary
from pipeline.audio_quality import segment_signals
from pipeline.backends.base import AsrBackend, FusedLid, LidBackend, check_results
from pipeline.backends.registry import make_asr, make_lid
from pipeline.batching import plan_batches, with_quadratic
from pipeline.config import JobConfig, SegmentStageConfig
from pipeline.packing import Utterance, Window, by_speaker, pack, retry
from pipeline.records import TRANSCRIBED_SCHEMA, LanguageSwitch, Segment, peak_rss_mb, samples_at
from pipeline.stages.itn import make_itn
from pipeline.stages.punctuation import punctuated
from pipeline.stages.quality import judge, text_signals
from pipeline.timeline import overlap_seconds, word_in_overlap

log = logging.getLogger(__name__)


def padded_budget(cfg: SegmentStageConfig, use_gpu: bool) -> float:
    """Padded audio seconds per model call. On a GPU with `segment_stage.batching.max_padded_s_per_gib` set, the
    budget follows the memory of the GPU share this actor reserves, so one preset fits a 24 GB L4
    and an 80 GB H100 without retuning; elsewhere it is `segment_stage.batching.max_padded_s`."""
    per_gib = cfg.batching.max_padded_s_per_gib
    if not (use_gpu and per_gib):
        return cfg.batching.max_padded_s
    import torch  # heavy: torch, only on a GPU

    total_gib = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
    share = min(1.0, cfg.resources.num_gpus)
    budget = per_gib * total_gib * share
    log.info("segment stage: %.0f padded s per call (%.1f GiB GPU x %.2f share)", budget, total_gib, share)
    return budget


class CallClock:
    """Wall time of model calls that may run at once (`asr.workers`, `windows_at_once`): while n calls
    run, each is charged 1/n of the time, so the report's ASR seconds add up to the time during which
    any call ran, never to more than the run's wall time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, float] = {}  # call token -> seconds charged so far
        self._tokens = itertools.count()
        self._last = time.perf_counter()

    def _advance(self) -> None:
        now = time.perf_counter()
        for token in self._running:
            self._running[token] += (now - self._last) / len(self._running)
        self._last = now

    def start(self) -> int:
        with self._lock:
            self._advance()
            token = next(self._tokens)
            self._running[token] = 0.0
            return token

    def stop(self, token: int) -> float:
        """The call's charged seconds."""
        with self._lock:
            self._advance()
            return self._running.pop(token)


class SegmentStage:
    name = "segment"

    def __init__(
        self,
        cfg: SegmentStageConfig,
        asr: AsrBackend,
        lid: LidBackend | FusedLid | None,
        max_padded_s: float | None = None,
    ):
        self.cfg, self.asr, self.lid = cfg, asr, lid
        self.max_padded_s = max_padded_s or cfg.batching.max_padded_s
        # word boosting: the terms were resolved on the driver and travel inside cfg (pipeline/vocabulary.py)
        self.vocabulary = None if vocabulary.is_empty(cfg.vocabulary) else cfg.vocabulary
        self._vocab_warning: str | None = None
        if self.vocabulary is not None:
            self._vocab_warning = "; ".join(asr.set_vocabulary(self.vocabulary)) or None
        self._matchers: dict[str | None, object] = {}
        # utterances (by id) whose window kept its decoding without the vocabulary: the guard fired
        self._guarded: set[int] = set()
        self.itn: Callable[[str, str | None], str] | None = None
        if cfg.itn.enabled:
            self.itn = make_itn(cfg.itn)
        roles = {
            "lid": lid.model_id() if lid is not None else f"none ({cfg.lid.language or 'unknown'})",
            "asr": asr.model_id(),
        }
        self.models = "; ".join(f"{k}={v}" for k, v in roles.items())
        self.punctuated = punctuated(cfg.punctuation, asr)
        # the threads that make a backend's calls at once (`concurrent_calls`): the same ones for the
        # actor's life, so that their memory (each has its own glibc arena) is reused, not re-made.
        # With `windows_at_once` > 1 every model call goes through them, so windows that are worked on
        # at once never run more calls together than the backend takes (one for NeMo).
        calls = asr.capabilities.concurrent_calls
        shared = calls > 1 or cfg.windows_at_once > 1
        self._pool = ThreadPoolExecutor(calls, thread_name_prefix="asr") if shared else None
        self._clock = CallClock()

    @classmethod
    def from_config(cls, job: JobConfig) -> "SegmentStage":
        """The stage with the job's backends, loaded here (inside the Ray actor that holds them)."""
        cfg = job.segment_stage
        use_gpu = job.models.use_gpu(cfg.resources)
        asr = make_asr(cfg.asr, job.models, use_gpu, cfg.lid, rtfx=cfg.simulated_rtfx)
        return cls(cfg, asr, make_lid(cfg, asr, job.models, use_gpu), padded_budget(cfg, use_gpu))

    def __call__(self, batch: pa.Table) -> pa.Table:
        speech = batch.column("audio")
        rows = batch.drop_columns(["audio"]).to_pylist()
        items: list[Utterance] = []
        for r, row in enumerate(rows):
            if row["status"] != "ok" or not row["spans"]:
                continue
            audio = samples_at(speech, r)  # the recording's speech, read in place
            for span in row["spans"]:
                clip = audio[span["audio_offset"] : span["audio_offset"] + span["num_samples"]]
                items.append(Utterance(r, span, clip))
        self._run_models(items)
        log.info("segment stage: %d utterances pooled from %d recordings", len(items), len(rows))
        return self._regroup(rows, items)

    # -- models ---------------------------------------------------------------------------------
    def _run_models(self, items: list[Utterance]) -> None:
        """Plan and run the model calls. A window whose utterances turn out to speak different
        languages comes back cut (see `_call`); its pieces go through another round."""
        fused = isinstance(self.lid, FusedLid)
        languages = [None] * len(items) if fused else self._identify(items)
        timestamps = self.cfg.asr.word_timestamps  # words are what a packed window is split back by
        mode = self.cfg.packing.mode if timestamps else "none"
        packing = self.cfg.packing
        windows = pack(items, languages, self.asr.capabilities.window_s, mode, packing.gap_s, packing.min_piece_s)
        while windows:
            windows = self._run_round(windows)
        for it in items:  # an utterance cut to fill windows gets its words back whole
            it.join_pieces()

    def _run_round(self, windows: list[Window]) -> list[Window]:
        bcfg = self.cfg.batching
        durations = [w.duration for w in windows]
        cost = with_quadratic(self.asr.padded_seconds, bcfg.quadratic_s)
        groups = [w.language for w in windows] if self.asr.capabilities.one_language_per_call else None
        plans = plan_batches(
            durations, cost, self.max_padded_s, bcfg.max_items, bcfg.enabled, bcfg.max_extra_padding, groups
        )

        def run(idx: list[int]) -> tuple[list[Window], list[tuple[Utterance, str | None]], float]:
            skipped_here: list[tuple[Utterance, str | None]] = []
            token = self._clock.start()
            try:
                pieces = self._call([windows[i] for i in idx], skipped_here)
            finally:
                wall = self._clock.stop(token)
            return pieces, skipped_here, wall

        # A backend that runs calls at once (`concurrent_calls`) gets them from as many threads; the
        # calls and their results are the same, and they are gathered in plan order.
        done = list(self._pool.map(run, plans)) if self._pool is not None else [run(idx) for idx in plans]
        for idx, (_, _, wall) in zip(plans, done):
            group = [windows[i] for i in idx]
            padded = self.asr.padded_seconds([durations[i] for i in idx])
            speech = sum(it.duration for w in group for it in w.items) or 1.0
            for w in group:
                for it in w.items:  # attribute the call's cost to its utterances by their share of speech
                    it.padded_s += padded * it.duration / speech
                    it.wall_s += wall * it.duration / speech
        again = [w for pieces, _, _ in done for w in pieces]
        skipped = [s for _, skipped_here, _ in done for s in skipped_here]
        # the round's skipped utterances are packed again together, not call by call: each is short,
        # and one call's skipped ones alone would leave their retry windows mostly padding
        return again + retry(skipped, self.asr.capabilities.window_s, self.cfg.packing.gap_s)

    def _identify(self, items: list[Utterance]) -> list[str | None]:
        """Language per utterance from a separate LID pass (or the fixed `segment_stage.lid.language`). With
        bucketing on, calls take utterances sorted by duration, so a padded LID model wastes little."""
        if self.lid is None:
            return [self.cfg.lid.language] * len(items)
        order = sorted(items, key=lambda it: it.duration) if self.cfg.batching.enabled else items
        step = self.cfg.batching.max_items
        for k in range(0, len(order), step):
            self._identify_chunk(order[k : k + step])
        return [it.lid[0] if it.lid else None for it in items]

    def _identify_chunk(self, chunk: list[Utterance]) -> None:
        """One LID call; on failure, one call per utterance; one that still fails is an error."""
        assert self.lid is not None and not isinstance(self.lid, FusedLid)
        clips = [it.clip for it in chunk]
        try:
            found = (
                self.lid.identify(clips) if self._pool is None else self._pool.submit(self.lid.identify, clips).result()
            )
            for it, lid in zip(chunk, check_results(found, clips, self.lid)):
                it.lid = lid
        except Exception as exc:  # noqa: BLE001
            if len(chunk) > 1:
                for it in chunk:
                    self._identify_chunk([it])
            else:
                log.exception("language ID failed")
                chunk[0].error = f"lid: {type(exc).__name__}: {exc}"

    def _call(self, group: list[Window], skipped: list[tuple[Utterance, str | None]]) -> list[Window]:
        """One model call; on failure, retry each window alone, then each utterance alone. Returns,
        for another round, the pieces of windows the backend found to switch language; adds to
        `skipped` the packed utterances it passed over (with their window's language), which the
        round sends again (`packing.retry`)."""
        pieces: list[Window] = []
        passed_over: list[tuple[Utterance, str | None]] = []
        packing = self.cfg.packing
        try:
            clips = [w.audio for w in group]
            parts = [w.parts if len(w.items) > 1 else None for w in group]
            results = check_results(self.asr.transcribe(clips, [w.language for w in group], parts), clips, self.asr)
            for w, res in zip(group, results):
                if isinstance(res, LanguageSwitch):
                    pieces += w.cut(res, packing.gap_s)
                else:
                    if res.vocabulary_guarded:
                        self._guarded.update(id(it) for it in w.items)
                    w.split(res)
                    passed_over += [(it, w.language) for it in w.skipped(packing.retry_below_cps)]
            skipped += passed_over  # only once the whole call went through (a failed one is retried)
        except Exception as exc:  # noqa: BLE001
            if len(group) > 1:
                log.warning("ASR call on %d windows failed (%s); retrying one at a time", len(group), exc)
                return [p for w in group for p in self._call([w], skipped)]
            if len(group[0].items) > 1:
                return [p for w in group[0].alone() for p in self._call([w], skipped)]
            log.exception("segment failed")
            group[0].items[0].error = f"asr: {type(exc).__name__}: {exc}"
        return pieces

    # -- regroup --------------------------------------------------------------------------------
    def _regroup(self, rows: list[dict], items: list[Utterance]) -> pa.Table:
        by_row: dict[int, list[Utterance]] = {}
        for it in items:
            by_row.setdefault(it.row, []).append(it)
        rss = peak_rss_mb()
        out = []
        for r, row in enumerate(rows):
            mine = sorted(by_row.get(r, []), key=lambda it: it.span["start"])
            rec = {k: row.get(k) for k in TRANSCRIBED_SCHEMA.names}  # the recording's own fields carry on
            rec.update(
                models="; ".join(m for m in (row.get("models"), self.models) if m),
                language=None,
                segments=[],
                punctuated=self.punctuated if mine else None,
                asr_audio_seconds=sum(it.duration for it in mine),
                asr_padded_seconds=sum(it.padded_s for it in mine),
                asr_wall_seconds=sum(it.wall_s for it in mine),
                segment_peak_rss_mb=rss,
                vocabulary_hits=None,
                vocabulary_warning=self._vocab_warning if mine else None,
                vocabulary_guarded=None,
            )
            errors = [it.error for it in mine if it.error]
            if errors:
                rec.update(status="error", error=f"{len(errors)} of {len(mine)} segments failed; first: {errors[0]}")
            elif mine:
                if self.vocabulary is not None:
                    rec["vocabulary_guarded"] = sum(1 for it in mine if self._was_guarded(it))
                if row.get("turns") is not None:  # diarization ran: speakers go to the words now
                    mine = [piece for it in mine for piece in by_speaker(it, row["turns"])]
                segments = [self._segment(k, it, row.get("overlaps")) for k, it in enumerate(mine)]
                rec["segments"] = [s.to_row() for s in segments]
                spoken = [s for s in segments if s.text]
                if not spoken:
                    rec["status"] = "no_speech"
                lang: Counter = Counter()
                for s in spoken:
                    lang[s.language] += s.duration
                rec["language"] = lang.most_common(1)[0][0] if lang else None
                if self.vocabulary is not None:
                    rec["vocabulary_hits"] = sum(1 for s in spoken if self._has_term(s.text, s.language))
            out.append(rec)
        self._guarded.difference_update(id(x) for it in items for x in [it, *it.pieces])
        return pa.Table.from_pylist(out, schema=TRANSCRIBED_SCHEMA)

    def _was_guarded(self, it: Utterance) -> bool:
        """Whether the guard kept the decoding without the vocabulary for the utterance (or a piece of it)."""
        return any(id(x) in self._guarded for x in [it, *it.pieces])

    def _has_term(self, text: str, language: str | None) -> bool:
        """Whether `text` holds a vocabulary term of its language (case-insensitive, whole words)."""
        if language not in self._matchers:
            self._matchers[language] = vocabulary.matcher(vocabulary.terms_for(self.vocabulary, language))
        return vocabulary.contains_term(text, self._matchers[language])

    def _segment(self, index: int, it: Utterance, overlaps: list[dict] | None = None) -> Segment:
        """An utterance's result as the output record: words onto the recording's timeline, ITN,
        text signals and the quality verdict. `overlaps`: the recording's overlapped speech (None
        where diarization did not run or cannot tell) marks the words spoken over someone else."""
        res = it.result
        assert res is not None
        start, end = it.span["start"], it.span["end"]
        language = res.language or (it.lid[0] if it.lid else self.cfg.lid.language)
        text = self.itn(res.text, language) if (self.itn and res.text) else res.text
        words = [w.shifted(start, start, end) for w in res.words]  # onto the recording's timeline
        seg = Segment(
            segment_index=index,
            start=start,
            end=end,
            speaker=it.span["speaker"],
            language=language,
            language_prob=res.language_prob if res.language_prob is not None else (it.lid[1] if it.lid else None),
            text=text,
            confidence=res.confidence,
            overlap_seconds=overlap_seconds(start, end, overlaps),
            words=[replace(w, overlap=word_in_overlap(w.start, w.end, overlaps)) for w in words],
            avg_logprob=res.avg_logprob,
            no_speech_prob=res.no_speech_prob,
            compression_ratio=res.compression_ratio,
            language_agreement=(it.lid[0] == res.language) if (it.lid and res.language) else None,
            signals={**text_signals(text, language), **segment_signals(it.span, [w.confidence for w in res.words])},
        )
        seg.accepted, seg.reject_reasons = judge(seg.to_row(), self.cfg.quality)
        return seg
