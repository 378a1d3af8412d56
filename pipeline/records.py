"""The data model every stage speaks, and its Arrow schemas.

Like lhotse's `SupervisionSegment`, records are flat and explicit; each stage fills in its own fields
(VAD -> spans, diarization -> `speaker`, LID -> `language`, ASR -> `text`/`words`). All times are
seconds on the ORIGINAL recording's timeline (never post-VAD, never sample indices), so a row can be
cut out of the source file with nothing but `uri`, `start` and `end`.

Every Arrow schema lives here, in flow order (discovery -> decode -> recording stage -> segment
stage -> output tables), each built from the one before, so no stage imports another to learn what
it receives. The Parquet schemas are the output contract (see README "Output layout"): native Arrow
types, nested `words` as list<struct>, no pickled Python objects. Audio travels between stages as
float32 bytes in a `large_binary` column (`audio_column` / `samples_at`, no copies).
"""

from __future__ import annotations

import hashlib
import json
import resource
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import pyarrow as pa

#: The one sample rate of the pipeline: decode resamples everything to it, every model reads it.
SAMPLE_RATE = 16000


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


@dataclass(frozen=True)
class Overlap:
    """Overlapped speech: a stretch of the recording where two or more speakers talk at once, and
    who. Only backends that see per-speaker activity can tell (Sortformer, channels); the others
    report no overlaps at all (null), never an empty "none found"."""

    start: float
    end: float
    speakers: tuple[str, ...]

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Word:
    """A recognised word. Its times are seconds relative to whatever holds it: the clip in an
    `AsrResult`, the segment in a `Segment` (the output writes them on the recording's timeline)."""

    word: str
    start: float
    end: float
    confidence: float
    speaker: str | None = None  # given after recognition, by overlap with the speaker turns
    # spoken while another speaker talks (at least half the word in overlapped speech); None where
    # the diarization backend cannot tell (see `Overlap`)
    overlap: bool | None = None

    def shifted(self, offset: float, lo: float = float("-inf"), hi: float = float("inf")) -> "Word":
        """The word moved by `offset` seconds and clamped to [lo, hi] (as lhotse's `with_offset`):
        the one place word times change time base."""
        start = round(min(max(self.start + offset, lo), hi), 3)
        return replace(self, start=start, end=round(min(max(self.end + offset, start), hi), 3))


@dataclass
class AsrResult:
    """What an ASR backend returns for one clip: word times are seconds relative to the clip start."""

    text: str
    words: list[Word]
    confidence: float
    language: str | None = None
    language_prob: float | None = None
    # Signals the quality stage keeps (None where a backend cannot tell).
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    # The vocabulary's guard fired: the decoding with the terms lost words, this is the one without.
    vocabulary_guarded: bool = False

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
    """This process's peak resident memory, in MB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own memory. Not
    ru_maxrss: the kernel carries that across fork + exec, so a process started by a big parent (a
    benchmark that holds the S3 server, a test runner) reports the parent's size instead of its own."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux (bytes on macOS)


#: The audio signals of an utterance (pipeline/audio_quality.py): the recording stage measures them into
#: its span, the segment carries them on. Null where not computed (older outputs, `audio_quality.enabled`
#: off, `mos` off).
AUDIO_SIGNAL_FIELDS = ("snr_db", "bandwidth_hz", "clipped_share", "level_dbfs", "mos")
#: Signals of the words' probabilities (pipeline/audio_quality.py `word_signals`).
WORD_SIGNAL_FIELDS = ("min_word_confidence", "low_word_share")

WORD_TYPE = pa.struct(
    [
        ("word", pa.string()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("confidence", pa.float64()),
        ("speaker", pa.string()),
        ("overlap", pa.bool_()),
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
        ("overlap_seconds", pa.float64()),  # of the segment in overlapped speech (null: the backend cannot tell)
        # the audio's own quality and the words' probabilities (pipeline/audio_quality.py); null when not computed
        *[(name, pa.float64()) for name in AUDIO_SIGNAL_FIELDS + WORD_SIGNAL_FIELDS],
    ]
)


@dataclass
class Segment:
    """One utterance as the segment stage writes it (a `SEGMENT_TYPE` struct): start, end and word
    times on the recording's timeline. `to_row` is the one place it becomes an Arrow row."""

    segment_index: int
    start: float
    end: float
    speaker: str | None
    language: str | None
    language_prob: float | None
    text: str
    words: list[Word]
    confidence: float
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    language_agreement: bool | None = None  # separate LID == ASR language (None: no separate LID)
    signals: dict[str, Any] = field(default_factory=dict)  # stages/quality.py text_signals
    accepted: bool = True
    reject_reasons: list[str] = field(default_factory=list)
    overlap_seconds: float | None = None  # of [start, end] in overlapped speech (None: cannot tell)

    @property
    def duration(self) -> float:
        return round(self.end - self.start, 3)

    def to_row(self) -> dict[str, Any]:
        d = self.duration
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("signals", "words")}
        row.update(dict.fromkeys(AUDIO_SIGNAL_FIELDS + WORD_SIGNAL_FIELDS))  # null unless `signals` has them
        row.update(
            self.signals,
            duration=d,
            words=[asdict(w) for w in self.words],
            chars_per_second=round(len(self.text) / d, 3) if d > 0 else None,
        )
        return {name: row[name] for name in SEGMENT_TYPE.names}  # KeyError: the struct and the record drifted


