"""Config -> backend instance. The one place that maps a `backend:` name to a class.

Called inside actors (after Ray placed them). Importing every backend module here is cheap: each
defers its framework (NeMo, CTranslate2, torch) to the moment a model loads, so a job that never
uses NeMo never pays its 20 s import. `backend: simulated` (benchmarks
and tests only: pipeline/backends/simulated.py) holds each call for padded seconds / `rtfx`, the
stage's `simulated_rtfx`.
"""

from __future__ import annotations

from pipeline.backends.base import AsrBackend, DiarizationBackend, FusedLid, LidBackend, VadBackend
from pipeline.backends.channels import ChannelDiarizer
from pipeline.backends.nemo import NemoAsr, NemoDiarizer, NemoLid, NemoVad
from pipeline.backends.resemblyzer import ResemblyzerDiarizer
from pipeline.backends.silero import SileroVad
from pipeline.backends.simulated import SimulatedAsr, SimulatedDiarizer, SimulatedLid, SimulatedVad
from pipeline.backends.whisper import WhisperAsr
from pipeline.config import AsrConfig, DiarizationConfig, LidConfig, ModelsConfig, SegmentStageConfig, VadConfig


def make_vad(cfg: VadConfig, models: ModelsConfig, use_gpu: bool, rtfx: float = 1000.0) -> VadBackend | None:
    if cfg.backend == "none":
        return None
    if cfg.backend == "simulated":
        return SimulatedVad(cfg, rtfx)
    if cfg.backend == "silero":
        return SileroVad(cfg)
    return NemoVad(cfg, models, use_gpu)


def make_diarizer(
    cfg: DiarizationConfig, models: ModelsConfig, use_gpu: bool, rtfx: float = 1000.0
) -> DiarizationBackend | None:
    if not cfg.enabled:
        return None
    if cfg.backend == "simulated":
        return SimulatedDiarizer(cfg, rtfx)
    if cfg.backend == "resemblyzer":
        return ResemblyzerDiarizer(cfg, use_gpu)
    if cfg.backend == "channels":
        return ChannelDiarizer(cfg)
    return NemoDiarizer(cfg, models, use_gpu)


def stitches_pieces(cfg: DiarizationConfig) -> bool:
    """Whether a long recording may be cut into pieces (pipeline/pieces.py) under this diarization:
    none, or one whose speakers can be matched across pieces by voice (Resemblyzer gives each
    speaker's mean d-vector: `ResemblyzerDiarizer.voices`; the simulated one gives one voice). The
    others (NeMo, whose labels are per call; channels, whose envelope decode makes for the whole
    stream) keep a recording whole."""
    return not cfg.enabled or cfg.backend in ("resemblyzer", "simulated")


def make_asr(
    cfg: AsrConfig, models: ModelsConfig, use_gpu: bool, lid: LidConfig | None = None, rtfx: float = 1000.0
) -> AsrBackend:
    """The ASR backend. `lid` gives a Whisper model the probe lengths of its fused language ID."""
    if cfg.backend == "simulated":
        return SimulatedAsr(cfg, rtfx)
    if cfg.backend == "whisper":
        return WhisperAsr(cfg, use_gpu, lid)
    return NemoAsr(cfg, models, use_gpu)


def make_lid(
    cfg: SegmentStageConfig, asr: AsrBackend, models: ModelsConfig, use_gpu: bool
) -> LidBackend | FusedLid | None:
    """Language ID for the segment stage. Whisper LID on the ASR's own Whisper model is fused
    (`FusedLid`: the language comes out of the ASR call's encoder pass), except when packing is
    "corpus": windows then gather one language from many recordings, so the language must be
    known before packing, and the same model answers a separate `identify` pass."""
    lid = cfg.lid
    if lid.backend == "none":
        return None
    if lid.backend == "nemo":
        return NemoLid(lid, models, use_gpu)
    if lid.backend == "simulated":
        return SimulatedLid(lid, cfg.simulated_rtfx)
    if lid.model not in (None, cfg.asr.model) or not isinstance(asr, WhisperAsr):
        model = cfg.asr.model_copy(update={"backend": "whisper", "model": lid.model or "base", "sha256": lid.sha256})
        return WhisperAsr(model, use_gpu, lid)
    corpus_packing = cfg.packing.mode == "corpus" and cfg.asr.word_timestamps
    return asr if corpus_packing else FusedLid(asr)
