"""The run report: what was done, what failed and why, and what it cost. Saved as report.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from pipeline.audio_quality import histograms_of
from pipeline.config import JobConfig
from pipeline.records import peak_rss_mb
from pipeline.text import safe  # names and messages come from inputs: escaped, credentials redacted
from pipeline.vocabulary import all_terms

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
#: A recording's outcome, as the `recordings` table's `status` column holds it.
STATUSES = ("ok", "no_speech", "error")
#: The report lists this many of the recordings that took the most stage time.
SLOWEST = 10


class OutputTotals(BaseModel):
    """What the whole output holds after a run (every committed recording, whichever run wrote it), so
    that a rerun that did little or nothing still reports the output's content (report.html)."""

    recordings: int = 0
    ok: int = 0
    no_speech: int = 0
    error: int = 0
    audio_seconds: float = 0.0  # of every committed recording
    speakers: int = 0  # speakers found, summed over recordings (labels are per recording)
    speakers_per_recording: dict[str, int] = {}  # recordings by number of speakers found
    language_seconds: dict[str, float] = {}  # seconds of segments per language
    accepted_segments: int = 0
    rejected_segments: int = 0
    accepted_seconds: float = 0.0
    rejected_seconds: float = 0.0
    models: list[str] = []  # distinct `models` values of the committed recordings

    @property
    def accepted_share(self) -> float | None:
        """Share of segment audio the quality rules accept (None: no segments)."""
        total = self.accepted_seconds + self.rejected_seconds
        return self.accepted_seconds / total if total > 0 else None

    @classmethod
    def of(cls, recordings: pa.Table, segments: pa.Table) -> "OutputTotals":
        """From column-projected reads of the two tables (`TOTALS_COLUMNS`), with Arrow aggregations:
        no Python object per row, so a million-file output adds up in seconds."""
        status = _grouped(recordings, "status", "status", "count")
        per = _grouped(
            recordings.filter(pc.is_valid(recordings.column("num_speakers"))), "num_speakers", "num_speakers", "count"
        )
        length = pc.max_element_wise(pc.subtract(segments.column("end"), segments.column("start")), 0.0)
        seg = pa.table({"language": segments.column("language"), "accepted": segments.column("accepted"), "s": length})
        langs = _grouped(seg.filter(pc.is_valid(seg.column("language"))), "language", "s", "sum")
        seconds, count = _grouped(seg, "accepted", "s", "sum"), _grouped(seg, "accepted", "s", "count")
        models = pc.unique(recordings.column("models").drop_null()).to_pylist()
        return cls(
            recordings=recordings.num_rows,
            ok=status.get("ok", 0),
            no_speech=status.get("no_speech", 0),
            error=status.get("error", 0),
            audio_seconds=round(pc.sum(recordings.column("duration")).as_py() or 0.0, 3),
            speakers=pc.sum(recordings.column("num_speakers")).as_py() or 0,
            speakers_per_recording={str(k): v for k, v in sorted(per.items())},
            language_seconds={k: round(v, 3) for k, v in sorted(langs.items(), key=lambda kv: -kv[1])},
            accepted_segments=count.get(True, 0),
            rejected_segments=count.get(False, 0) + count.get(None, 0),
            accepted_seconds=round(seconds.get(True, 0.0), 3),
            rejected_seconds=round(seconds.get(False, 0.0) + seconds.get(None, 0.0), 3),
            models=sorted(models),
        )


#: The columns `OutputTotals.of` reads of each table.
TOTALS_COLUMNS = {
    "recordings": ["status", "duration", "num_speakers", "models"],
    "segments": ["start", "end", "language", "accepted"],
}


def _grouped(t: pa.Table, key: str, column: str, how: str) -> dict:
    """{key value: aggregate of `column`} (pyarrow's group_by; an empty table gives {})."""
    if not t.num_rows:
        return {}
    g = t.group_by(key).aggregate([(column, how)])
    return dict(zip(g.column(key).to_pylist(), g.column(f"{column}_{how}").to_pylist()))


