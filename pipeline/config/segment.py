"""The segment stage's sections: batching and packing of pooled segments, then LID -> ASR (with the
job's vocabulary) -> punctuation -> ITN -> quality."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from pipeline.config.base import Model, Resources
from pipeline.config.io import StorageOptions


class BatchingConfig(Model):
    """Duration bucketing of the segment stage (see pipeline/batching.py)."""

    enabled: bool = Field(True, description="sort pooled segments by duration before packing (off: arrival order)")
    max_padded_s: float = Field(240.0, gt=0, description="budget of padded audio seconds per model call")
    max_padded_s_per_gib: float | None = Field(
        None,
        gt=0,
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
    # recordings of one language are packed together: fewer windows, but Whisper loses words where
    # unrelated clips meet, so it is opt-in (README "Performance" has the numbers). "none": one
    # segment per input.
    mode: Literal["none", "recording", "corpus"] = Field(
        "recording", description="whisper: how segments share 30 s windows (needs word timestamps)"
    )
    # 0.5 s, not 0: with no silence at the junctions Whisper passed over fewer packed segments where
    # pauses are short, but ran more windows at more word errors where many utterances meet in a
    # window; a short gap is the setting that holds on every corpus measured (bench/packing.py,
    # bench/throughput.py; README "Performance").
    gap_s: float = Field(0.5, ge=0, description="silence laid between packed segments")
    min_piece_s: float = Field(
        0.0,
        ge=0,
        description="recording mode: cut a segment that does not fit the room left in a window at a pause, "
        "into pieces of at least this many seconds, to fill the window (0: never cut; words are joined back)",
    )
    retry_below_cps: float = Field(
        3.0,
        ge=0,
        description="a packed segment of 1.5 s or more whose share of the window's text has fewer characters "
        "per second than this (the model skipped it) is transcribed again on its own (0: never)",
    )


class LidConfig(Model):
    backend: Literal["whisper", "nemo", "none", "simulated"] = Field(
        "whisper", description="whisper, nemo (AmberNet), none; simulated: benchmarks and tests only"
    )
    model: str | None = Field(None, description="defaults to the ASR model for whisper")
    sha256: str | None = None
    language: str | None = Field(
        None, description="with backend none (or simulated): the fixed language of every segment"
    )
    probe_s: float = Field(
        10.0, gt=0, le=30, description="whisper: seconds of each segment used to identify its language"
    )
    part_probe_s: float = Field(
        5.0,
        gt=0,
        le=30,
        description="whisper, fused: when the segments sharing a 30 s window seem to speak different "
        "languages, seconds of each that a closer check encodes before the window is cut",
    )


class AsrConfig(Model):
    backend: Literal["whisper", "nemo", "simulated"] = Field(
        "whisper", description="whisper (embedded), nemo (FastConformer, Canary); simulated: benchmarks and tests only"
    )
    model: str = Field("base", description="whisper: 'base' (embedded), 'tiny.en' (embedded) or a CTranslate2 dir")
    sha256: str | None = None
    compute_type: str = "int8"
    beam_size: int = Field(1, ge=1)
    cpu_threads: int = Field(2, ge=0)
    workers: int = Field(
        1,
        ge=1,
        description="whisper on a CPU: model calls run at once (CTranslate2 workers, cpu_threads // workers "
        "threads each); not in the fingerprint, it changes no transcript",
    )
    word_timestamps: bool = True
    timestamp_tokens: bool = Field(
        False, description="whisper: decode with timestamp tokens (keeps going across pauses in packed windows)"
    )
    encode_pad_s: float | None = Field(
        None,
        ge=0,
        le=30,
        description="whisper: encode each window only up to its audio's end plus this much silence "
        "(cheaper for windows that are not full); null: always the whole 30 s, as Whisper was trained",
    )


class VocabularyConfig(Model):
    """Word boosting: one job-level list of terms (products, people, places, jargon) that every ASR
    backend honours through its own mechanism (pipeline/vocabulary.py). Read once, on the driver."""

    terms: list[str] = Field([], description="terms for every language, e.g. [ComfyUI, Kubernetes]")
    file: str | None = Field(
        None,
        description="local path or fsspec/S3 URI: one term per line, optional weight after a tab "
        "(or after a space, written with a decimal point: 'ComfyUI 2.0'); '#' starts a comment",
    )
    storage: StorageOptions = StorageOptions()
    per_language: dict[str, list[str]] = Field({}, description="extra terms per ISO 639-1 language")
    boost: float = Field(
        1.0,
        gt=0,
        le=10,
        description="NeMo: boosting_tree_alpha (shallow-fusion weight of the phrase-boosting tree); a term's "
        "weight scales its per-token context score",
    )
    max_prompt_tokens: int = Field(
        40,
        ge=1,
        le=200,  # the bound bench/vocabulary.py measures (README "Vocabulary")
        description="Whisper: most tokens of terms in the decoder prompt (highest weights first; whole terms "
        "only), so a long list cannot crowd out the context (faster-whisper's own bound is 223)",
    )
    near_miss: float = Field(
        0.0,
        ge=0,
        le=1,
        description="whisper: every window is decoded without the terms, and again with them in the prompt where "
        "its text holds something this close to a term (normalised Levenshtein similarity of letters or sound); "
        "0: every window (the default: a higher value saves CPU but misses terms, README 'Vocabulary')",
    )
    max_word_loss: float = Field(
        0.2,
        ge=0,
        le=1,
        description="the guard: a decoding with the vocabulary that has fewer words than (1 - this) x the same "
        "audio's decoding without it, or that ends mid-word, is dropped for the plain one (counted in the report); "
        "1: off",
    )
    # {language or "*": [(term, weight)]}: set once on the driver by pipeline.vocabulary.resolve and
    # pickled with the config into the actors, so they never read the file (or S3) again.
    _resolved: dict[str, list[tuple[str, float]]] | None = PrivateAttr(None)


class PunctuationConfig(Model):
    backend: Literal["native", "none"] = Field("native", description="native: the ASR model's own punctuation")


class ItnConfig(Model):
    """Inverse text normalisation ("twenty three" -> "23"); needs the `itn` extra (nemo_text_processing)."""

    enabled: bool = False


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
    # audio and second-opinion rules (pipeline/audio_quality.py); None: no rule. Off by default: fitted on
    # the corpus and its degraded copies, they met the target on held-out folds no more often than
    # `min_confidence` alone (README "Pseudo-label quality"); they are there to filter on, e.g. for TTS.
    min_snr_db: float | None = Field(None, description="reject low_snr: speech vs the recording's non-speech, dB")
    min_bandwidth_hz: float | None = Field(None, ge=0, description="reject narrowband: ~3,600 for telephone audio")
    max_clipped_share: float | None = Field(None, ge=0, le=1, description="reject clipped: share of samples >= 0.98 FS")
    min_level_dbfs: float | None = Field(None, le=0, description="reject too_quiet: RMS level, dBFS")
    min_mos: float | None = Field(
        None, ge=1, le=5, description="reject low_mos: DNSMOS overall (needs audio_quality.mos)"
    )
    min_word_confidence: float | None = Field(
        None, ge=0, le=1, description="reject unsure_word: least word probability"
    )
    max_low_word_share: float | None = Field(None, ge=0, le=1, description="reject unsure_words: share of words < 0.5")
    min_avg_logprob: float | None = Field(None, le=0, description="reject low_avg_logprob: the decoder's mean log-prob")


class QualityConfig(QualityRules):
    per_language: dict[str, dict[str, Any]] = Field(
        {},
        description="ISO 639-1 code -> thresholds that replace the ones above for that language. None by default: "
        "fitted per language on held-out folds they did worse than the global ones (README)",
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


class SegmentStageConfig(Model):
    """The segment stage (actor, pipeline/stages/segment.py): pooled, bucketed, packed LID -> ASR ->
    punctuation -> ITN -> quality."""

    resources: Resources = Resources(num_cpus=1.0, pool_size=1)
    simulated_rtfx: float = Field(
        1000.0,
        gt=0,
        description="benchmarks and tests only, not a user setting: the pace of this stage's `backend: simulated` "
        "models (pipeline/backends/simulated.py), which compute nothing and hold each call for its padded "
        "seconds / this; not in the fingerprint",
    )
    windows_at_once: int = Field(
        1,
        ge=1,
        description="pooling windows (or pieces of a long recording) each actor works on at once: with 2, the "
        "next window's model calls start while this one's last call and retries run; the model calls of all "
        "of them still go through the backend's own limit (asr.workers calls at once, else one). Not in the "
        "fingerprint: it changes no transcript",
    )
    batching: BatchingConfig = BatchingConfig()
    packing: PackingConfig = PackingConfig()
    lid: LidConfig = LidConfig()
    asr: AsrConfig = AsrConfig()
    vocabulary: VocabularyConfig = VocabularyConfig()
    punctuation: PunctuationConfig = PunctuationConfig()
    itn: ItnConfig = ItnConfig()
    quality: QualityConfig = QualityConfig()
