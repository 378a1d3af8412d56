"""A simulated accelerator, for benchmarks and tests only (bench/fleet.py; not a user-facing backend).

One class per model stage (`backend: simulated` in its config section), each implementing its
protocol of `pipeline/backends/base.py` exactly as the real backends do, but computing nothing:

* `SimulatedVad`: the whole input is one speech region (no pauses inside it);
* `SimulatedDiarizer`: one speaker ("spk0") over the regions, with a voice, so the pieces of a long
  recording are stitched as Resemblyzer's are;
* `SimulatedLid`: one language (`segment_stage.lid.language`, else "en") with probability 0.99;
* `SimulatedAsr`: FastConformer's contract (inputs sized freely, padded to the longest of a call,
  native punctuation, one call at a time): one word per second of speech, evenly spread inside the
  clip, with confidences between 0.90 and 0.99; text drawn from a fixed word list, deterministic
  per clip length.

Every call holds the "device" for `padded seconds / rtfx` of wall time with `time.sleep` (no CPU),
where the padded seconds are what the real model would compute: the whole input for VAD and
diarization, longest x count for LID (first 20 s of each clip, as NeMo's) and ASR. Calls from
several threads of one process queue for one device, as on one GPU. The stage's `simulated_rtfx`
sets the pace, so what a run costs besides its models is measured exactly, at a GPU's pace.

When the environment names a file in `SCRIPTORIUM_SIMULATED_TIMELINE` (bench plumbing: Ray workers
inherit the driver's environment), each hold appends one line `role pid start end padded_s` (Unix
seconds) to it, so a benchmark can tell how busy the device was from its first call to its last.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Sequence

import numpy as np

from pipeline.backends.base import AsrCapabilities, Diarization, Parts, check_results
from pipeline.config import AsrConfig, DiarizationConfig, LidConfig, VadConfig, VocabularyConfig
from pipeline.records import SAMPLE_RATE, AsrResult, LanguageSwitch, Span, Word

#: One device per process: calls from several threads (windows_at_once, a stage's pool) queue for it.
_DEVICE = threading.Lock()
#: Benchmarks only: a file each hold appends its interval to (see the module docstring).
TIMELINE_ENV = "SCRIPTORIUM_SIMULATED_TIMELINE"

# A fixed vocabulary for the simulated transcripts: varied enough that the quality rules (repetition,
# unique words, compression) accept the text, so the run takes the path real transcripts take.
_WORDS = (
    "the of and to in that it was for on are as with his they at be this from have or by one had not but "
    "what all were when we there can an your which their said if do will each about how up out them then "
    "she many some so these would other into has more her two like him see time could no make than first "
    "been its who now people my made over did down only way find use may water long little very after words"
).split()


class _Device:
    """The hold every simulated call makes: `padded_s / rtfx` seconds of sleep, one call at a time."""

    def __init__(self, role: str, rtfx: float):
        if rtfx <= 0:
            raise ValueError(f"simulated {role}: rtfx must be > 0, got {rtfx}")
        self.role, self.rtfx = role, float(rtfx)
        self.timeline = os.environ.get(TIMELINE_ENV) or None

    def hold(self, padded_s: float) -> None:
        with _DEVICE:
            start = time.time()
            time.sleep(max(0.0, padded_s) / self.rtfx)
            end = time.time()
        if self.timeline:
            with open(self.timeline, "a") as f:
                f.write(f"{self.role} {os.getpid()} {start:.6f} {end:.6f} {padded_s:.3f}\n")

    def model_id(self) -> str:
        return f"simulated-{self.role} (rtfx {self.rtfx:g}, no compute)"


def _seconds(audio: np.ndarray) -> float:
    return len(audio) / SAMPLE_RATE


class SimulatedVad:
    """VAD: the whole input is speech. `pauses` finds none (so `packing.min_piece_s` never cuts)."""

    def __init__(self, cfg: VadConfig, rtfx: float):
        self.cfg = cfg
        self._device = _Device("vad", rtfx)

    def speech_regions(self, audio: np.ndarray) -> list[Span]:
        duration = _seconds(audio)
        self._device.hold(duration)
        return [Span(0.0, round(duration, 3))] if duration > 0 else []

    def pauses(self, audio: np.ndarray, regions: Sequence[Span]) -> list[float]:
        self._device.hold(_seconds(audio))  # a second pass, as Silero's and NeMo's
        return []

    def model_id(self) -> str:
        return self._device.model_id()


class SimulatedDiarizer:
    """Diarization: one speaker over every region; overlaps cannot be told (None)."""

    #: the one speaker's voice (a unit vector): the pieces of a long recording are one speaker
    _VOICE = [1.0] + [0.0] * 7

    def __init__(self, cfg: DiarizationConfig, rtfx: float):
        self.cfg = cfg
        self._device = _Device("diarization", rtfx)
        self._voices: list[dict] = []

    def diarize(
        self, audio: np.ndarray, regions: Sequence[Span], channel_energy: np.ndarray | None = None
    ) -> Diarization:
        return Diarization(self.speaker_turns(audio, regions, channel_energy), overlaps=None)

    def speaker_turns(
        self, audio: np.ndarray, regions: Sequence[Span], channel_energy: np.ndarray | None = None
    ) -> list[Span]:
        self._device.hold(_seconds(audio))  # the whole recording, as Sortformer reads it
        turns = [Span(r.start, r.end, "spk0") for r in regions]
        speech = sum(r.duration for r in regions)
        self._voices = (
            [
                {
                    "speaker": "spk0",
                    "seconds": speech,
                    "threshold": self.cfg.cluster_threshold,
                    "embedding": list(self._VOICE),
                }
            ]
            if turns
            else []
        )
        return turns

    def voices(self) -> list[dict]:
        """The speaker of the last call, as `ResemblyzerDiarizer.voices` gives it (pipeline/pieces.py)."""
        return list(self._voices)

    def model_id(self) -> str:
        return self._device.model_id()


class SimulatedLid:
    """Language ID: every clip is `lid.language` (else "en"), probability 0.99."""

    max_clip_s = 20.0  # as NeMo's AmberNet: only the first seconds of a clip are read

    def __init__(self, cfg: LidConfig, rtfx: float):
        self.cfg = cfg
        self.language = cfg.language or "en"
        self._device = _Device("lid", rtfx)

    def identify(self, clips: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        if not clips:
            return []
        self._device.hold(min(max(_seconds(c) for c in clips), self.max_clip_s) * len(clips))
        return [(self.language, 0.99) for _ in clips]

    def labels(self) -> list[str]:
        return [self.language]

    def model_id(self) -> str:
        return self._device.model_id()


class SimulatedAsr:
    """ASR with FastConformer's contract (see the module docstring); languages are echoed."""

    min_clip_s = 0.1  # shorter clips are not run, as NeMo's: empty results

    def __init__(self, cfg: AsrConfig, rtfx: float):
        self.cfg = cfg
        self._device = _Device("asr", rtfx)
        self.capabilities = AsrCapabilities(
            window_s=None,
            one_language_per_call=False,
            detects_language=False,
            native_punctuation=True,
            concurrent_calls=1,
        )

    def padded_seconds(self, durations: Sequence[float]) -> float:
        """FastConformer's cost: every clip is padded to the longest of the call."""
        return max(durations) * len(durations) if durations else 0.0

    def set_vocabulary(self, vocabulary: VocabularyConfig) -> list[str]:
        return ["vocabulary ignored: the simulated ASR backend transcribes nothing"]

    def transcribe(
        self, clips: Sequence[np.ndarray], languages: Sequence[str | None], parts: Parts | None = None
    ) -> list[AsrResult | LanguageSwitch]:
        if len(languages) != len(clips):
            raise ValueError(f"{len(clips)} clips but {len(languages)} languages")
        run = [_seconds(c) for c in clips if _seconds(c) >= self.min_clip_s]
        if run:
            self._device.hold(self.padded_seconds(run))
        out = [
            simulated_result(_seconds(c), lang)
            if _seconds(c) >= self.min_clip_s
            else AsrResult(text="", words=[], confidence=0.0, language=lang)
            for c, lang in zip(clips, languages)
        ]
        return check_results(out, clips, self)

    def model_id(self) -> str:
        return self._device.model_id()


def simulated_result(duration: float, language: str | None) -> AsrResult:
    """One word per second of the clip (at least one), each in its own slot of the clip, 80% of it."""
    n = max(1, int(round(duration)))
    slot = duration / n
    seed = int(duration * 1000)
    words = []
    for k in range(n):
        seed = (seed * 1103515245 + 12345) % 2**31  # a small LCG: deterministic, no RNG object per clip
        word = _WORDS[seed % len(_WORDS)]
        if k == 0:
            word = word.capitalize()
        if k == n - 1:
            word += "."  # punctuated and cased, as Parakeet writes: the words join into the text
        start = round(k * slot, 3)
        words.append(Word(word, start, round(min(start + 0.8 * slot, duration), 3), 0.90 + (seed % 10) / 100))
    return AsrResult(
        text=" ".join(w.word for w in words),
        words=words,
        confidence=float(np.mean([w.confidence for w in words])),
        language=language,
    )
