"""NeMo ASR: FastConformer CTC, RNNT, TDT and hybrid models, and Canary multitask models.

FastConformer models are run by hand, in memory: clips are padded into one tensor and go through
preprocessor -> encoder -> decoder (no temp files, no DataLoader). Canary goes through NeMo's own
`transcribe()` (its prompt formatting and Lhotse dataloader, no worker processes), after which the
model is put back in eval mode. Decoding settings and phrase boosting trees live in `decoding.py`,
hypotheses -> words in `words.py`.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from omegaconf import OmegaConf

from pipeline.backends.base import AsrCapabilities, Parts, check_results
from pipeline.backends.nemo.common import NemoBackend, frame_seconds_of, split_on_oom
from pipeline.backends.nemo.decoding import boosting_tree_cfg, canary_greedy_cfg, canary_output_size, greedy_cfg
from pipeline.backends.nemo.words import clip_words, tokenizer_has_punctuation, word_confidences
from pipeline.config import AsrConfig, ModelsConfig, VocabularyConfig
from pipeline.records import SAMPLE_RATE, AsrResult, LanguageSwitch
from pipeline.vocabulary import all_terms, choose, matcher

log = logging.getLogger(__name__)


@dataclass
class _Kind:
    multitask: bool  # Canary (AED): prompt-driven, decoded through transcribe()
    ctc: bool  # decode with a CTC head (pure CTC models)


class NemoAsr(NemoBackend):
    """FastConformer ASR: CTC, RNNT, TDT, hybrid TDT/RNNT+CTC (decoded with the transducer head),
    and Canary multitask models.

    Word timestamps come from NeMo's greedy decoders (`compute_timestamps`): encoder-frame offsets x
    (feature hop x subsampling) seconds, relative to the clip start, clamped to [0, clip duration] and
    made monotonic. Per-word confidence is NeMo's frame/token confidence with the `max_prob` measure
    (the probability of the emitted token, linearly rescaled so a uniform distribution is 0 and
    certainty is 1), blank frames excluded, aggregated per word with `min` over the word's tokens;
    the utterance confidence is the mean word confidence (0.0 for an empty transcript).
    `avg_logprob` is left None: NeMo's path scores are not per-token log-probabilities comparable to
    Whisper's. Clips shorter than `min_clip_s` are not run: they come back as empty results."""

    min_clip_s = 0.1

    def __init__(self, cfg: AsrConfig, models: ModelsConfig, use_gpu: bool):
        if not use_gpu and cfg.cpu_threads > 0:
            import torch  # heavy: torch, only where a model runs

            # Inside a Ray actor torch defaults to the actor's CPU share (often 1 thread).
            torch.set_num_threads(cfg.cpu_threads)
        super().__init__(cfg, models, use_gpu)
        self._kind = self._detect_kind()
        if self._kind.multitask:
            self._configure_multitask_decoding()
        else:
            self._configure_decoding()
        self.native_punctuation = tokenizer_has_punctuation(self._model.tokenizer)
        # Inputs are sized freely (padded to the longest of a call); a call may mix languages (Canary
        # groups them into one prompt each itself); NeMo reports no detected language.
        self.capabilities = AsrCapabilities(
            window_s=None,
            one_language_per_call=False,
            detects_language=False,
            native_punctuation=self.native_punctuation,
        )
        self.frame_s = frame_seconds_of(self._model, 0.08)
        # set with a boosting tree: the decoding without it, for the vocabulary's guard (`_guarded`)
        self._plain_decoding: Any = None
        self._max_word_loss = 1.0
        self._pattern: Any = None

    def _model_class(self) -> Any:
        from nemo.collections.asr.models import ASRModel  # heavy: NeMo takes ~20 s to import

        return ASRModel

    # -- setup -----------------------------------------------------------------------------------
    def _detect_kind(self) -> _Kind:
        from nemo.collections.asr.models import EncDecMultiTaskModel  # heavy: NeMo takes ~20 s to import

        if isinstance(self._model, EncDecMultiTaskModel):
            return _Kind(multitask=True, ctc=False)
        return _Kind(multitask=False, ctc=not hasattr(self._model, "joint"))

    def _configure_decoding(self) -> None:
        self._decoding_dc = greedy_cfg(OmegaConf.to_container(self._model.cfg.decoding, resolve=True))
        self._apply_decoding(self._decoding_dc)

    def _apply_decoding(self, dc: dict) -> None:
        kwargs = {"decoder_type": "rnnt"} if hasattr(self._model, "cur_decoder") else {}
        self._model.change_decoding_strategy(OmegaConf.create(dc), verbose=False, **kwargs)
        self._model.eval()

    def _configure_multitask_decoding(self) -> None:
        self._decoding_dc = canary_greedy_cfg(OmegaConf.to_container(self._model.cfg.decoding, resolve=True))
        self._model.change_decoding_strategy(OmegaConf.create(self._decoding_dc))
        self._model.eval()
        langs = getattr(self._model.tokenizer, "langs", None) or []
        self._canary_langs = {str(x) for x in langs if x != "spl_tokens"}

    # -- word boosting ---------------------------------------------------------------------------
    def set_vocabulary(self, vocabulary: VocabularyConfig) -> list[str]:
        """Bias decoding towards the job's terms with NeMo's own phrase boosting (GPU-PB): a boosting
        tree (`BoostingTreeModelConfig`, built by NeMo from `key_phrases_list` with the model's
        tokenizer) fused into the decoder with weight `boosting_tree_alpha` = `vocabulary.boost`.

        * CTC: `greedy_batch` (`GreedyBatchedCTCInfer`, decoding.greedy.boosting_tree).
        * RNNT / TDT / hybrid (transducer head): `greedy_batch` label-looping decoders
          (`GreedyBatchedRNNTInfer` / `GreedyBatchedTDTInfer`, decoding.greedy.boosting_tree).
        * Canary (AED): NeMo fuses the tree only into beam search (`TransformerAEDBeamInfer`,
          decoding.beam.boosting_tree), so decoding switches to beam (beam_size = asr.beam_size).
        Terms of every language go into one tree (the decoder is built once per model). For a model
        without casing the terms are lower-cased, as the model writes them; a term's weight scales
        its per-token context score. Returns warnings for the run summary: a model type NeMo cannot
        bias (e.g. multi-blank RNNT) keeps its plain decoding and says so."""
        terms = all_terms(vocabulary)
        if not terms:
            return []
        if not self.native_punctuation:
            terms = [(t.lower(), w) for t, w in terms]
        multitask = self._kind.multitask
        if multitask and (outputs := canary_output_size(self._model)) != int(self._model.tokenizer.vocab_size):
            # NeMo 3.0 sizes the tree by the tokenizer, Canary's beam search scores the output layer
            # (the vocabulary padded to a multiple of 8): the shapes differ and decoding would crash.
            return [
                f"vocabulary ignored: NeMo 3.0 cannot boost phrases for Canary model {self.cfg.model!r} "
                f"(tokenizer vocabulary {self._model.tokenizer.vocab_size} != output layer {outputs})"
            ]
        langs = sorted(self._canary_langs) if multitask else []
        tree, self._tree_dir = boosting_tree_cfg(self._model, terms, multitask, langs, self._device)
        dc = copy.deepcopy(self._decoding_dc)
        try:
            if multitask:
                dc["strategy"] = "beam"
                beam = dict(dc.get("beam") or {})
                beam.update(
                    beam_size=max(1, self.cfg.beam_size),
                    return_best_hypothesis=True,
                    boosting_tree=tree,
                    boosting_tree_alpha=vocabulary.boost,
                )
                beam.setdefault("max_generation_delta", (dc.get("greedy") or {}).get("max_generation_delta", 50))
                dc["beam"] = beam
                self._model.change_decoding_strategy(OmegaConf.create(dc))
                self._model.eval()
            else:
                plain = self._plain_decoding if self._plain_decoding is not None else self._model.decoding
                self._plain_decoding = None  # until the tree is in
                greedy = dict(dc.get("greedy") or {})
                greedy.update(boosting_tree=tree, boosting_tree_alpha=vocabulary.boost)
                dc["greedy"] = greedy
                self._apply_decoding(dc)
                # the guard decodes the same encoder output without the tree too (`_guarded`)
                self._plain_decoding, self._max_word_loss = plain, vocabulary.max_word_loss
                self._pattern = matcher(terms)
        except NotImplementedError as exc:
            log.warning("vocabulary: NeMo cannot bias %s: %s", self.cfg.model, exc)
            if multitask:
                self._configure_multitask_decoding()
            else:
                self._apply_decoding(self._decoding_dc)
            return [
                f"vocabulary ignored: NeMo 3.0 has no phrase boosting for ASR model {self.cfg.model!r} "
                f"({type(self._model).__name__}: {str(exc).strip()[:160]})"
            ]
        self.vocabulary_terms = [t for t, _ in terms]
        log.info("vocabulary: %d terms boosted in %s (alpha %.2f)", len(terms), self.cfg.model, vocabulary.boost)
        return []

    # -- interface -------------------------------------------------------------------------------
    def padded_seconds(self, durations: Sequence[float]) -> float:
        """FastConformer cost: every clip is padded to the longest of the call."""
        return max(durations) * len(durations) if durations else 0.0

    def transcribe(
        self, clips: Sequence[np.ndarray], languages: Sequence[str | None], parts: Parts | None = None
    ) -> list[AsrResult | LanguageSwitch]:
        """Exactly one result per clip, in order; word times in seconds relative to the clip start.

        `languages` steers Canary (source language of the prompt); other NeMo models ignore it and
        echo it in `AsrResult.language` (they do not report a detected language). `parts` is ignored:
        no NeMo model here detects language per packed part."""
        if len(languages) != len(clips):
            raise ValueError(f"{len(clips)} clips but {len(languages)} languages")
        results: list[AsrResult | None] = [None] * len(clips)
        todo = []
        for i, c in enumerate(clips):
            if len(c) < self.min_clip_s * SAMPLE_RATE:
                results[i] = AsrResult(text="", words=[], confidence=0.0, language=languages[i])
            else:
                todo.append(i)
        if self._kind.multitask:
            by_lang: dict[str | None, list[int]] = {}
            for i in todo:
                by_lang.setdefault(languages[i], []).append(i)
            for lang, idx in by_lang.items():
                outs = split_on_oom(lambda cs, lang=lang: self._canary(cs, lang), [clips[i] for i in idx])
                for i, r in zip(idx, outs):
                    results[i] = r
        elif todo:
            outs = split_on_oom(self._forward, [clips[i] for i in todo])
            for i, r in zip(todo, outs):
                r.language = languages[i]
                results[i] = r
        return check_results(results, clips, self)

    # -- FastConformer CTC / transducer ----------------------------------------------------------
    def _forward(self, clips: list[np.ndarray]) -> list[AsrResult]:
        m = self._model
        x, lens = self._inputs(clips)
        with self._inference():
            feats, feat_lens = m.preprocessor(input_signal=x, length=lens)
            enc, enc_lens = m.encoder(audio_signal=feats, length=feat_lens)
            hyps = self._decode(m.decoding, enc, enc_lens)
            plain = self._decode(self._plain_decoding, enc, enc_lens) if self._plain_decoding is not None else None
        out = [self._to_result(h, len(c) / SAMPLE_RATE) for h, c in zip(hyps, clips)]
        if plain is not None:
            out = self._guarded(out, [self._to_result(h, len(c) / SAMPLE_RATE) for h, c in zip(plain, clips)])
        return out

    def _decode(self, decoding: Any, enc: Any, enc_lens: Any) -> list:
        """Hypotheses of the encoder output through `decoding` (the model's, or the one without the tree)."""
        if self._kind.ctc:
            log_probs = self._model.decoder(encoder_output=enc)
            hyps = decoding.ctc_decoder_predictions_tensor(log_probs, enc_lens, return_hypotheses=True)
        else:
            hyps = decoding.rnnt_decoder_predictions_tensor(
                encoder_output=enc, encoded_lengths=enc_lens, return_hypotheses=True
            )
        return hyps[0] if isinstance(hyps, tuple) else hyps  # older NeMo returned (best, all)

    def _guarded(self, boosted: list[AsrResult], plain: list[AsrResult]) -> list[AsrResult]:
        """The vocabulary's guard: a clip keeps its decoding with the boosting tree only where that adds
        a term and loses no words against the same encoder output decoded without it (`vocabulary.choose`). The
        second greedy pass reuses the encoder output: it costs the decoder's share of a call only."""
        out = []
        for b, p in zip(boosted, plain):
            verdict = choose(p.text, b.text, self._pattern, self._max_word_loss)
            p.vocabulary_guarded = verdict == "guarded"
            out.append(b if verdict == "boosted" else p)
        return out

    def _to_result(self, hyp: Any, duration: float) -> AsrResult:
        ts = hyp.timestamp if isinstance(getattr(hyp, "timestamp", None), dict) else {}
        raw_words = ts.get("word") or []
        tokens = ts.get("char") or ts.get("token") or []
        token_conf = list(hyp.token_confidence or []) if getattr(hyp, "token_confidence", None) is not None else []
        word_conf = word_confidences(raw_words, tokens, token_conf)
        items = [
            (str(w["word"]).strip(), float(w["start_offset"]) * self.frame_s, float(w["end_offset"]) * self.frame_s, c)
            for w, c in zip(raw_words, word_conf)
        ]
        words = clip_words(items, duration)
        text = (hyp.text or "").strip() if isinstance(hyp.text, str) else ""
        conf = float(np.mean([w.confidence for w in words])) if words else 0.0
        return AsrResult(text=text, words=words, confidence=conf)

    # -- Canary (AED multitask) ------------------------------------------------------------------
    def _canary(self, clips: list[np.ndarray], language: str | None) -> list[AsrResult]:
        """Canary through NeMo's own transcribe(), one language per call; source = target = the
        language (transcription, not translation), with punctuation. A language the model has no
        prompt for (or None) is transcribed with the "en" prompt (or the model's first language);
        the result still reports the language it was given.

        Word timestamps exist only where the model provides them (canary-1b-v2's auxiliary CTC
        aligner, or a timestamp-prompted model); otherwise `words` is empty and only the
        utterance confidence (mean word confidence) is set."""
        fallback = "en" if "en" in self._canary_langs or not self._canary_langs else sorted(self._canary_langs)[0]
        prompt_lang = language if language in self._canary_langs else fallback
        if language is not None and prompt_lang != language:
            log.warning("Canary model has no %r prompt; transcribing with %r", language, prompt_lang)
        hyps = self._model.transcribe(
            [np.asarray(c, dtype=np.float32) for c in clips],
            batch_size=len(clips),
            num_workers=0,  # no dataloader worker processes inside an actor
            return_hypotheses=True,
            verbose=False,
            timestamps=True,
            task="asr",
            source_lang=prompt_lang,
            target_lang=prompt_lang,
            pnc="yes",
        )
        self._model.eval()  # transcribe() may leave modules in train mode
        out = []
        for h, c in zip(hyps, clips):
            text = (h.text or "").strip()
            word_conf = [float(x) for x in (getattr(h, "word_confidence", None) or [])]
            conf = float(np.mean(word_conf)) if word_conf else 0.0
            ts = h.timestamp if isinstance(getattr(h, "timestamp", None), dict) else {}
            raw = ts.get("word") or []
            if len(word_conf) != len(raw):
                word_conf = [conf] * len(raw)
            items = []
            for w, wc in zip(raw, word_conf):
                start = float(w["start"]) if "start" in w else float(w["start_offset"]) * self.frame_s
                end = float(w["end"]) if "end" in w else float(w["end_offset"]) * self.frame_s
                items.append((str(w["word"]).strip(), start, end, wc))
            words = clip_words(items, len(c) / SAMPLE_RATE)
            out.append(AsrResult(text=text, words=words, confidence=conf, language=language))
        return out