class RunReport(BaseModel):
    run_id: str
    fingerprint: str
    input_uri: str
    output_uri: str
    models: list[str] = []  # provenance: the distinct `models` values of the rows this run wrote
    discovered: int
    new: int
    changed: int
    skipped: int
    retried_failed: int
    ok: int
    no_speech: int
    error: int
    errors: list[dict[str, Any]]
    audio_seconds: float
    wall_seconds: float
    real_time_factor: float  # audio seconds per wall second, end to end
    asr_audio_seconds: float
    asr_padded_seconds: float
    padding_ratio: float  # share of ASR compute spent on padding
    asr_wall_seconds: float
    asr_real_time_factor: float
    decode_wall_seconds: float  # download + decode, summed over tasks
    decode_real_time_factor: float
    recording_stage_wall_seconds: float  # VAD + diarization, summed over actors
    recording_stage_real_time_factor: float
    driver_peak_rss_mb: float
    decode_peak_rss_mb: float  # the largest decode worker
    recording_stage_peak_rss_mb: float  # the largest actor of the pool
    segment_stage_peak_rss_mb: float
    accepted_segments: int = 0  # segments the quality rules accept (pseudo-labels), and their seconds
    accepted_seconds: float = 0.0
    rejected_segments: int = 0
    rejected_seconds: float = 0.0
    reject_reasons: dict[str, int] = {}  # rejected segments by reason (one segment may have several)
    language_seconds: dict[str, float] = {}  # seconds of segments per language
    speakers_per_recording: dict[str, int] = {}  # recordings by number of speakers found
    overlap_seconds: float = 0.0  # overlapped speech found (only backends that can tell: Sortformer, channels)
    overlap_recordings: int = 0  # ... and the recordings that hold some
    confidence_histogram: list[int] = []  # segments by confidence, ten bins over [0, 1]
    audio_histograms: dict[str, list[int]] = {}  # "snr_db:accepted" -> counts (pipeline/audio_quality.py HISTOGRAMS)
    slowest: list[dict[str, Any]] = []  # the recordings that took the most stage time
    warnings: list[str]
    vocabulary_terms: int = 0  # terms of the job's vocabulary (all languages)
    vocabulary_segments: int = 0  # segments whose text holds a vocabulary term (case-insensitive, whole words)
    output_totals: OutputTotals | None = None  # the whole output after this run (None: not read)
    vocabulary_guarded: int = 0  # segments whose decoding with the vocabulary lost words: the one without was kept

    @property
    def processed(self) -> int:
        return self.ok + self.no_speech + self.error

    @property
    def failed_completely(self) -> bool:
        """There was work and none of it could be processed."""
        return self.processed > 0 and self.ok + self.no_speech == 0

    @property
    def exit_code(self) -> int:
        """What `scriptorium run` exits with, so a scheduler can alert on a partly failed night:
        0 everything done (or nothing to do), 3 done but some files failed (`error` rows),
        1 nothing could be processed. (2, a wrong config or input, is decided before a report exists.)"""
        if self.failed_completely:
            return EXIT_FAILED
        return EXIT_PARTIAL if self.error else EXIT_OK

    def summary(self) -> str:
        hours = self.audio_seconds / 3600
        lines = [
            f"run {self.run_id}: {self.discovered} files found; {self.new} new, {self.changed} changed, "
            f"{self.retried_failed} failed before (retried), {self.skipped} already done (skipped)",
            f"  ok {self.ok}  no speech {self.no_speech}  error {self.error}",
            f"  segments: {self.accepted_segments} accepted ({self.accepted_seconds / 3600:.3f} h), "
            f"{self.rejected_segments} rejected ({self.rejected_seconds / 3600:.3f} h)"
            + (
                ": " + ", ".join(f"{k} {v}" for k, v in sorted(self.reject_reasons.items(), key=lambda kv: -kv[1]))
                if self.reject_reasons
                else ""
            ),
            f"  audio {hours:.3f} h ({self.audio_seconds:.1f} s) in {self.wall_seconds:.1f} s wall: "
            f"{self.real_time_factor:.2f}x real time",
            f"  ASR: {self.asr_audio_seconds:.1f} s of speech, {self.asr_padded_seconds:.1f} s padded "
            f"(padding {self.padding_ratio:.1%}), {self.asr_real_time_factor:.2f}x real time",
            f"  decode {self.decode_real_time_factor:.1f}x, VAD+diarization {self.recording_stage_real_time_factor:.1f}x "
            f"real time; peak memory: driver {self.driver_peak_rss_mb:.0f} MB, decode {self.decode_peak_rss_mb:.0f} MB, "
            f"recording actor {self.recording_stage_peak_rss_mb:.0f} MB, segment actor {self.segment_stage_peak_rss_mb:.0f} MB",
        ]
        lines += [f"  models: {m}" for m in self.models]
        if self.vocabulary_terms:
            lines.append(
                f"  vocabulary: {self.vocabulary_terms} terms; {self.vocabulary_segments} segments contain one"
                + (
                    f"; {self.vocabulary_guarded} segments kept their decoding without it (it lost words)"
                    if self.vocabulary_guarded
                    else ""
                )
            )
        for e in self.errors[:10]:
            lines.append(f"  error: {safe(e['uri'])}: {safe(e['error'])}")
        if len(self.errors) > 10:
            lines.append(f"  ... and {len(self.errors) - 10} more errors (see report.json)")
        lines += [f"  warning: {safe(w)}" for w in self.warnings]
        lines.append(f"  output: {safe(self.output_uri)}")
        return "\n".join(lines)


