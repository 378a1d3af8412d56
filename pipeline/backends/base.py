"""The small interfaces every model backend implements.

Stages own batching, time bases and column writes; a backend only turns audio into model output.
Audio is always 16 kHz mono float32 numpy. Backends are constructed inside an actor (`setup`), so
heavy imports (torch, onnxruntime, ctranslate2, nemo) happen there, never at `import pipeline`.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from pipeline.records import AsrResult, Span

SAMPLE_RATE = 16000


class VadBackend(Protocol):
    def speech_regions(self, audio: np.ndarray) -> list[Span]:
        """Speech regions of one recording, in seconds of its timeline, sorted, non-overlapping."""
        ...


class DiarizationBackend(Protocol):
    def speaker_turns(self, audio: np.ndarray, regions: Sequence[Span]) -> list[Span]:
        """Speaker turns (each Span has `speaker` set) covering the speech in `regions`.

        Labels are local to the recording ("spk0", "spk1", ...)."""
        ...


class LidBackend(Protocol):
    def identify(self, clips: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """(ISO 639-1 language, probability) per clip, in order."""
        ...

    def labels(self) -> list[str]:
        """Every language the model can output."""
        ...


class AsrBackend(Protocol):
    #: True when the model writes cased, punctuated text itself (Whisper, Parakeet v2/v3, *_pc).
    native_punctuation: bool

    def transcribe(self, clips: Sequence[np.ndarray], languages: Sequence[str | None]) -> list[AsrResult]:
        """One result per clip, in order. A language of None lets the model detect it (and report it
        in `AsrResult.language`) where it can. Word times are seconds relative to the clip start."""
        ...

    def padded_seconds(self, durations: Sequence[float]) -> float:
        """Cost model: audio seconds the model really computes for one call on clips of these
        durations (longest x count for FastConformer; a 30 s window per clip for Whisper)."""
        ...

    def model_id(self) -> str:
        """What to record as provenance and fingerprint (name + hash or version)."""
        ...
