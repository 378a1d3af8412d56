"""The whole job (`JobConfig`), with the sections that serve every stage: how recordings are pooled
and decoded, where models are cached, Ray, progress. (Its fingerprint: pipeline/fingerprint.py.)"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from pipeline.config.base import Model, Resources
from pipeline.config.io import InputConfig, OutputConfig, StorageOptions
from pipeline.config.migration import migrate
from pipeline.config.recording import RecordingStageConfig
from pipeline.config.segment import SegmentStageConfig


class PoolingConfig(Model):
    """How the driver groups recordings into pooling windows (pipeline/batching.py `windows`): every
    stage takes one window per call, and the segment stage buckets a window's segments together."""

    window_audio_s: float = Field(
        300.0, gt=0, description="audio seconds of recordings pooled into one window (estimated in the driver)"
    )
    max_files: int = Field(
        16, ge=1, description="most recordings in one pooling window (1: every recording is its own window)"
    )


class DecodeConfig(Model):
    """Download + decode to `pipeline.records.SAMPLE_RATE` mono float32 (CPU tasks).

    A recording longer than `piece_s` + `piece_overlap_s` travels as pieces (pipeline/pieces.py):
    decode sends each piece on as soon as it is decoded, so ASR starts on a 4-hour file after
    minutes, and no stage holds more than one piece's samples. Not in the fingerprint: like pooling,
    it decides how the work is cut, and a transcript differs only where a speech region is longer
    than the overlap at a piece's edge."""

    max_duration_s: float = Field(4 * 3600, gt=0, description="longer files are refused with an error")
    piece_s: float = Field(
        600.0, ge=0, description="longer recordings are cut into pieces of this many seconds (0: never cut)"
    )
    piece_overlap_s: float = Field(
        20.0, ge=0, description="audio each piece carries past both of its edges, so VAD sees whole regions there"
    )
    resources: Resources = Resources(num_cpus=0.25, pool_size=1)
    prefetch_files: int = Field(
        8,
        ge=0,
        description="object storage: files of a window fetched ahead, on threads, while one decodes, so a "
        "store's round trips do not pace decode (0: each file is read as it decodes; local files always are)",
    )
    prefetch_max_mb: float = Field(
        32.0, gt=0, description="... only files up to this size (a longer one streams as it decodes, in pieces)"
    )
    in_recording_stage: bool = Field(
        False,
        description="decode inside the recording stage's actors (`resources` unused) instead of in tasks of its "
        "own: one process and one object-store hand-off fewer, for a small machine; on a cluster, tasks let "
        "decode spread over spare CPUs apart from the VAD actors",
    )

    @model_validator(mode="after")
    def _overlap_fits(self) -> "DecodeConfig":
        if self.piece_s and self.piece_overlap_s * 2 > self.piece_s:
            raise ValueError(
                f"decode.piece_overlap_s={self.piece_overlap_s} must be at most half of decode.piece_s={self.piece_s}"
            )
        return self


class ModelsConfig(Model):
    """Where model files fetched from object storage are cached (once per node)."""

    cache_dir: str = Field("~/.cache/scriptorium/models", description="local folder, one per node")
    storage: StorageOptions = StorageOptions()
    allow_download: bool = Field(
        True, description="allow NeMo pretrained names (fetched from the hub at run time); false: staged files only"
    )
    require_sha256: bool = Field(False, description="refuse a model file whose config has no sha256")
    device: Literal["auto", "cpu"] = Field(
        "auto", description="auto: CUDA where a stage reserves GPUs; cpu: always CPU (checks a GPU plan on a CPU box)"
    )

    def use_gpu(self, resources: "Resources") -> bool:
        """Whether a stage with these resources runs its models on CUDA."""
        return self.device == "auto" and resources.num_gpus > 0


class RayConfig(Model):
    address: str | None = Field(None, description="None: start a local Ray; 'auto' or ray://... to join")
    num_cpus: int | None = Field(None, ge=1, description="local Ray only: CPUs it declares (default: all cores)")
    num_gpus: int | None = Field(
        None,
        ge=0,
        description="local Ray only: GPUs it declares (default: what Ray detects); logical GPUs on a CPU "
        "machine let a GPU plan be built and run there (with models.device=cpu)",
    )


class ProgressConfig(Model):
    """What the driver shows while a run goes on (pipeline/progress.py)."""

    log_interval_s: float = Field(60.0, gt=0, description="without a terminal: seconds between progress lines")


class JobConfig(Model):
    """The whole job, in the order its data flows: input -> pooling windows -> decode -> recording
    stage -> segment stage -> output. Each stage receives its own section."""

    input: InputConfig
    pooling: PoolingConfig = PoolingConfig()
    decode: DecodeConfig = DecodeConfig()
    recording_stage: RecordingStageConfig = RecordingStageConfig()
    segment_stage: SegmentStageConfig = SegmentStageConfig()
    output: OutputConfig
    models: ModelsConfig = ModelsConfig()
    ray: RayConfig = RayConfig()
    progress: ProgressConfig = ProgressConfig()
    # dotted key -> where its value came from ("command line" or the YAML file's path), set by
    # `load_config`; None for a config built in Python (then pydantic's `model_fields_set` tells).
    _origins: dict[str, str] | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """An old-shaped mapping (keys of `MOVED_KEYS`) validates too, for Python API users."""
        return migrate(data)

    def __eq__(self, other: object) -> bool:
        """Equal settings, wherever they came from (`_origins` is provenance, not a setting)."""
        if not isinstance(other, JobConfig):
            return NotImplemented
        a, b = self.model_copy(), other.model_copy()
        a._origins = b._origins = None
        return super(JobConfig, a).__eq__(b)

    def given(self, prefix: str) -> dict[str, str]:
        """The keys at or under `prefix` (e.g. `segment_stage.quality`) that the user set, each with
        where it came from ("command line", the YAML's path, or "python"); empty when every value
        under it is a default. Why: a setting the user chose outranks one recorded with the output
        (`pipeline.filter.rules_for_run`), a default does not."""
        origins = self._origins
        if origins is None:
            origins = {}
            _fields_set(self, "", origins)
        return {k: v for k, v in origins.items() if not prefix or k == prefix or k.startswith(prefix + ".")}

    def origin(self, dotted: str) -> str:
        """Where the value at `dotted` came from: "command line", the YAML's path, "python" or "default"
        (a key inside a section given whole counts as given with it)."""
        given = self.given("")
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in given:
                return given[".".join(parts[:n])]
        inside = self.given(dotted)  # a mapping (per_language) given key by key
        return next(iter(inside.values())) if inside else "default"

    def section(self, dotted: str) -> Model:
        """The sub-config at a dotted path, e.g. `segment_stage.asr`."""
        node: Any = self
        for part in dotted.split("."):
            node = getattr(node, part)
        return node


def _fields_set(model: Model, prefix: str, out: dict[str, str]) -> None:
    """The keys a Python caller set (pydantic's `model_fields_set`), as dotted leaves."""
    for name in model.model_fields_set:
        value = getattr(model, name)
        key = f"{prefix}{name}"
        if isinstance(value, Model) and value.model_fields_set:
            _fields_set(value, key + ".", out)
        else:
            out[key] = "python"
