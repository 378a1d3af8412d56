"""Typed job configuration: pydantic models mirrored by the YAML files in `conf/`.

Config is data. Every knob lives here with its default and unit; stages receive their own options
object and never read files or environment variables. `load_config(path, overrides)` is what the CLI
calls: YAML, then `dotted.key=value` overrides, then validation. Keys of the older flat layout (in
the file or an override) move to their places (`MOVED_KEYS`, one warning line each; one key given at
both places is a `ConfigError`); `JobConfig.model_validate` moves them too. Unknown keys and bad values raise
`ConfigError` with the key's dotted path and the valid choices.

The sections follow the data: `input` -> `pooling` (windows of recordings) -> `decode` ->
`recording_stage` (vad, diarization, segmentation) -> `segment_stage` (batching, packing, lid, asr,
vocabulary, punctuation, itn, quality) -> `output`; `models`, `ray` and `progress` serve them all.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

log = logging.getLogger(__name__)

class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Resources(Model):
    """What one actor (or task) of a stage reserves from Ray. Fractions let stages share a core/GPU."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    pool_size: int = Field(1, ge=1, description="actors (or concurrent tasks) of the stage; the minimum when autoscaling")
    max_pool_size: int | None = Field(
        None, ge=1, description="actor stages: grow the pool up to this many actors as work queues (None: fixed pool)"
    )

    @model_validator(mode="after")
    def _pool_bounds(self) -> "Resources":
        if self.max_pool_size is not None and self.max_pool_size < self.pool_size:
            raise ValueError(f"max_pool_size ({self.max_pool_size}) is below pool_size ({self.pool_size})")
        return self


class StorageOptions(Model):
    """How to reach object storage. Credentials are NOT here: they come from the AWS chain / env."""

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    anon: bool = False
    connect_timeout_s: float = Field(10.0, gt=0, description="S3/HTTP: give up connecting after this long (then retry)")
    read_timeout_s: float = Field(120.0, gt=0, description="S3/HTTP: give up on a silent connection after this long")

    def fsspec_kwargs(self, protocol: str) -> dict[str, Any]:
        if protocol in ("http", "https"):
            # aiohttp's default is 5 minutes in total and nothing per read: a server that accepts and
            # never answers held discovery ~10 minutes per manifest line
            import aiohttp

            return {"client_kwargs": {"timeout": aiohttp.ClientTimeout(
                total=None, connect=self.connect_timeout_s, sock_connect=self.connect_timeout_s,
                sock_read=self.read_timeout_s)}}
        if protocol not in ("s3", "s3a"):
            return {}
        # botocore's defaults (60 s connect, 60 s read, several retries) made an unreachable endpoint
        # cost minutes before its first error line
        kw: dict[str, Any] = {
            "anon": self.anon,
            "config_kwargs": {"connect_timeout": self.connect_timeout_s, "read_timeout": self.read_timeout_s,
                              "retries": {"max_attempts": 3, "mode": "standard"}},
        }
        if self.endpoint_url:
            kw["client_kwargs"] = {"endpoint_url": self.endpoint_url}
        return kw


