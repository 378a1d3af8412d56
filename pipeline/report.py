"""The run report: what was done, what failed and why, and what it cost. Saved as report.json."""

from __future__ import annotations

from typing import Any, Sequence

from pydantic import BaseModel

from pipeline.config import JobConfig


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


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
    slowest: list[dict[str, Any]] = []  # the recordings that took the most stage time
    warnings: list[str]
    vocabulary_terms: int = 0  # terms of the job's vocabulary (all languages)
    vocabulary_segments: int = 0  # segments whose text holds a vocabulary term (case-insensitive, whole words)

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
            + (": " + ", ".join(f"{k} {v}" for k, v in sorted(self.reject_reasons.items(), key=lambda kv: -kv[1]))
               if self.reject_reasons else ""),
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
            lines.append(f"  vocabulary: {self.vocabulary_terms} terms; {self.vocabulary_segments} segments contain one")
        from pipeline.text import safe  # names and messages come from inputs: escaped, credentials redacted

        for e in self.errors[:10]:
            lines.append(f"  error: {safe(e['uri'])}: {safe(e['error'])}")
        if len(self.errors) > 10:
            lines.append(f"  ... and {len(self.errors) - 10} more errors (see report.json)")
        lines += [f"  warning: {safe(w)}" for w in self.warnings]
        lines.append(f"  output: {safe(self.output_uri)}")
        return "\n".join(lines)


def build_report(
    cfg: JobConfig,
    *,
    run_id: str,
    fingerprint: str,
    discovered: int,
    plan: dict[str, int],
    summaries: list[dict],
    wall_seconds: float,
    driver_peak_rss_mb: float,
    run_warnings: Sequence[str] = (),
) -> RunReport:
    """The run's report from the actors' summaries; `run_warnings` are the driver's own (settings
    that cost speed, found while planning), listed first."""
    def total(key: str) -> float:
        return float(sum(s.get(key, 0.0) for s in summaries))

    def peak(key: str) -> float:
        return round(max((s.get(key, 0.0) for s in summaries), default=0.0), 1)

    status = {k: sum(s.get("status", {}).get(k, 0) for s in summaries) for k in ("ok", "no_speech", "error")}
    audio, asr_audio, padded, asr_wall = total("audio_seconds"), total("asr_audio_seconds"), total("asr_padded_seconds"), total("asr_wall_seconds")
    warnings = list(run_warnings)
    unpunct = int(total("unpunctuated"))
    if unpunct:
        warnings.append(
            f"{unpunct} recordings are unpunctuated: ASR model {cfg.segment_stage.asr.model!r} emits no punctuation and NeMo 3.0 "
            "has no punctuation model (choose a *_pc / Parakeet v2+ model for punctuated text)"
        )
    from pipeline.vocabulary import all_terms

    # said once however many actors and recordings met it
    warnings += sorted({w for s in summaries for w in s.get("vocabulary_warnings", [])})
    return RunReport(
        vocabulary_terms=len(all_terms(cfg.segment_stage.vocabulary)),
        vocabulary_segments=int(total("vocabulary_hits")),
        run_id=run_id,
        fingerprint=fingerprint,
        input_uri=cfg.input.uri,
        output_uri=cfg.output.uri,
        models=sorted({m for s in summaries for m in s.get("models", [])}),
        discovered=discovered,
        new=plan.get("new", 0),
        changed=plan.get("changed", 0),
        skipped=plan.get("skipped", 0),
        retried_failed=plan.get("retry_failed", 0),
        errors=[e for s in summaries for e in s.get("errors", [])],
        audio_seconds=round(audio, 3),
        wall_seconds=round(wall_seconds, 3),
        real_time_factor=round(audio / wall_seconds, 3) if wall_seconds > 0 else 0.0,
        asr_audio_seconds=round(asr_audio, 3),
        asr_padded_seconds=round(padded, 3),
        padding_ratio=round(max(0.0, 1 - asr_audio / padded), 4) if padded > 0 else 0.0,
        asr_wall_seconds=round(asr_wall, 3),
        asr_real_time_factor=round(asr_audio / asr_wall, 3) if asr_wall > 0 else 0.0,
        decode_wall_seconds=round(total("decode_wall_seconds"), 3),
        decode_real_time_factor=round(audio / total("decode_wall_seconds"), 3) if total("decode_wall_seconds") > 0 else 0.0,
        recording_stage_wall_seconds=round(total("recording_wall_seconds"), 3),
        recording_stage_real_time_factor=round(audio / total("recording_wall_seconds"), 3) if total("recording_wall_seconds") > 0 else 0.0,
        driver_peak_rss_mb=round(driver_peak_rss_mb, 1),
        decode_peak_rss_mb=peak("decode_peak_rss_mb"),
        recording_stage_peak_rss_mb=peak("recording_peak_rss_mb"),
        segment_stage_peak_rss_mb=peak("segment_peak_rss_mb"),
        warnings=warnings,
        accepted_segments=int(total("accepted_segments")),
        accepted_seconds=round(total("accepted_seconds"), 3),
        rejected_segments=int(total("rejected_segments")),
        rejected_seconds=round(total("rejected_seconds"), 3),
        reject_reasons=_add_up(s.get("reject_reasons", {}) for s in summaries),
        language_seconds={k: round(v, 3) for k, v in _add_up(s.get("language_seconds", {}) for s in summaries).items()},
        speakers_per_recording=_add_up(s.get("speakers_per_recording", {}) for s in summaries),
        overlap_seconds=round(total("overlap_seconds"), 3),
        overlap_recordings=int(total("overlap_recordings")),
        confidence_histogram=[int(sum(x)) for x in zip(*(s["confidence_histogram"] for s in summaries
                                                         if s.get("confidence_histogram")))] or [0] * 10,
        slowest=sorted((r for s in summaries for r in s.get("slowest", [])), key=lambda r: -r["seconds"])[:10],
        **status,
    )


def _add_up(dicts) -> dict:
    """Sum dicts of counts key by key (the write tasks' summaries -> the run's)."""
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out