@dataclass
class BlockSummary:
    """What one write task's block of recordings adds to the run report. Blocks add up with `+`
    (`sum(summaries, BlockSummary())`), as lhotse's `EpochDiagnostics` do: the report reads named
    fields, never string keys."""

    status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    audio_seconds: float = 0.0
    asr_audio_seconds: float = 0.0
    asr_padded_seconds: float = 0.0
    asr_wall_seconds: float = 0.0
    recording_wall_seconds: float = 0.0
    decode_wall_seconds: float = 0.0
    decode_peak_rss_mb: float = 0.0
    recording_peak_rss_mb: float = 0.0
    segment_peak_rss_mb: float = 0.0
    write_peak_rss_mb: float = 0.0
    unpunctuated: int = 0
    vocabulary_hits: int = 0
    vocabulary_warnings: list[str] = field(default_factory=list)
    vocabulary_guarded: int = 0
    models: list[str] = field(default_factory=list)  # provenance, for the report
    errors: list[dict[str, Any]] = field(default_factory=list)
    accepted_segments: int = 0
    rejected_segments: int = 0
    accepted_seconds: float = 0.0
    rejected_seconds: float = 0.0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    language_seconds: dict[str, float] = field(default_factory=dict)
    speakers_per_recording: dict[str, int] = field(default_factory=dict)
    overlap_seconds: float = 0.0
    overlap_recordings: int = 0
    confidence_histogram: list[int] = field(default_factory=lambda: [0] * 10)  # ten bins over [0, 1]
    audio_histograms: dict[str, list[int]] = field(default_factory=dict)  # audio_quality.histograms
    slowest: list[dict[str, Any]] = field(default_factory=list)  # at most ten, slowest first

    def __add__(self, other: "BlockSummary") -> "BlockSummary":
        return BlockSummary(
            status=_add_up([self.status, other.status]),
            audio_seconds=self.audio_seconds + other.audio_seconds,
            asr_audio_seconds=self.asr_audio_seconds + other.asr_audio_seconds,
            asr_padded_seconds=self.asr_padded_seconds + other.asr_padded_seconds,
            asr_wall_seconds=self.asr_wall_seconds + other.asr_wall_seconds,
            recording_wall_seconds=self.recording_wall_seconds + other.recording_wall_seconds,
            decode_wall_seconds=self.decode_wall_seconds + other.decode_wall_seconds,
            decode_peak_rss_mb=max(self.decode_peak_rss_mb, other.decode_peak_rss_mb),
            recording_peak_rss_mb=max(self.recording_peak_rss_mb, other.recording_peak_rss_mb),
            segment_peak_rss_mb=max(self.segment_peak_rss_mb, other.segment_peak_rss_mb),
            write_peak_rss_mb=max(self.write_peak_rss_mb, other.write_peak_rss_mb),
            unpunctuated=self.unpunctuated + other.unpunctuated,
            vocabulary_hits=self.vocabulary_hits + other.vocabulary_hits,
            vocabulary_warnings=sorted({*self.vocabulary_warnings, *other.vocabulary_warnings}),
            vocabulary_guarded=self.vocabulary_guarded + other.vocabulary_guarded,
            models=sorted({*self.models, *other.models}),
            errors=self.errors + other.errors,
            accepted_segments=self.accepted_segments + other.accepted_segments,
            rejected_segments=self.rejected_segments + other.rejected_segments,
            accepted_seconds=self.accepted_seconds + other.accepted_seconds,
            rejected_seconds=self.rejected_seconds + other.rejected_seconds,
            reject_reasons=_add_up([self.reject_reasons, other.reject_reasons]),
            language_seconds=_add_up([self.language_seconds, other.language_seconds]),
            speakers_per_recording=_add_up([self.speakers_per_recording, other.speakers_per_recording]),
            overlap_seconds=self.overlap_seconds + other.overlap_seconds,
            overlap_recordings=self.overlap_recordings + other.overlap_recordings,
            confidence_histogram=[a + b for a, b in zip(self.confidence_histogram, other.confidence_histogram)],
            audio_histograms={
                k: [a + b for a, b in zip(self.audio_histograms.get(k, [0] * len(v)), v)]
                for k, v in other.audio_histograms.items()
            }
            or self.audio_histograms,
            slowest=sorted(self.slowest + other.slowest, key=lambda r: -r["seconds"])[:SLOWEST],
        )

    @classmethod
    def of(cls, table: pa.Table) -> "BlockSummary":
        """The summary of a block of per-recording rows (nested segments), as the sink commits them."""
        cols = [
            "status",
            "duration",
            "asr_audio_seconds",
            "asr_padded_seconds",
            "asr_wall_seconds",
            "punctuated",
            "uri",
            "error",
            "recording_wall_seconds",
            "recording_peak_rss_mb",
            "segment_peak_rss_mb",
            "decode_wall_seconds",
            "decode_peak_rss_mb",
        ] + [
            c
            for c in ("vocabulary_hits", "vocabulary_warning", "vocabulary_guarded", "models")
            if c in table.column_names
        ]
        rows = table.select(cols).to_pylist()

        def total(key: str) -> float:
            return sum(r[key] or 0.0 for r in rows)

        def peak(key: str) -> float:
            return max((r[key] or 0.0 for r in rows), default=0.0)

        return cls(
            status={s: sum(1 for r in rows if r["status"] == s) for s in STATUSES},
            audio_seconds=total("duration"),
            asr_audio_seconds=total("asr_audio_seconds"),
            asr_padded_seconds=total("asr_padded_seconds"),
            asr_wall_seconds=total("asr_wall_seconds"),
            recording_wall_seconds=total("recording_wall_seconds"),
            decode_wall_seconds=total("decode_wall_seconds"),
            decode_peak_rss_mb=peak("decode_peak_rss_mb"),
            recording_peak_rss_mb=peak("recording_peak_rss_mb"),
            segment_peak_rss_mb=peak("segment_peak_rss_mb"),
            write_peak_rss_mb=peak_rss_mb(),
            unpunctuated=sum(1 for r in rows if r["punctuated"] is False),
            vocabulary_hits=sum(r.get("vocabulary_hits") or 0 for r in rows),
            vocabulary_warnings=sorted({r["vocabulary_warning"] for r in rows if r.get("vocabulary_warning")}),
            vocabulary_guarded=sum(r.get("vocabulary_guarded") or 0 for r in rows),
            models=sorted({r["models"] for r in rows if r.get("models")}),
            errors=[{"uri": r["uri"], "error": r["error"]} for r in rows if r["status"] == "error"],
            slowest=sorted(
                (
                    {
                        "uri": r["uri"],
                        "duration": r["duration"] or 0.0,
                        "seconds": (r["decode_wall_seconds"] or 0.0)
                        + (r["recording_wall_seconds"] or 0.0)
                        + (r["asr_wall_seconds"] or 0.0),
                    }
                    for r in rows
                ),
                key=lambda r: -r["seconds"],
            )[:SLOWEST],
            **_segment_counts(table),
            audio_histograms=histograms_of(table.column("segments")),
        )