class InputConfig(Model):
    uri: str = Field(..., description="fsspec URI of a folder/prefix, or of a NeMo-style JSONL manifest")
    extensions: list[str] = [".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".mp4", ".webm", ".aac"]
    storage: StorageOptions = StorageOptions()
    limit: int | None = Field(None, ge=1, description="process at most this many files (smoke runs)")
    # Containment (pipeline/discover.py): a manifest's entries must lie inside the manifest's folder
    # (local) or its bucket (same protocol), and a folder's symlinks inside the folder; these widen it.
    allowed_roots: list[str] = Field(
        [], description="more folders/prefixes inputs may point into: local paths or URIs (s3://other/prefix/)"
    )
    allowed_buckets: list[str] = Field(
        [], description="more buckets (or hosts, for http) a manifest's entries may name, with the manifest's protocol"
    )


class OutputConfig(Model):
    uri: str
    storage: StorageOptions = StorageOptions()


class DecodeConfig(Model):
    """Download + decode to `pipeline.records.SAMPLE_RATE` mono float32 (CPU tasks)."""

    max_duration_s: float = Field(4 * 3600, gt=0, description="longer files are refused with an error")
    resources: Resources = Resources(num_cpus=0.25, pool_size=1)


class VadConfig(Model):
    backend: Literal["silero", "nemo", "none"] = "silero"
    model: str | None = Field(None, description="nemo: pretrained name, local .nemo or s3://.../x.nemo")
    sha256: str | None = None
    threshold: float = Field(0.5, gt=0, lt=1, description="speech probability onset")
    neg_threshold: float | None = Field(None, description="offset threshold; default threshold - 0.15")
    min_speech_s: float = Field(0.25, ge=0)
    min_silence_s: float = Field(0.5, ge=0, description="pauses shorter than this do not split speech")
    pad_s: float = Field(0.2, ge=0, description="padding added on each side of a speech region")


class DiarizationConfig(Model):
    enabled: bool = False
    backend: Literal["resemblyzer", "nemo"] = "resemblyzer"
    model: str | None = None
    sha256: str | None = None
    max_speakers: int = Field(8, ge=1)
    # Cosine distance above which two clusters are different speakers (agglomerative, average link).
    # 0.30 with min_speaker_s 3.0 was calibrated for Resemblyzer on ../shared/corpus (pipeline/clustering.py).
    cluster_threshold: float = Field(0.30, gt=0, lt=2)
    min_speaker_s: float = Field(
        3.0, ge=0, description="a speaker holds at least this much speech; smaller clusters join the nearest speaker"
    )
    min_cluster_fraction: float = Field(
        0.0, ge=0, lt=1, description="also fold clusters holding less than this share of the windows (0: off)"
    )
    num_speakers: int | None = Field(None, ge=1, description="the known number of speakers (skips the estimate)")
    min_speakers: int = Field(1, ge=1, description="the estimated count is at least this")
    embedding_window_s: float = Field(1.6, gt=0, description="seconds of audio per speaker embedding (Resemblyzer's is fixed at 1.6 s)")
    embedding_hop_s: float = Field(0.5, gt=0, description="seconds between speaker embeddings")


class SegmentationConfig(Model):
    max_segment_s: float = Field(30.0, gt=1, description="utterances never exceed this many seconds")
    min_segment_s: float = Field(0.3, ge=0, description="shorter speech is dropped (recorded in the report)")
    merge_gap_s: float = Field(1.0, ge=0, description="cut & merge: join regions of one speaker closer than this")


class LidConfig(Model):
    backend: Literal["whisper", "nemo", "none"] = "whisper"
    model: str | None = Field(None, description="defaults to the ASR model for whisper")
    sha256: str | None = None
    language: str | None = Field(None, description="with backend none: the fixed language of every segment")
    probe_s: float = Field(10.0, gt=0, le=30, description="whisper: seconds of each segment used to identify its language")
    part_probe_s: float = Field(
        5.0, gt=0, le=30,
        description="whisper, fused: when the segments sharing a 30 s window seem to speak different "
        "languages, seconds of each that a closer check encodes before the window is cut",
    )


class AsrConfig(Model):
    backend: Literal["whisper", "nemo"] = "whisper"
    model: str = Field("base", description="whisper: 'base' (embedded), 'tiny.en' (embedded) or a CTranslate2 dir")
    sha256: str | None = None
    compute_type: str = "int8"
    beam_size: int = Field(1, ge=1)
    cpu_threads: int = Field(2, ge=0)
    word_timestamps: bool = True
    timestamp_tokens: bool = Field(
        False, description="whisper: decode with timestamp tokens (keeps going across pauses in packed windows)"
    )


class VocabularyConfig(Model):
    """Word boosting: one job-level list of terms (products, people, places, jargon) that every ASR
    backend honours through its own mechanism (pipeline/vocabulary.py). Read once, on the driver."""

    terms: list[str] = Field([], description="terms for every language, e.g. [ComfyUI, Kubernetes]")
    file: str | None = Field(
        None, description="local path or fsspec/S3 URI: one term per line, optional weight after a tab "
        "(or after a space, written with a decimal point: 'ComfyUI 2.0'); '#' starts a comment",
    )
    storage: StorageOptions = StorageOptions()
    per_language: dict[str, list[str]] = Field({}, description="extra terms per ISO 639-1 language")
    boost: float = Field(
        1.0, gt=0, le=10,
        description="NeMo: boosting_tree_alpha (shallow-fusion weight of the phrase-boosting tree); a term's "
        "weight scales its per-token context score",
    )
    max_prompt_tokens: int = Field(
        40, ge=1, le=200,  # measured by bench/vocabulary.py (README "Vocabulary"); 64 was never measured
        description="Whisper: most tokens of terms in the decoder prompt (highest weights first; whole terms "
        "only), so a long list cannot crowd out the context (faster-whisper's own bound is 223)",
    )
    # {language or "*": [(term, weight)]}: set once on the driver by pipeline.vocabulary.resolve and
    # pickled with the config into the actors, so they never read the file (or S3) again.
    _resolved: dict[str, list[tuple[str, float]]] | None = PrivateAttr(None)


class PunctuationConfig(Model):
    backend: Literal["native", "none"] = Field("native", description="native: the ASR model's own punctuation")


class PoolingConfig(Model):
    """How the driver groups recordings into pooling windows (pipeline/batching.py `windows`): every
    stage takes one window per call, and the segment stage buckets a window's segments together."""

    window_audio_s: float = Field(
        300.0, gt=0, description="audio seconds of recordings pooled into one window (estimated in the driver)"
    )
    max_files: int = Field(
        16, ge=1, description="most recordings in one pooling window (1: every recording is its own window)"
    )


class BatchingConfig(Model):
    """Duration bucketing of the segment stage (see pipeline/batching.py)."""

    enabled: bool = Field(True, description="sort pooled segments by duration before packing (off: arrival order)")
    max_padded_s: float = Field(240.0, gt=0, description="budget of padded audio seconds per model call")
    max_padded_s_per_gib: float | None = Field(
        None, gt=0,
        description="on a GPU: the budget follows its memory, this many padded seconds per GiB of the GPU share "
        "the segment stage reserves (replaces max_padded_s there; on CPU max_padded_s holds)",
    )
    quadratic_s: float = Field(
        0.0, ge=0, description="attention cost term: each call also costs quadratic_s * count * (longest/30 s)^2"
    )
    max_items: int = Field(16, ge=1)
    max_extra_padding: float | None = Field(
        0.05, ge=0, description="close a sorted batch when an item would add more padding than this share of it"
    )


class PackingConfig(Model):
    """How segments share an ASR model's fixed input window (pipeline/packing.py)."""

    # Whisper pads every input to 30 s. "recording": consecutive segments of one recording, speaker
    # and language share a window (cut & merge, as WhisperX does). "corpus": short segments of any
    # recordings of one language are packed together: on FLEURS (25 clips) ASR ran 1.6x faster, but
    # word error rose from 0.36 to 0.60 in French and 0.18 to 0.30 in German (words lost at clip
    # boundaries), so it is opt-in. "none": one segment per input.
    mode: Literal["none", "recording", "corpus"] = Field(
        "recording", description="whisper: how segments share 30 s windows (needs word timestamps)"
    )
    gap_s: float = Field(0.5, ge=0, description="silence laid between packed segments")
    min_piece_s: float = Field(
        0.0, ge=0,
        description="recording mode: cut a segment that does not fit the room left in a window at a pause, "
        "into pieces of at least this many seconds, to fill the window (0: never cut; words are joined back)",
    )


class QualityRules(Model):
    """Thresholds of the quality judgement (pipeline/stages/quality.py); every one has a reject reason.
    Defaults calibrated on ../shared/corpus (README "Pseudo-label quality")."""

    min_confidence: float = Field(0.85, ge=0, le=1, description="mean word probability")
    max_chars_per_second: float = Field(30.0, gt=0)
    max_compression_ratio: float = Field(2.4, gt=0, description="gzip ratio of the text (Whisper loops)")
    max_no_speech_prob: float = Field(0.8, ge=0, le=1)
    min_language_prob: float = Field(0.0, ge=0, le=1, description="language ID probability")
    max_repetition: float = Field(0.5, ge=0, le=1, description="share of repeated word 2/3-grams")
    min_unique_word_ratio: float = Field(0.3, ge=0, le=1, description="distinct/total words, texts of >= 6 words")
    max_word_length: int = Field(40, ge=1, description="characters of the longest word")
    require_language_agreement: bool = Field(True, description="reject when a separate LID and the ASR disagree")
    reject_fillers: bool = Field(True, description="reject known hallucination phrases on near-silence")
    filler_min_no_speech_prob: float = Field(0.1, ge=0, le=1, description="... near-silence: no_speech_prob above this")
    filler_min_confidence: float = Field(0.8, ge=0, le=1, description="... or confidence below this")


class QualityConfig(QualityRules):
    per_language: dict[str, dict[str, Any]] = Field(
        {"de": {"min_confidence": 0.8}, "es": {"min_confidence": 0.8}},
        description="ISO 639-1 code -> thresholds that replace the ones above for that language (setting it "
        "replaces these calibrated defaults as a whole)",
    )

    @model_validator(mode="after")
    def _per_language_valid(self) -> "QualityConfig":
        for lang, over in self.per_language.items():
            try:
                QualityRules.model_validate({**self.model_dump(exclude={"per_language"}), **(over or {})})
            except ValidationError as exc:
                e = exc.errors()[0]
                what = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
                raise ValueError(f"per_language.{lang}.{'.'.join(map(str, e['loc']))}: {what}") from None
        return self

    def rules_for(self, language: str | None) -> QualityRules:
        """The thresholds that apply to a segment of `language`."""
        over = self.per_language.get(language or "") if self.per_language else None
        base = self.model_dump(exclude={"per_language"})
        return QualityRules.model_validate({**base, **over}) if over else QualityRules.model_validate(base)


class ItnConfig(Model):
    """Inverse text normalisation ("twenty three" -> "23"); needs the `itn` extra (nemo_text_processing)."""

    enabled: bool = False


class RecordingStageConfig(Model):
    """The recording stage (actor, pipeline/stages/recording.py): VAD -> diarization -> utterances."""

    resources: Resources = Resources(num_cpus=0.5, pool_size=1)
    vad: VadConfig = VadConfig()
    diarization: DiarizationConfig = DiarizationConfig()
    segmentation: SegmentationConfig = SegmentationConfig()


class SegmentStageConfig(Model):
    """The segment stage (actor, pipeline/stages/segment.py): pooled, bucketed, packed LID -> ASR ->
    punctuation -> ITN -> quality."""

    resources: Resources = Resources(num_cpus=1.0, pool_size=1)
    batching: BatchingConfig = BatchingConfig()
    packing: PackingConfig = PackingConfig()
    lid: LidConfig = LidConfig()
    asr: AsrConfig = AsrConfig()
    vocabulary: VocabularyConfig = VocabularyConfig()
    punctuation: PunctuationConfig = PunctuationConfig()
    itn: ItnConfig = ItnConfig()
    quality: QualityConfig = QualityConfig()


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
        None, ge=0, description="local Ray only: GPUs it declares (default: what Ray detects); logical GPUs on a CPU "
        "machine let a GPU plan be built and run there (with models.device=cpu)",
    )


