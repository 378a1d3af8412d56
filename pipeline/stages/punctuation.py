"""Punctuation stage: which text is punctuated, and saying so when it is not.

NeMo 3.0 ships no punctuation/capitalisation model (`nemo.collections.nlp` is gone), and we found no
offline one in a pip package. Whisper, Parakeet v2/v3 and the `*_pc` FastConformers punctuate
natively, so the `native` backend keeps the ASR model's own punctuation. When the model has none,
the run summary says so instead of silently shipping lower-case, unpunctuated text.
"""

from __future__ import annotations

from pipeline.backends.base import AsrBackend
from pipeline.config import PunctuationConfig


def punctuated(cfg: PunctuationConfig, asr: AsrBackend) -> bool:
    """Whether transcripts come out punctuated (recorded per recording; False is the warning)."""
    return cfg.backend != "none" and asr.capabilities.native_punctuation
