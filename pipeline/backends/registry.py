"""Config -> backend instance. The one place that maps a `backend:` name to a class.

Called inside actors (after Ray placed them), so each import here is deferred to the branch that
needs it: a job that never uses NeMo never pays its 20 s import.
"""

from __future__ import annotations

from pipeline.backends.base import AsrBackend, DiarizationBackend, LidBackend, VadBackend
from pipeline.config import AsrConfig, DiarizationConfig, LidConfig, ModelsConfig, VadConfig


def make_vad(cfg: VadConfig, models: ModelsConfig, use_gpu: bool) -> VadBackend | None:
    if cfg.backend == "none":
        return None
    if cfg.backend == "silero":
        from pipeline.backends.silero import SileroVad

        return SileroVad(cfg)
    from pipeline.backends.nemo import NemoVad

    return NemoVad(cfg, models, use_gpu)


def make_diarizer(cfg: DiarizationConfig, models: ModelsConfig, use_gpu: bool) -> DiarizationBackend | None:
    if not cfg.enabled:
        return None
    if cfg.backend == "resemblyzer":
        from pipeline.backends.resemblyzer import ResemblyzerDiarizer

        return ResemblyzerDiarizer(cfg, use_gpu)
    from pipeline.backends.nemo import NemoDiarizer

    return NemoDiarizer(cfg, models, use_gpu)


def make_asr(cfg: AsrConfig, models: ModelsConfig, use_gpu: bool) -> AsrBackend:
    if cfg.backend == "whisper":
        from pipeline.backends.whisper import WhisperAsr

        return WhisperAsr(cfg, use_gpu)
    from pipeline.backends.nemo import NemoAsr

    return NemoAsr(cfg, models, use_gpu)


def make_lid(cfg: LidConfig, asr_cfg: AsrConfig, asr: AsrBackend, models: ModelsConfig, use_gpu: bool) -> LidBackend | None:
    """Language ID backend. Whisper LID on the ASR model is fused: the ASR backend detects the
    language from the same encoder pass, so we return the ASR instance itself."""
    if cfg.backend == "none":
        return None
    if cfg.backend == "whisper":
        from pipeline.backends.whisper import WhisperAsr

        if asr_cfg.backend == "whisper" and cfg.model in (None, asr_cfg.model):
            lid = asr
        else:
            lid = WhisperAsr(asr_cfg.model_copy(update={"model": cfg.model or "base", "sha256": cfg.sha256}), use_gpu)
        lid.lid_window_s = cfg.window_s  # type: ignore[attr-defined]
        lid.split_window_s = cfg.split_window_s  # type: ignore[attr-defined]
        return lid  # type: ignore[return-value]
    from pipeline.backends.nemo import NemoLid

    return NemoLid(cfg, models, use_gpu)
