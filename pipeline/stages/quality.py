"""Quality stage (pure CPU): accept or reject each segment, with reasons.

Rejects are data, not log lines (datatrove's habit): every signal is kept in the segments table, so
`accepted` can be recomputed later with other thresholds without re-running any model.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import QualityConfig


def judge(seg: dict[str, Any], cfg: QualityConfig) -> tuple[bool, list[str]]:
    reasons: list[str] = []
    if not seg["text"]:
        reasons.append("empty_text")
    else:
        if seg["confidence"] is not None and seg["confidence"] < cfg.min_confidence:
            reasons.append("low_confidence")
        cps = seg.get("chars_per_second")
        if cps is not None and cps > cfg.max_chars_per_second:
            reasons.append("too_many_chars_per_second")
        cr = seg.get("compression_ratio")
        if cr is not None and cr > cfg.max_compression_ratio:
            reasons.append("repetitive")  # Whisper's hallucination loops compress very well
        nsp = seg.get("no_speech_prob")
        if nsp is not None and nsp > cfg.max_no_speech_prob:
            reasons.append("no_speech_prob")
    return (not reasons, reasons)
