"""NeMo hypotheses -> words: per-word confidence, clip-relative times, punctuation detection."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.records import Word

_PUNCTUATION = set(".,?!;:¿¡")


def tokenizer_has_punctuation(tokenizer: Any) -> bool:
    """True if the model's vocabulary can write punctuation or upper case (a `_pc`-style model)."""
    vocab = getattr(tokenizer, "vocab", None)
    if vocab is None:
        try:
            vocab = tokenizer.ids_to_tokens(list(range(tokenizer.vocab_size)))
        except Exception:  # noqa: BLE001
            return False
    for piece in vocab:
        piece = str(piece)
        if piece.startswith("<") and piece.endswith(">"):
            continue  # special tokens (<unk>, <|en|>, ...)
        if any(ch in _PUNCTUATION or ch.isupper() for ch in piece):
            return True
    return False


def word_confidences(words: list[dict], tokens: list[dict], token_conf: list[float]) -> list[float]:
    """min of the token confidences of each word; a token belongs to the last word starting at or
    before its start offset. Words with no scored token get the mean over all tokens."""
    if not words:
        return []
    if not token_conf or len(token_conf) != len(tokens):
        fallback = float(np.mean(token_conf)) if token_conf else 0.0
        return [fallback] * len(words)
    starts = [float(w["start_offset"]) for w in words]
    per_word: list[list[float]] = [[] for _ in words]
    j = 0
    for tok, c in zip(tokens, token_conf):
        t0 = float(tok["start_offset"])
        while j + 1 < len(words) and starts[j + 1] <= t0 and len(per_word[j]) > 0:
            j += 1
        per_word[j].append(float(c))
    overall = float(np.mean(token_conf))
    return [float(min(cs)) if cs else overall for cs in per_word]


def clip_words(items: list[tuple[str, float, float, float]], duration: float) -> list[Word]:
    """(text, start, end, confidence) -> Words of a clip of `duration` seconds: empty texts dropped,
    times clamped to [0, duration] with starts non-decreasing (`Word.shifted`), confidence clamped
    to [0, 1]."""
    out: list[Word] = []
    prev_start = 0.0
    for text, s, e, c in items:
        if not text:
            continue
        word = Word(word=text, start=float(s), end=float(e), confidence=float(min(1.0, max(0.0, c))))
        out.append(word.shifted(0.0, lo=prev_start, hi=duration))
        prev_start = out[-1].start
    return out
