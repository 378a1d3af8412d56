"""The recording stage's sections: VAD -> diarization -> utterances (cut & merge)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.config.base import Model, Resources


class VadConfig(Model):
    backend: Literal["silero", "nemo", "none", "simulated"] = Field(
        "silero", description="silero (embedded), nemo (MarbleNet), none; simulated: benchmarks and tests only"
    )
    model: str | None = Field(None, description="nemo: pretrained name, local .nemo or s3://.../x.nemo")
    sha256: str | None = None
    threshold: float = Field(0.5, gt=0, lt=1, description="speech probability onset")
    neg_threshold: float | None = Field(None, description="offset threshold; default threshold - 0.15")
    min_speech_s: float = Field(0.25, ge=0)
    min_silence_s: float = Field(0.5, ge=0, description="pauses shorter than this do not split speech")
    pad_s: float = Field(0.2, ge=0, description="padding added on each side of a speech region")
    level_dbfs: float | None = Field(
        -14.0,
        le=0,
        description="the VAD hears the audio brought to this level (dBFS of its loudest 5% of 100 ms frames, at "
        "most +30 dB): far-field speech is quiet and Silero misses quiet speech (bench/meetings.py --rooms); "
        "null: as recorded",
    )


class DiarizationConfig(Model):
    enabled: bool = False
    backend: Literal["resemblyzer", "nemo", "channels", "simulated"] = Field(
        "resemblyzer",
        description="resemblyzer (embedded), nemo (Sortformer/TitaNet), or channels: each channel of a stereo "
        "file is one party (call centres), speakers ch0, ch1, ... by the loudest channel; no model "
        "(simulated: benchmarks and tests only)",
    )
    model: str | None = None
    sha256: str | None = None
    beyond_model: str | None = Field(
        None,
        description="nemo with a Sortformer model: a speaker-embedding model (TitaNet) whose windows are clustered "
        "instead when a recording keeps every Sortformer slot busy (more speakers than it can tell, 4)",
    )
    beyond_sha256: str | None = None
    vad_threshold: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="onset of a second, more sensitive VAD pass (same backend) whose speech outside the VAD's regions the "
        "diarizer also hears: quiet, far-field talkers and backchannels that ASR's VAD drops still get "
        "speakers in `recordings.turns` and `num_speakers` (0.35: bench/meetings.py --rooms); null: the diarizer "
        "hears the VAD's regions only",
    )
    max_speakers: int = Field(8, ge=1)
    # Cosine distance above which two clusters are different speakers (agglomerative, average link).
    # Calibrated for Resemblyzer on ../shared/corpus and bench/meetings.py (why: pipeline/clustering.py).
    cluster_threshold: float = Field(
        0.30,
        gt=0,
        lt=2,
        description="fixed threshold (NeMo TitaNet; Resemblyzer: recordings too short for threshold_scale)",
    )
    threshold_scale: float | None = Field(
        1.6,
        gt=0,
        description="Resemblyzer: the threshold is this many times the recording's own same-speaker distance "
        "(windows 1 s apart in one speech region), within threshold_bounds; null: always cluster_threshold",
    )
    threshold_bounds: tuple[float, float] = Field(
        (0.25, 0.40), description="the recording's threshold stays within these"
    )
    min_speaker_s: float = Field(
        4.0,
        ge=0,
        description="a speaker holds at least this much speech; smaller clusters join the nearest speaker "
        "(4 s: at 3 s the overlapped turn changes of the corpus's call made a third speaker)",
    )
    min_speaker_share: float = Field(
        0.25, ge=0, lt=1, description="... and at least this share of the longest speaker's speech (0: off)"
    )
    min_cluster_fraction: float = Field(
        0.0, ge=0, lt=1, description="also fold clusters holding less than this share of the windows (0: off)"
    )
    num_speakers: int | None = Field(None, ge=1, description="the known number of speakers (skips the estimate)")
    min_speakers: int = Field(1, ge=1, description="the estimated count is at least this")
    embedding_window_s: float = Field(
        1.6, gt=0, description="seconds of audio per speaker embedding (Resemblyzer's is fixed at 1.6 s)"
    )
    embedding_hop_s: float = Field(0.5, gt=0, description="seconds between speaker embeddings")

    @field_validator("threshold_bounds")
    @classmethod
    def _bounds_ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] < 2:
            raise ValueError(f"threshold_bounds must be 0 < low <= high < 2 (cosine distances), got {list(v)}")
        return v


class SegmentationConfig(Model):
    max_segment_s: float = Field(30.0, gt=1, description="utterances never exceed this many seconds")
    min_segment_s: float = Field(0.3, ge=0, description="shorter speech is dropped (recorded in the report)")
    merge_gap_s: float = Field(
        1.0, ge=0, description="cut & merge: join speech regions closer than this (while the result fits max_segment_s)"
    )


class AudioQualityConfig(Model):
    """Per-utterance audio signals (pipeline/audio_quality.py): SNR, bandwidth, clipping, level, MOS.
    Not in the fingerprint: they change no transcript (a rerun does not recompute committed ones)."""

    enabled: bool = Field(True, description="measure SNR, bandwidth, clipping and level (cheap numpy)")
    mos: bool = Field(
        False,
        description="also DNSMOS (speechmos' ONNX weights, ~0.2 CPU s per utterance on a CPU: README "
        '"Pseudo-label quality")',
    )


class RecordingStageConfig(Model):
    """The recording stage (actor, pipeline/stages/recording.py): VAD -> diarization -> utterances."""

    resources: Resources = Resources(num_cpus=0.5, pool_size=1)
    simulated_rtfx: float = Field(
        1000.0,
        gt=0,
        description="benchmarks and tests only, not a user setting: the pace of this stage's `backend: simulated` "
        "models (pipeline/backends/simulated.py), which compute nothing and hold each call for its padded "
        "seconds / this; not in the fingerprint",
    )
    vad: VadConfig = VadConfig()
    diarization: DiarizationConfig = DiarizationConfig()
    segmentation: SegmentationConfig = SegmentationConfig()
    audio_quality: AudioQualityConfig = AudioQualityConfig()