class ProgressConfig(Model):
    """What the driver shows while a run goes on (pipeline/progress.py)."""

    log_interval_s: float = Field(60.0, gt=0, description="without a terminal: seconds between progress lines")


class ConfigError(ValueError):
    """A config the user wrote is wrong; the message names the key and what would be valid."""


#: Where each key of the flat layout before the config followed the flow (issue 15) lives now: old
#: dotted key -> new dotted key, or None for a key nothing reads any more. A key under a listed
#: section moves with it (`asr.model` -> `segment_stage.asr.model`); the longest listed prefix of a
#: key decides (`batching.window_s` -> `pooling.window_audio_s`, other `batching.*` keys ->
#: `segment_stage.batching.*`). `migrate` applies it; `JobConfig.fingerprint` reads it backwards.
MOVED_KEYS: dict[str, str | None] = {
    "vad": "recording_stage.vad",
    "diarization": "recording_stage.diarization",
    "diarization.window_s": "recording_stage.diarization.embedding_window_s",
    "diarization.hop_s": "recording_stage.diarization.embedding_hop_s",
    "segmentation": "recording_stage.segmentation",
    "batching": "segment_stage.batching",
    "batching.window_s": "pooling.window_audio_s",
    "batching.max_files": "pooling.max_files",
    "batching.pack": "segment_stage.packing.mode",
    "batching.pack_gap_s": "segment_stage.packing.gap_s",
    "lid": "segment_stage.lid",
    "lid.window_s": "segment_stage.lid.probe_s",
    "lid.split_window_s": "segment_stage.lid.part_probe_s",
    "asr": "segment_stage.asr",
    "vocabulary": "segment_stage.vocabulary",
    "punctuation": "segment_stage.punctuation",
    "itn": "segment_stage.itn",
    "quality": "segment_stage.quality",
    "decode.sample_rate": None,  # audio is always decoded to pipeline.records.SAMPLE_RATE
    "output.rows_per_file": None,  # the sink commits one Delta transaction per block, whatever its size
}
_OLD_ROOTS = frozenset(key.split(".", 1)[0] for key in MOVED_KEYS)

