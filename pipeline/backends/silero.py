"""Silero VAD (ONNX), the embedded default: the v6 model that faster-whisper ships in its wheel.

Using faster-whisper's copy means no torch and no pickle on this path, and one model file fewer to
pin. Its `get_speech_timestamps` is the reference Silero post-processing (onset/offset hysteresis,
minimum speech and silence, padding); we only convert samples to seconds.
"""

from __future__ import annotations

from dataclasses import replace
from importlib.metadata import version
from typing import Sequence

import numpy as np

from pipeline.config import VadConfig
from pipeline.records import SAMPLE_RATE, Span
from pipeline.timeline import PAUSE_S, pauses_inside

# Silero processes audio in 512-sample windows; long files are fed in blocks so memory stays bounded:
# faster-whisper runs a block's windows as one batch, so the peak grows with the block's length, and
# shorter blocks found the same speech in the same time (README "Long recordings", VAD blocks).
_BLOCK_S = 120.0


class SileroVad:
    def __init__(self, cfg: VadConfig):
        # heavy: faster-whisper brings CTranslate2, tokenizers and PyAV
        from faster_whisper.vad import VadOptions, get_vad_model

        self.cfg = cfg
        get_vad_model()  # load the ONNX session now, in setup, not on the first batch
        self._opts = VadOptions(
            threshold=cfg.threshold,
            neg_threshold=cfg.neg_threshold,
            min_speech_duration_ms=int(cfg.min_speech_s * 1000),
            min_silence_duration_ms=int(cfg.min_silence_s * 1000),
            speech_pad_ms=int(cfg.pad_s * 1000),
        )

    def speech_regions(self, audio: np.ndarray) -> list[Span]:
        return self._regions(audio, self._opts, self.cfg.min_silence_s)

    def pauses(self, audio: np.ndarray, regions: Sequence[Span]) -> list[float]:
        """Silero's own pauses inside the regions: a second pass with `PAUSE_S` as the minimum silence
        and no padding (faster-whisper keeps the frame probabilities inside `get_speech_timestamps`,
        so they cannot be shared with the first pass; a pass of Silero is cheap next to the ASR)."""
        fine = replace(self._opts, min_silence_duration_ms=int(PAUSE_S * 1000), speech_pad_ms=0)
        return pauses_inside(self._regions(audio, fine, PAUSE_S), regions)

    def _regions(self, audio: np.ndarray, opts, min_silence_s: float) -> list[Span]:
        # heavy: faster-whisper brings CTranslate2, tokenizers and PyAV
        from faster_whisper.vad import get_speech_timestamps

        block = int(_BLOCK_S * SAMPLE_RATE)
        spans: list[Span] = []
        for offset in range(0, len(audio), block):
            chunk = audio[offset : offset + block]
            for ts in get_speech_timestamps(chunk, opts, sampling_rate=SAMPLE_RATE):
                start = (offset + ts["start"]) / SAMPLE_RATE
                end = (offset + ts["end"]) / SAMPLE_RATE
                if spans and start - spans[-1].end < min_silence_s:
                    spans[-1] = Span(spans[-1].start, max(end, spans[-1].end))
                else:
                    spans.append(Span(round(start, 3), round(end, 3)))
        return spans

    def model_id(self) -> str:
        """Provenance: the Silero v6 ONNX model of the installed faster-whisper wheel."""
        return f"silero-vad:v6 (faster-whisper {version('faster-whisper')})"