def _segment_counts(table: pa.Table) -> dict[str, Any]:
    """What the report says about the segments: accepted/rejected counts and seconds, rejections by
    reason, languages, speakers per recording, overlap, a confidence histogram."""
    accepted = rejected = 0
    accepted_s = rejected_s = 0.0
    reasons: dict[str, int] = {}
    languages: dict[str, float] = {}
    confidence = [0] * 10
    speakers: dict[str, int] = {}
    overlap_s, overlap_files = 0.0, 0
    cols = ["segments", "num_speakers"] + [c for c in ("overlap_seconds",) if c in table.column_names]
    for row in table.select(cols).to_pylist():
        n = row["num_speakers"]
        if n is not None:
            speakers[str(n)] = speakers.get(str(n), 0) + 1
        if row.get("overlap_seconds"):  # null where the diarization backend cannot tell
            overlap_s, overlap_files = overlap_s + row["overlap_seconds"], overlap_files + 1
        for seg in row["segments"] or []:
            length = max(0.0, (seg["end"] or 0.0) - (seg["start"] or 0.0))
            if seg["accepted"]:
                accepted, accepted_s = accepted + 1, accepted_s + length
            else:
                rejected, rejected_s = rejected + 1, rejected_s + length
                for reason in seg["reject_reasons"] or []:
                    reasons[reason] = reasons.get(reason, 0) + 1
            if seg["language"]:
                languages[seg["language"]] = languages.get(seg["language"], 0.0) + length
            if seg["confidence"] is not None:
                confidence[min(9, max(0, int(seg["confidence"] * 10)))] += 1
    return {
        "accepted_segments": accepted,
        "rejected_segments": rejected,
        "accepted_seconds": accepted_s,
        "rejected_seconds": rejected_s,
        "reject_reasons": reasons,
        "language_seconds": languages,
        "speakers_per_recording": speakers,
        "overlap_seconds": overlap_s,
        "overlap_recordings": overlap_files,
        "confidence_histogram": confidence,
    }