#: The sections the fingerprint hashes, by their names before issue 15 (see `JobConfig.fingerprint`).
_FINGERPRINT_SECTIONS = ("vad", "diarization", "segmentation", "lid", "asr", "punctuation", "itn")


def migrate(data: Any) -> Any:
    """`data` (a job config mapping) with every key of `MOVED_KEYS` moved to its new place, one
    warning line each (logger `pipeline.config`); keys nothing reads are dropped with a warning.
    `ConfigError` when a key is given both at its old and its new place. `data` is not modified."""
    if not isinstance(data, dict) or not _OLD_ROOTS & data.keys():
        return data
    out = _copy_mappings(data)
    moves = []
    for path, value in _leaves(out, ()):
        if path[0] not in _OLD_ROOTS:
            continue
        for n in range(len(path), 0, -1):
            old = ".".join(path[:n])
            if old in MOVED_KEYS:
                moves.append((path, value, old, path[n:]))
                break
    for path, *_ in moves:
        _remove(out, path)
    placed: dict[tuple[str, ...], str] = {}
    said: dict[str, list[str]] = {}  # listed old key -> its keys met, for one warning line each
    for path, value, listed, rest in moves:
        said.setdefault(listed, []).append(".".join(rest))
        new = MOVED_KEYS[listed]
        if new is None:
            continue
        target = (*new.split("."), *rest)
        _place(out, target, value, ".".join(path), placed.get(target))
        placed[target] = ".".join(path)
    for old, keys in said.items():
        new = MOVED_KEYS[old]
        if new is None:
            log.warning("config: %r is no longer read; remove it", old)
        elif keys == [""] or len(keys) == 1:  # the key itself, or one key of a moved section: name it
            tail = f".{keys[0]}" if keys[0] else ""
            log.warning("config: %r is now %r", old + tail, new + tail)
        else:
            log.warning("config: %r is now %r (%s)", old, new, ", ".join(keys))
    return out