# -- what travels between stages, in flow order ------------------------------------------------------

#: A discovery row, into the decode stage (`refused`: why discovery refused it, else null).
INPUT_SCHEMA = pa.schema(
    [
        ("recording_id", pa.string()),
        ("uri", pa.string()),
        ("size", pa.int64()),
        ("etag", pa.string()),
        ("mtime", pa.float64()),
        ("refused", pa.string()),
    ]
)

#: The listing as the driver keeps it (`pipeline.discover.discover_table`): INPUT_SCHEMA plus what
#: only the driver needs (the duration hint that orders the work, a manifest line's other fields as
#: JSON). One Arrow row costs ~100 bytes where an `InputFile` costs ~1 KB: a million-file listing fits.
LISTED_SCHEMA = INPUT_SCHEMA.append(pa.field("duration_hint", pa.float64())).append(pa.field("extra", pa.string()))


def input_table(files) -> pa.Table:
    """InputFile objects (any iterable; e.g. one page of a listing) -> a LISTED_SCHEMA table. A table
    is returned as it is, so callers accept either form."""
    if isinstance(files, pa.Table):
        return files
    files = list(files)
    cols = {
        "recording_id": [f.recording_id for f in files],
        "uri": [f.uri for f in files],
        "size": [f.size for f in files],
        "etag": [f.etag for f in files],
        "mtime": [f.mtime for f in files],
        "refused": [f.error for f in files],
        "duration_hint": [f.duration_hint for f in files],
        "extra": [json.dumps(f.extra, sort_keys=True, default=str) if f.extra else None for f in files],
    }
    return pa.Table.from_pydict(cols, schema=LISTED_SCHEMA)


def input_files(table: pa.Table) -> list[InputFile]:
    """A LISTED_SCHEMA table -> InputFile objects (for small listings: tests, the Python API)."""
    return [
        InputFile(
            uri=r["uri"],
            size=r["size"],
            etag=r["etag"],
            mtime=r["mtime"],
            duration_hint=r["duration_hint"],
            extra=json.loads(r["extra"]) if r["extra"] else {},
            error=r["refused"],
        )
        for r in table.to_pylist()
    ]


#: Decode stage -> recording stage. `audio` is the recording (or its piece), float32 little-endian bytes;
#: `channel_energy` (only for diarization.backend=channels, else null) the mean square of every 10 ms
#: per source channel, float32 bytes of shape (source_channels, frames).
DECODED_SCHEMA = pa.schema(
    [f for f in INPUT_SCHEMA if f.name != "refused"]
    + [
        ("duration", pa.float64()),
        ("source_sample_rate", pa.int32()),
        ("source_channels", pa.int32()),
        ("status", pa.string()),
        ("error", pa.string()),
        # A long recording travels as pieces (pipeline/pieces.py): `piece` is k (null: the whole
        # recording in one row), `piece_start` where the row's audio starts (s), [`core_start`,
        # `core_end`) the stretch this piece answers for, `last_piece` set on the final one.
        ("piece", pa.int32()),
        ("piece_start", pa.float64()),
        ("core_start", pa.float64()),
        ("core_end", pa.float64()),
        ("last_piece", pa.bool_()),
        ("decode_wall_seconds", pa.float64()),  # download + decode time of this file
        ("decode_peak_rss_mb", pa.float64()),  # the decode worker's peak RSS after this batch
        ("channel_energy", pa.large_binary()),
        ("audio", pa.large_binary()),
    ]
)

#: One utterance cut by the recording stage: where it lies in the recording and in the row's speech audio.
SPAN_TYPE = pa.struct(
    [
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("speaker", pa.string()),
        ("audio_offset", pa.int64()),  # samples: where this utterance starts in the row's speech audio
        ("num_samples", pa.int64()),
        # seconds (the recording's timeline) where VAD hears a pause inside the utterance; null unless
        # the segment stage fills windows (`packing.min_piece_s` > 0: pipeline/packing.py)
        ("pauses", pa.list_(pa.float64())),
        # the utterance's audio quality (pipeline/audio_quality.py), measured here where the recording's
        # non-speech is still at hand; null when `recording_stage.audio_quality.enabled` is off
        *[(name, pa.float64()) for name in AUDIO_SIGNAL_FIELDS],
    ]
)

