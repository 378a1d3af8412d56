"""Optional inverse text normalisation: spoken form -> written form ("twenty three dollars" -> "$23").

Uses NeMo's WFST grammars (`nemo_text_processing`), which work offline but pull pynini (~650 MB), so
they are an optional extra: `pip install 'scriptorium[itn]'`. Grammars are compiled per language on
first use (tens of seconds; NeMo caches them when a cache folder is given) and kept for the life of the
actor. Text in a language without grammars, or with no known language, is returned unchanged: ITN
never blocks a transcript.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from pipeline.config import ItnConfig

log = logging.getLogger(__name__)

#: Languages nemo_text_processing ships ITN grammars for (ISO 639-1).
ITN_LANGUAGES = frozenset(
    {"ar", "de", "en", "es", "es_en", "fr", "he", "hi", "hy", "it", "ja", "ko", "mr", "pt", "ru", "sv", "vi", "zh"}
)


class ItnUnavailableError(RuntimeError):
    """ITN was enabled but nemo_text_processing is not installed."""


def make_itn(cfg: ItnConfig) -> Callable[[str, str | None], str] | None:
    """`itn(text, language) -> text` if enabled, else None. Raises `ItnUnavailableError` at setup
    (on the driver or in the actor's constructor, never mid-run) when the extra is missing."""
    if not cfg.enabled:
        return None
    try:
        # optional: the `itn` extra
        from nemo_text_processing.inverse_text_normalization.inverse_normalize import InverseNormalizer
    except ImportError as exc:
        raise ItnUnavailableError(
            "itn.enabled is true but nemo_text_processing is not installed: "
            "pip install 'scriptorium[itn]' (or set itn.enabled=false)"
        ) from exc

    normalizers: dict[str, Any] = {}
    skipped: set[str] = set()
    # one text at a time: the segment stage may work on two windows at once (`windows_at_once`), a
    # grammar takes tens of seconds to build, and pynini's objects are not known to be thread-safe
    lock = threading.Lock()

    def itn(text: str, language: str | None) -> str:
        if not text or not language:
            return text
        with lock:
            return _itn(text, language)

    def _itn(text: str, language: str) -> str:
        lang = language.lower().split("-")[0]
        if lang not in ITN_LANGUAGES:
            if lang not in skipped:
                skipped.add(lang)
                log.info("no ITN grammars for language %r; leaving its text unchanged", lang)
            return text
        norm = normalizers.get(lang)
        if norm is None:
            # "cased": ASR output may already be cased and punctuated (Parakeet v3, Whisper).
            norm = normalizers[lang] = InverseNormalizer(lang=lang, input_case="cased")
        try:
            return norm.inverse_normalize(text, verbose=False)
        except Exception:  # noqa: BLE001 - a grammar failure must not lose the transcript
            log.warning("ITN failed for a %s text; keeping it unchanged", lang, exc_info=True)
            return text

    return itn
