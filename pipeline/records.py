"""The data model every stage speaks, and its Arrow schemas.

Like lhotse's `SupervisionSegment`, records are flat and explicit; each stage fills in its own fields
(VAD -> spans, diarization -> `speaker`, LID -> `language`, ASR -> `text`/`words`). All times are
seconds on the ORIGINAL recording's timeline (never post-VAD, never sample indices), so a row can be
cut out of the source file with nothing but `uri`, `start` and `end`.

The Parquet schemas below are the output contract (see README "Output layout"): native Arrow types,
nested `words` as list<struct>, no pickled Python objects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

@dataclass(frozen=True)
class InputFile:
    """One object found by discovery: where it is and how to tell whether it changed."""

    uri: str
    size: int
    etag: str | None = None
    mtime: float | None = None
    # Seconds if a manifest said so; else None (the planner then orders by size, a proxy for duration).
    duration_hint: float | None = None
    # Free-form fields a manifest line carried (e.g. reference `text`), kept for exports.
    extra: dict[str, Any] = field(default_factory=dict)
    # Set when discovery refuses the entry (outside the input's containment, not a regular file,
    # unreachable): it becomes a recordings row with status "error" and this message, never a read.
    error: str | None = None

    @property
    def recording_id(self) -> str:
        return recording_id_for(self.uri)


def recording_id_for(uri: str) -> str:
    """Stable id of a recording: a short hash of its URI (URIs may hold spaces, non-ASCII, slashes)."""
    import hashlib

    return hashlib.sha1(uri.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Span:
    """A stretch of the original recording, in seconds; `speaker` is set once diarization ran."""

    start: float
    end: float
    speaker: str | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Word:
    word: str
    start: float  # seconds: relative to the clip in an AsrResult, original timeline in the output
    end: float
    confidence: float
    speaker: str | None = None  # given after recognition, by overlap with the speaker turns


@dataclass
class AsrResult:
    """What an ASR backend returns for one clip (times relative to the clip start, in seconds)."""

    text: str
    words: list[Word]
    confidence: float
    language: str | None = None
    language_prob: float | None = None
    # Signals the quality stage keeps (None where a backend cannot tell).
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LanguageSwitch:
    """What an ASR backend returns instead of an `AsrResult` for a packed window whose segments turn
    out to speak different languages (Whisper decodes one language per window). Nothing was
    transcribed; `languages` holds (language, probability) per packed part, and the caller cuts the
    window where the language changes and sends the pieces again."""

    languages: list[tuple[str, float]]


#: Languages written without spaces between words (Whisper's own list): text joins words with no
#: space, and text signals count characters instead of words.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


WORD_TYPE = pa.struct(
    [
        ("word", pa.string()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("confidence", pa.float64()),
        ("speaker", pa.string()),
    ]
)

#: One utterance, as nested in the segment stage's per-recording rows.
SEGMENT_TYPE = pa.struct(
    [
        ("segment_index", pa.int32()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("duration", pa.float64()),
        ("speaker", pa.string()),
        ("language", pa.string()),
        ("language_prob", pa.float64()),
        ("text", pa.string()),
        ("words", pa.list_(WORD_TYPE)),
        ("confidence", pa.float64()),
        ("avg_logprob", pa.float64()),
        ("no_speech_prob", pa.float64()),
        ("compression_ratio", pa.float64()),
        ("chars_per_second", pa.float64()),
        # text-derived quality signals (pipeline/stages/quality.py text_signals)
        ("repetition_score", pa.float64()),  # share of repeated word 2/3-grams
        ("unique_word_ratio", pa.float64()),
        ("longest_word", pa.int32()),  # characters
        ("filler_phrase", pa.bool_()),  # a known hallucination ("Thank you.", subtitle credits)
        ("language_agreement", pa.bool_()),  # separate LID == ASR language (None: no separate LID)
        ("accepted", pa.bool_()),
        ("reject_reasons", pa.list_(pa.string())),
    ]
)

#: The `segments` table: the utterance fields, flat, keyed by recording.
SEGMENTS_SCHEMA = pa.schema(
    [("recording_id", pa.string()), ("uri", pa.string())]
    + [SEGMENT_TYPE.field(i) for i in range(SEGMENT_TYPE.num_fields)]
    + [("fingerprint", pa.string())]
)

RECORDINGS_SCHEMA = pa.schema(
    [
        ("recording_id", pa.string()),
        ("uri", pa.string()),
        ("size", pa.int64()),
        ("etag", pa.string()),
        ("duration", pa.float64()),
        ("source_sample_rate", pa.int32()),
        ("source_channels", pa.int32()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("language", pa.string()),
        ("num_segments", pa.int32()),
        ("num_speakers", pa.int32()),
        ("speech_seconds", pa.float64()),
        ("vocabulary_hits", pa.int32()),  # segments holding a vocabulary term (None: the job had no vocabulary)
        ("fingerprint", pa.string()),
    ]
)