TURN_TYPE = pa.struct([("start", pa.float64()), ("end", pa.float64()), ("speaker", pa.string())])
VOICE_TYPE = pa.struct(
    [
        ("speaker", pa.string()),
        ("seconds", pa.float64()),
        ("threshold", pa.float64()),
        ("embedding", pa.list_(pa.float32())),
    ]
)
OVERLAP_TYPE = pa.struct([("start", pa.float64()), ("end", pa.float64()), ("speakers", pa.list_(pa.string()))])

#: Recording stage -> segment stage. `audio` now holds the speech only: the spans' samples, back to back.
SEGMENTED_SCHEMA = pa.schema(
    [f for f in DECODED_SCHEMA if f.name not in ("audio", "channel_energy")]  # the recording stage used it
    + [
        ("spans", pa.list_(SPAN_TYPE)),
        # diarization's speaker turns (seconds, original timeline); the segment stage gives them to
        # the recognised words. Null without diarization.
        ("turns", pa.list_(TURN_TYPE)),
        # a piece of a long recording (pipeline/pieces.py): each of its speakers' mean voice embedding,
        # which the sink matches across pieces so that labels hold for the whole recording
        ("voices", pa.list_(VOICE_TYPE)),
        # overlapped speech (two or more speakers at once); null where the backend cannot tell
        ("overlaps", pa.list_(OVERLAP_TYPE)),
        ("num_speakers", pa.int32()),
        ("overlap_seconds", pa.float64()),  # total of `overlaps` (null: cannot tell)
        ("speech_seconds", pa.float64()),
        ("recording_wall_seconds", pa.float64()),  # VAD + diarization time spent on this recording
        ("recording_peak_rss_mb", pa.float64()),  # the actor's peak RSS when it finished this batch
        # provenance: "role=model_id; ..." of every backend that made the row (the recording stage
        # writes vad/diarization, the segment stage appends lid/asr)
        ("models", pa.string()),
        ("audio", pa.large_binary()),
    ]
)

#: Segment stage -> sink: one row per recording, its utterances nested; the audio is dropped.
TRANSCRIBED_SCHEMA = pa.schema(
    [f for f in SEGMENTED_SCHEMA if f.name not in ("audio", "spans", "turns", "overlaps")]
    + [
        ("language", pa.string()),
        ("segments", pa.list_(SEGMENT_TYPE)),
        ("punctuated", pa.bool_()),
        ("asr_audio_seconds", pa.float64()),
        ("asr_padded_seconds", pa.float64()),
        ("asr_wall_seconds", pa.float64()),
        ("segment_peak_rss_mb", pa.float64()),
        ("vocabulary_hits", pa.int32()),  # segments holding a vocabulary term (None: no vocabulary)
        ("vocabulary_warning", pa.string()),  # why the ASR backend could not honour the vocabulary
        ("vocabulary_guarded", pa.int32()),  # segments whose decoding with the vocabulary lost words (plain kept)
    ]
)


def rows_to_table(rows: list[dict], schema: pa.Schema, audio: list | None = None) -> pa.Table:
    """Python rows (+ float32 buffers for an `audio` field) -> a table of `schema`."""
    meta = pa.Table.from_pylist(rows, schema=pa.schema([f for f in schema if f.name != "audio"]))
    return meta if audio is None else meta.append_column(schema.field("audio"), audio_column(audio))


def binary_value(buf) -> pa.LargeBinaryArray:
    """A one-row large_binary array whose value IS `buf` (a float32 buffer), not a copy of it."""
    if buf is None:
        return pa.array([None], pa.large_binary())
    data = pa.py_buffer(buf)
    offsets = pa.py_buffer(np.array([0, data.size], dtype=np.int64))  # bytes, whatever `buf` holds
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, data])


def audio_column(buffers: list) -> pa.ChunkedArray:
    """float32 sample buffers (or None) -> an `audio` column that shares their memory."""
    chunks = [binary_value(b) for b in buffers] or [pa.array([], pa.large_binary())]
    return pa.chunked_array(chunks, pa.large_binary())


def samples_at(column: pa.ChunkedArray, i: int) -> np.ndarray | None:
    """Row i of an `audio` column as float32 samples, without copying (None for a null)."""
    value = column[i]
    return np.frombuffer(value.as_buffer(), dtype="<f4") if value.is_valid else None


# -- the output tables ------------------------------------------------------------------------------

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
        ("models", pa.string()),  # provenance: the backends' model_id()s that made this row
        ("fingerprint", pa.string()),
        ("overlap_seconds", pa.float64()),  # overlapped speech (null: no diarization, or a backend that cannot tell)
    ]
)