def _copy_mappings(data: dict) -> dict:
    return {k: _copy_mappings(v) if isinstance(v, dict) else v for k, v in data.items()}


def _leaves(node: dict, prefix: tuple[str, ...]):
    """(dotted path, value) of every non-mapping value and empty mapping under `node`."""
    for key, value in node.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and value:
            yield from _leaves(value, path)
        else:
            yield path, value


def _remove(data: dict, path: tuple[str, ...]) -> None:
    """Delete `path`, and the mappings it leaves empty."""
    parents = [data]
    for key in path[:-1]:
        parents.append(parents[-1][key])
    del parents[-1][path[-1]]
    for depth in range(len(path) - 1, 0, -1):
        if parents[depth]:
            break
        del parents[depth - 1][path[depth - 1]]


def _place(data: dict, target: tuple[str, ...], value: Any, old: str, moved_from: str | None) -> None:
    new = ".".join(target)
    node = data
    for i, key in enumerate(target[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config: cannot move {old!r} to {new!r}: {'.'.join(target[:i + 1])!r} is not a mapping")
        node = child
    last = target[-1]
    if last not in node:
        node[last] = value
    elif isinstance(value, dict) and not value and isinstance(node[last], dict):
        pass  # an empty old section beside its new one: nothing to move
    else:
        given = f"{moved_from!r} (now {new!r})" if moved_from else repr(new)
        raise ConfigError(f"config: {old!r} and {given} are both given; they are one key now: keep only {new!r}")


def _old_name(section: str, field: str) -> str:
    """A field's name in the fingerprint: the one it had before it was renamed (`MOVED_KEYS`)."""
    new_section = MOVED_KEYS[section]
    for old, new in MOVED_KEYS.items():
        if new and old.startswith(section + ".") and new == f"{new_section}.{field}":
            return old.split(".", 1)[1]
    return field


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

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """An old-shaped mapping (keys of `MOVED_KEYS`) validates too, for Python API users."""
        return migrate(data)

    def section(self, dotted: str) -> Model:
        """The sub-config at a dotted path, e.g. `segment_stage.asr`."""
        node: Any = self
        for part in dotted.split("."):
            node = getattr(node, part)
        return node

    def fingerprint(self) -> str:
        """Hash of everything that changes a transcript (models and their parameters), not of I/O.

        Outputs record it to skip files already done, so the payload keeps the layout it had
        before the config followed the flow: the old section and field names (`MOVED_KEYS` read
        backwards) and the `decode.sample_rate` that is no longer a key. Same config, same hash."""
        keep: dict[str, Any] = {}
        for old in _FINGERPRINT_SECTIONS:
            dump = self.section(MOVED_KEYS[old]).model_dump()  # type: ignore[arg-type]
            keep[old] = {_old_name(old, k): v for k, v in dump.items()}
        from pipeline import __version__
        from pipeline.records import SAMPLE_RATE

        keep["decode"] = {"sample_rate": SAMPLE_RATE, "max_duration_s": self.decode.max_duration_s}
        keep["pipeline_version"] = __version__
        from pipeline.vocabulary import fingerprint_payload

        # the resolved terms (a file's contents, not its path)
        vocab = fingerprint_payload(self.segment_stage.vocabulary)
        if vocab is not None:  # no vocabulary: the fingerprint is what it was before vocabularies existed
            keep["vocabulary"] = vocab
        blob = json.dumps(keep, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _parse_override(dotted: str) -> tuple[list[str], Any]:
    if "=" not in dotted:
        raise ConfigError(f"override {dotted!r} is not of the form dotted.key=value")
    key, raw = dotted.split("=", 1)
    return key.strip().split("."), (yaml.safe_load(raw) if raw != "" else None)


def _set(data: dict[str, Any], parts: list[str] | tuple[str, ...], value: Any) -> None:
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(parts)!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def apply_override(data: dict[str, Any], dotted: str) -> None:
    """Apply one `a.b.c=value` override; the value is parsed as YAML (so 3, true, [x, y] work)."""
    _set(data, *_parse_override(dotted))


def apply_job_override(data: dict[str, Any], dotted: str, given: dict[str, str] | None = None) -> None:
    """`apply_override` for a job config: a key of the old layout is set at its new place (one
    warning line, see `migrate`). `given` (new dotted key -> the key an override named, kept across
    the overrides of one command) turns an old and a new spelling of one key into a `ConfigError`."""
    parts, value = _parse_override(dotted)
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    moved = migrate(nested)
    if moved == nested:  # not a key of the old layout: set as written (a mapping replaces the section)
        targets = [(tuple(parts), value)]
    else:  # set each key it holds at its new place
        targets = list(_leaves(moved, ()))
    for target, leaf in targets:
        new = ".".join(target)
        if given is not None:
            if given.setdefault(new, ".".join(parts)) != ".".join(parts):
                raise ConfigError(f"config: overrides {given[new]!r} and {'.'.join(parts)!r} are both given; they "
                                  f"are one key now: keep only {new!r}")
        _set(data, target, leaf)


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        parent = _section_model(err["loc"][:-1])
        valid = ", ".join(sorted(parent.model_fields)) if parent else "?"
        return f"unknown key {loc!r}; valid keys here: {valid}"
    if err["type"] == "missing":
        return f"missing required key {loc!r}"
    from pipeline.text import safe

    return f"{loc}: {err['msg']} (got {safe(repr(err.get('input')))})"  # redacted: endpoints may hold user:password@


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = JobConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def read_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file holding a mapping at the top (an empty file is an empty mapping); `ConfigError`
    naming `what` and the path otherwise."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} {str(p)!r} does not exist")
    loaded = yaml.safe_load(p.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {str(p)!r} must hold a mapping at the top")
    return loaded


def load_config(path: str | Path | None, overrides: list[str] = ()) -> JobConfig:  # type: ignore[assignment]
    # Keys of the layout before issue 15 move to their places now, a warning line each: the file's
    # (one key at both places in the file: ConfigError), then each override's, so that an old
    # override still overrides the new key of the file (and an old and a new override of one key
    # are a ConfigError).
    data: dict[str, Any] = migrate(read_mapping(path) if path is not None else {})
    given: dict[str, str] = {}
    for item in overrides:
        apply_job_override(data, item, given)
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None
