"""Punctuation stage: which text is punctuated, and saying so when it is not.

NeMo 3.0 ships no punctuation/capitalisation model (`nemo.collections.nlp` is gone), and we found no
offline one in a pip package. Whisper, Parakeet v2/v3 and the `*_pc` FastConformers punctuate
natively, so the `native` backend keeps the ASR model's own punctuation. When the model has none,
the run summary says so instead of silently shipping lower-case, unpunctuated text.
"""

from __future__ import annotations

from pipeline.backends.base import AsrBackend
from pipeline.config import PunctuationConfig


def needs_punctuation_warning(cfg: PunctuationConfig, asr: AsrBackend) -> bool:
    """True when transcripts will come out unpunctuated (recorded per recording as punctuated=False)."""
    return cfg.backend == "none" or not getattr(asr, "native_punctuation", False)
