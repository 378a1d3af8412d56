"""The interfaces every model backend implements, and the contract the segment stage relies on.

Stages own batching, time bases and column writes; a backend only turns audio into model output.
Audio is always `records.SAMPLE_RATE` mono float32 numpy. Backends are constructed inside an actor
(`registry.make_*`), so heavy imports (torch, onnxruntime, ctranslate2, nemo) happen there, never at
`import pipeline`.

An ASR backend says what it can do in `capabilities`; the segment stage plans from those and from
nothing else (no probing for attributes, no checking which class it holds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from pipeline.config import VocabularyConfig
from pipeline.records import AsrResult, LanguageSwitch, Overlap, Span

#: Per clip: the (start, end) seconds of the segments packed into it, or None for a lone segment.
Parts = Sequence[Sequence[tuple[float, float]] | None]


class VadBackend(Protocol):
    def speech_regions(self, audio: np.ndarray) -> list[Span]:
        """Speech regions of one recording, in seconds of its timeline, sorted, non-overlapping."""
        ...

    def pauses(self, audio: np.ndarray, regions: Sequence[Span]) -> list[float]:
        """Seconds inside `regions` where the speech stops for at least `timeline.PAUSE_S`: where the
        segment stage may cut an utterance to fill an ASR window (`packing.min_piece_s`)."""
        ...

    def model_id(self) -> str: ...


@dataclass
class Diarization:
    """What diarization found in one recording."""

    #: exclusive speaker turns covering the speech (each word goes to exactly one speaker)
    turns: list[Span]
    #: where two or more speakers talk at once, and who; None where the backend cannot tell
    #: (one speaker per embedding window), which is not the same as "no overlap" ([])
    overlaps: list[Overlap] | None = None
    #: why the result is weaker than asked (e.g. channels: a mono file is one speaker); it goes to
    #: the row's `error` column, the row stays ok
    warning: str | None = None


class DiarizationBackend(Protocol):
    def diarize(
        self, audio: np.ndarray, regions: Sequence[Span], channel_energy: np.ndarray | None = None
    ) -> Diarization:
        """Turns (as `speaker_turns`), overlapped speech where the backend can tell, and a warning."""
        ...

    def speaker_turns(
        self, audio: np.ndarray, regions: Sequence[Span], channel_energy: np.ndarray | None = None
    ) -> list[Span]:
        """Speaker turns (each Span has `speaker` set) covering the speech in `regions`.

        Labels are local to the recording ("spk0", "spk1", ...; "ch0", "ch1", ... by channel).
        `channel_energy`: the source channels' energy envelope, (channels, frames) float32 mean
        square of every 10 ms (pipeline/audio.py), when decode kept it (diarization.backend=channels);
        the backends that listen to the mono audio ignore it."""
        ...

    def model_id(self) -> str: ...


class LidBackend(Protocol):
    def identify(self, clips: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """(ISO 639-1 language, probability) per clip, in order."""
        ...

    def labels(self) -> list[str]:
        """Every language the model can output."""
        ...

    def model_id(self) -> str: ...


class FusedLid:
    """The LID "backend" when the ASR model reads each clip's language from its own encoder pass
    (`AsrCapabilities.detects_language`): the segment stage then passes language None and the
    packed parts, and no separate LID call is made."""

    def __init__(self, asr: "AsrBackend"):
        self.asr = asr

    def model_id(self) -> str:
        return f"fused with asr ({self.asr.model_id()})"


@dataclass(frozen=True)
class AsrCapabilities:
    """What the segment stage needs to know to plan calls for a backend."""

    #: Every input is padded to this many seconds (Whisper: 30), so short segments are packed into
    #: shared windows; None: inputs are sized freely (FastConformer pads to the longest of a call).
    window_s: float | None
    #: One language per call: the stage groups its calls by language.
    one_language_per_call: bool
    #: Reads a clip's language from its own encoder pass (language None, per packed part).
    detects_language: bool
    #: Writes cased, punctuated text itself (Whisper, Parakeet v2/v3, *_pc).
    native_punctuation: bool
    #: Model calls it runs at once when the stage makes them from as many threads (CTranslate2
    #: workers on a CPU; 1: one call at a time).
    concurrent_calls: int = 1


class AsrBackend(Protocol):
    capabilities: AsrCapabilities

    def transcribe(
        self, clips: Sequence[np.ndarray], languages: Sequence[str | None], parts: Parts | None = None
    ) -> list[AsrResult | LanguageSwitch]:
        """Exactly one result per clip, in order (see `check_results`). A language of None lets a
        backend that `detects_language` read it (per part of a packed window, returning a
        `LanguageSwitch` when the parts disagree). Word times are seconds relative to the clip."""
        ...

    def padded_seconds(self, durations: Sequence[float]) -> float:
        """Cost model: audio seconds the model really computes for one call on clips of these
        durations (longest x count for FastConformer; a 30 s window per clip for Whisper)."""
        ...

    def set_vocabulary(self, vocabulary: VocabularyConfig) -> list[str]:
        """Bias decoding towards the job's terms; returns why it could not (warnings), if so."""
        ...

    def model_id(self) -> str:
        """What to record as provenance and fingerprint (name + sha256 or version)."""
        ...


class ContractError(RuntimeError):
    """A backend broke its contract (e.g. fewer results than clips): zipping its results against
    the inputs would put text on the wrong segment, so the call fails instead (and is retried one
    clip at a time like any failed call; a clip that still fails is its recording's error)."""


def check_results(results: list, clips: Sequence[np.ndarray], backend: object) -> list:
    """`results` if it holds exactly one entry per clip, none of them None; else ContractError."""
    missing = [i for i, r in enumerate(results) if r is None]
    if len(results) != len(clips) or missing:
        raise ContractError(
            f"{type(backend).__name__} returned {len(results)} results for {len(clips)} clips"
            + (f" ({len(missing)} of them None)" if missing else "")
        )
    return results
