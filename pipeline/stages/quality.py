"""Quality judgement (pure CPU, no model): accept or reject each segment, with reasons.

Rejects are data, not log lines (datatrove's habit): every signal is kept in the segments table, so
`accepted` can be recomputed later with other thresholds without re-running any model. The segment
stage (pipeline/stages/segment.py) and `scriptorium filter` (pipeline/filter.py) call the SAME two
functions here: `text_signals` (signals derived from the text alone) and `judge` (signals -> verdict).

Reject reasons (one per rule in `QualityRules`, pipeline/config/segment.py):
    empty_text, low_confidence, too_many_chars_per_second, repetitive (gzip compression ratio),
    no_speech_prob, low_language_prob, repeated_ngrams, few_unique_words, long_word,
    language_disagreement (a separate LID and the ASR named different languages),
    filler_on_silence (a known hallucination such as "Thank you." on near-silence).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

from pipeline import audio_quality
from pipeline.config import QualityConfig, QualityRules
from pipeline.records import NO_SPACE_LANGUAGES

#: Known Whisper hallucinations on silence/music/noise (normalised: lower case, letters and digits only).
FILLER_PHRASES = frozenset(
    {
        "thank you",
        "thank you very much",
        "thanks",
        "thank you so much",
        "thanks for watching",
        "thank you for watching",
        "thanks for watching and see you next time",
        "please subscribe",
        "like and subscribe",
        "bye",
        "bye bye",
        "you",
        "so",
        "okay",
        "music",
        "applause",
        "silence",
        "danke",
        "vielen dank",
        "danke schön",
        "tschüss",
        "merci",
        "merci beaucoup",
        "gracias",
        "muchas gracias",
        "obrigado",
        "obrigada",
        "ご視聴ありがとうございました",
        "продолжение следует",
    }
)
#: Substrings that mark a subtitle credit hallucinated from training data (any language).
FILLER_SUBSTRINGS = (
    "amara org",
    "untertitel im auftrag",
    "untertitel von",
    "untertitelung",
    "sous titrage",
    "sous titres réalisés",
    "subtítulos realizados",
    "subtitles by",
    "legendas pela comunidade",
    "thanks for watching",
    "thank you for watching",
    "please subscribe",
)
#: The signals `text_signals` derives, in the segments table (pipeline/records.py SEGMENT_TYPE).
TEXT_SIGNALS = ("repetition_score", "unique_word_ratio", "longest_word", "filler_phrase")


def normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed (for matching fillers and counting words)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(c if (c.isalnum() or c.isspace()) else " " for c in text)
    return " ".join(text.split())


def _tokens(text: str, language: str | None) -> list[str]:
    norm = normalise(text)
    return list(norm.replace(" ", "")) if language in NO_SPACE_LANGUAGES else norm.split()


def repetition_score(tokens: list[str]) -> float:
    """Share of word 2-grams and 3-grams that repeat an earlier one (max over n); 0 for < 4 words.
    "the cat sat on the mat" -> 0.0; "thank you thank you thank you" -> 0.6."""
    best = 0.0
    for n in (2, 3):
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        if len(grams) >= 3:
            best = max(best, 1.0 - len(set(grams)) / len(grams))
    return round(best, 4)


def text_signals(text: str | None, language: str | None) -> dict[str, Any]:
    """Signals computed from the text alone (deterministic; no model)."""
    if not text:
        return {"repetition_score": None, "unique_word_ratio": None, "longest_word": None, "filler_phrase": None}
    tokens = _tokens(text, language)
    norm = normalise(text)
    words = text.split() if language not in NO_SPACE_LANGUAGES else tokens
    return {
        "repetition_score": repetition_score(tokens),
        "unique_word_ratio": round(len(set(tokens)) / len(tokens), 4) if tokens else None,
        "longest_word": max((len(w) for w in words), default=0),
        "filler_phrase": norm in FILLER_PHRASES or any(s in norm for s in FILLER_SUBSTRINGS),
    }


#: Threshold rules, in the order their reasons are listed: (signal, bound in QualityRules, kind, reason).
_THRESHOLDS = (
    ("confidence", "min_confidence", "min", "low_confidence"),
    ("chars_per_second", "max_chars_per_second", "max", "too_many_chars_per_second"),
    ("compression_ratio", "max_compression_ratio", "max", "repetitive"),  # Whisper's loops compress well
    ("no_speech_prob", "max_no_speech_prob", "max", "no_speech_prob"),
    ("language_prob", "min_language_prob", "min", "low_language_prob"),
    ("repetition_score", "max_repetition", "max", "repeated_ngrams"),
)


def _verdict(seg: dict[str, Any], r: QualityRules) -> list[str]:
    reasons: list[str] = []
    for signal, bound, kind, reason in _THRESHOLDS:
        value, limit = seg.get(signal), getattr(r, bound)
        if value is not None and (value < limit if kind == "min" else value > limit):
            reasons.append(reason)
    conf, nsp = seg.get("confidence"), seg.get("no_speech_prob")
    uwr = seg.get("unique_word_ratio")
    if uwr is not None and uwr < r.min_unique_word_ratio and len((seg.get("text") or "").split()) >= 6:
        reasons.append("few_unique_words")
    lw = seg.get("longest_word")
    if lw is not None and lw > r.max_word_length:
        reasons.append("long_word")
    if r.require_language_agreement and seg.get("language_agreement") is False:
        reasons.append("language_disagreement")
    if r.reject_fillers and seg.get("filler_phrase"):
        credit = any(s in normalise(seg.get("text") or "") for s in FILLER_SUBSTRINGS)  # never real speech
        silent = nsp is None or nsp >= r.filler_min_no_speech_prob or conf is None or conf < r.filler_min_confidence
        if credit or silent:
            reasons.append("filler_on_silence")
    return reasons + audio_quality.reasons(seg, r)  # audio and word-probability rules


def judge(seg: dict[str, Any], cfg: QualityConfig) -> tuple[bool, list[str]]:
    """(accepted, reject_reasons) of one segment from its stored signals, under the rules of its language.
    Signals missing from `seg` (an output older than them) are derived from its text first."""
    if not seg.get("text"):
        return False, ["empty_text"]
    if any(k not in seg for k in TEXT_SIGNALS):
        seg = {**text_signals(seg["text"], seg.get("language")), **seg}
    reasons = _verdict(seg, cfg.rules_for(seg.get("language")))
    return (not reasons, reasons)


def rules_payload(cfg: QualityConfig) -> dict[str, Any]:
    """The rules as recorded with an output (`_scriptorium/rules.json`), with a short hash."""
    rules = cfg.model_dump()
    blob = json.dumps(rules, sort_keys=True).encode()
    return {"rules": rules, "hash": hashlib.sha256(blob).hexdigest()[:16]}