def build_report(
    cfg: JobConfig,
    *,
    run_id: str,
    fingerprint: str,
    discovered: int,
    plan: dict[str, int],
    summary: BlockSummary,
    wall_seconds: float,
    driver_peak_rss_mb: float,
    run_warnings: Sequence[str] = (),
) -> RunReport:
    """The run's report from the write tasks' summaries added up; `run_warnings` are the driver's
    own (settings that cost speed, found while planning), listed first."""
    s = summary
    warnings = list(run_warnings)
    if s.unpunctuated:
        warnings.append(
            f"{s.unpunctuated} recordings are unpunctuated: ASR model {cfg.segment_stage.asr.model!r} emits no punctuation and NeMo 3.0 "
            "has no punctuation model (choose a *_pc / Parakeet v2+ model for punctuated text)"
        )
    warnings += s.vocabulary_warnings  # said once however many actors and recordings met it

    def rate(audio: float, wall: float) -> float:
        return round(audio / wall, 3) if wall > 0 else 0.0

    return RunReport(
        vocabulary_terms=len(all_terms(cfg.segment_stage.vocabulary)),
        vocabulary_segments=s.vocabulary_hits,
        vocabulary_guarded=s.vocabulary_guarded,
        run_id=run_id,
        fingerprint=fingerprint,
        input_uri=cfg.input.uri,
        output_uri=cfg.output.uri,
        models=s.models,
        discovered=discovered,
        new=plan.get("new", 0),
        changed=plan.get("changed", 0),
        skipped=plan.get("skipped", 0),
        retried_failed=plan.get("retry_failed", 0),
        errors=s.errors,
        audio_seconds=round(s.audio_seconds, 3),
        wall_seconds=round(wall_seconds, 3),
        real_time_factor=rate(s.audio_seconds, wall_seconds),
        asr_audio_seconds=round(s.asr_audio_seconds, 3),
        asr_padded_seconds=round(s.asr_padded_seconds, 3),
        padding_ratio=round(max(0.0, 1 - s.asr_audio_seconds / s.asr_padded_seconds), 4)
        if s.asr_padded_seconds > 0
        else 0.0,
        asr_wall_seconds=round(s.asr_wall_seconds, 3),
        asr_real_time_factor=rate(s.asr_audio_seconds, s.asr_wall_seconds),
        decode_wall_seconds=round(s.decode_wall_seconds, 3),
        decode_real_time_factor=rate(s.audio_seconds, s.decode_wall_seconds),
        recording_stage_wall_seconds=round(s.recording_wall_seconds, 3),
        recording_stage_real_time_factor=rate(s.audio_seconds, s.recording_wall_seconds),
        driver_peak_rss_mb=round(driver_peak_rss_mb, 1),
        decode_peak_rss_mb=round(s.decode_peak_rss_mb, 1),
        recording_stage_peak_rss_mb=round(s.recording_peak_rss_mb, 1),
        segment_stage_peak_rss_mb=round(s.segment_peak_rss_mb, 1),
        warnings=warnings,
        accepted_segments=s.accepted_segments,
        accepted_seconds=round(s.accepted_seconds, 3),
        rejected_segments=s.rejected_segments,
        rejected_seconds=round(s.rejected_seconds, 3),
        reject_reasons=s.reject_reasons,
        language_seconds={k: round(v, 3) for k, v in s.language_seconds.items()},
        speakers_per_recording=s.speakers_per_recording,
        overlap_seconds=round(s.overlap_seconds, 3),
        overlap_recordings=s.overlap_recordings,
        confidence_histogram=s.confidence_histogram,
        audio_histograms=s.audio_histograms,
        slowest=s.slowest,
        **{k: s.status.get(k, 0) for k in STATUSES},
    )


def _add_up(dicts) -> dict:
    """Sum dicts of counts key by key."""
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out
