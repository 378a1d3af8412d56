"""Recording stage (actor): VAD -> speech regions; diarization -> speaker turns; cut into utterances.

One row per recording (or per piece of a long one, pipeline/pieces.py) goes in and one comes out, its
utterances nested in `spans` (seconds, the recording's timeline). Only the SPEECH travels on to the segment stage: the `audio` column leaves holding the
utterances' samples back to back (each span knows its `audio_offset` and `num_samples`), so silence
and music never cross the object store twice, and a recording without speech leaves with none.
The input audio is read in place from Arrow (no copy): a row costs its samples once, and a long
recording arrives in pieces of `decode.piece_s`.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa

from pipeline.audio_quality import span_signals
from pipeline.backends.base import DiarizationBackend, VadBackend
from pipeline.backends.registry import make_diarizer, make_vad
from pipeline.config import JobConfig, RecordingStageConfig
from pipeline.pieces import clip_to_core
from pipeline.records import SAMPLE_RATE, SEGMENTED_SCHEMA, Span, peak_rss_mb, rows_to_table, samples_at
from pipeline.timeline import outside, utterances

log = logging.getLogger(__name__)

#: The most `at_level` raises a recording (dB): a file of near-silence is not made loud.
MAX_VAD_GAIN_DB = 30.0


def at_level(audio: np.ndarray, level_dbfs: float | None, frame_s: float = 0.1) -> np.ndarray:
    """`audio` scaled so that its loudest 5% of `frame_s` frames lie at `level_dbfs` (raised by at most
    `MAX_VAD_GAIN_DB`; None: unchanged). Why: Silero's speech probability follows the input level, and
    a room microphone 2-4 m from a talker hears speech 10-30 dB below a headset; at -14 dBFS the VAD
    misses 4% of the far-field rooms' speech instead of 13%, and still hears nothing in the corpus's
    noise-only clip (bench/meetings.py --rooms; README "Speakers")."""
    n = int(frame_s * SAMPLE_RATE)
    if level_dbfs is None or len(audio) < n:
        return audio
    power = np.square(audio[: len(audio) // n * n].astype(np.float64)).reshape(-1, n).mean(axis=1)
    loud = float(np.percentile(power, 95))
    if loud <= 0:
        return audio
    gain_db = min(level_dbfs - 10 * np.log10(loud), MAX_VAD_GAIN_DB)
    return np.clip(audio * np.float32(10 ** (gain_db / 20)), -1.0, 1.0)


class RecordingStage:
    name = "recording"

    def __init__(
        self,
        cfg: RecordingStageConfig,
        vad: VadBackend | None,
        diarizer: DiarizationBackend | None,
        pauses: bool = False,
        diarization_vad: VadBackend | None = None,
    ):
        """`pauses`: also pass on where VAD hears pauses inside each utterance (the segment stage cuts
        there to fill its windows: `segment_stage.packing.min_piece_s` > 0). `diarization_vad`: the
        more sensitive pass of `diarization.vad_threshold`, whose regions the diarizer also hears."""
        self.cfg, self.vad, self.diarizer, self.pauses = cfg, vad, diarizer, pauses
        self.diarization_vad = diarization_vad
        # provenance of every row this stage makes; the segment stage appends its own (lid, asr)
        roles = {"vad": vad.model_id() if vad is not None else "none"}
        if diarizer is not None:
            roles["diarization"] = diarizer.model_id()
        self.models = "; ".join(f"{k}={v}" for k, v in roles.items())

    @classmethod
    def from_config(cls, job: JobConfig) -> "RecordingStage":
        """The stage with the job's backends, loaded here (inside the Ray actor that holds them)."""
        cfg = job.recording_stage
        use_gpu = job.models.use_gpu(cfg.resources)
        packing = job.segment_stage.packing
        fills = packing.mode == "recording" and packing.min_piece_s > 0
        rtfx = cfg.simulated_rtfx  # the pace of `backend: simulated` (benchmarks and tests only)
        vad = make_vad(cfg.vad, job.models, use_gpu, rtfx)
        diarizer = make_diarizer(cfg.diarization, job.models, use_gpu, rtfx)
        sensitive = None
        if diarizer is not None and vad is not None and cfg.diarization.vad_threshold is not None:
            lower = cfg.vad.model_copy(update={"threshold": cfg.diarization.vad_threshold, "neg_threshold": None})
            sensitive = make_vad(lower, job.models, use_gpu, rtfx)
        return cls(cfg, vad, diarizer, fills, diarization_vad=sensitive)

    def __call__(self, batch: pa.Table) -> pa.Table:
        audio = batch.column("audio")
        # decode's per-channel energy (only for diarization.backend=channels); used here, not passed on
        energy = batch.column("channel_energy") if "channel_energy" in batch.column_names else None
        rows = batch.drop_columns([c for c in ("audio", "channel_energy") if c in batch.column_names]).to_pylist()
        speech: list[np.ndarray | None] = []
        for i, row in enumerate(rows):
            row.update(
                spans=[],
                turns=None,
                voices=None,
                overlaps=None,
                overlap_seconds=None,
                num_speakers=None,
                speech_seconds=None,
                models=self.models,
            )
            t0 = time.perf_counter()
            out = None
            if row["status"] == "ok":
                try:
                    out = self._process(row, samples_at(audio, i), _envelope(energy, i, row["source_channels"]))
                except Exception as exc:  # noqa: BLE001 - one bad recording must not stop the batch
                    log.exception("recording stage failed on %s", row["uri"])
                    row.update(status="error", error=f"vad/diarization: {type(exc).__name__}: {exc}", spans=[])
            speech.append(out)
            row["recording_wall_seconds"] = time.perf_counter() - t0
        rss = peak_rss_mb()
        for row in rows:
            row["recording_peak_rss_mb"] = rss
        return rows_to_table(rows, SEGMENTED_SCHEMA, speech)

    def diarizer_regions(self, vad_audio: np.ndarray, regions: list[Span], row: dict, duration: float) -> list[Span]:
        """What the diarizer hears: the VAD's regions, and what the more sensitive pass
        (`diarization.vad_threshold`) hears outside them, as regions of their own. Quieter speech shapes
        the speakers (it gets no words); kept apart, not joined, because the VAD's region edges are
        pauses, and a window across a pause would blur the speaker change that sits in it."""
        if self.diarization_vad is None:
            return regions
        sensitive = clip_to_core(self.diarization_vad.speech_regions(vad_audio), row, duration)
        extra = [piece for s in sensitive for piece in outside(s, regions)]
        return sorted([*regions, *extra], key=lambda s: s.start)

    def _process(self, row: dict, audio: np.ndarray, channel_energy: np.ndarray | None = None) -> np.ndarray | None:
        """Fill the row's spans; return the speech samples (None when there is no speech)."""
        duration = len(audio) / SAMPLE_RATE
        vad_audio = at_level(audio, self.cfg.vad.level_dbfs) if self.vad else audio  # what the VAD hears
        regions = self.vad.speech_regions(vad_audio) if self.vad else [Span(0.0, round(duration, 3))]
        heard = regions  # all the speech VAD heard: the rest is the noise the audio signals measure against
        regions = clip_to_core(regions, row, duration)  # a piece of a long recording keeps its own stretch
        offset_s = row.get("piece_start") or 0.0  # where this row's audio lies in the recording
        turns = None
        if self.diarizer and regions:
            heard_by_diarizer = self.diarizer_regions(vad_audio, regions, row, duration)
            found = self.diarizer.diarize(audio, heard_by_diarizer, channel_energy=channel_energy)
            turns = found.turns
            if found.warning:  # e.g. channels: why a file is one speaker; an ok row's warning goes to `error`
                row["error"] = "; ".join(w for w in (row["error"], found.warning) if w)
            if found.overlaps is not None:  # None: the backend cannot tell overlapped speech
                row["overlaps"] = [
                    {
                        "start": round(o.start + offset_s, 3),
                        "end": round(o.end + offset_s, 3),
                        "speakers": list(o.speakers),
                    }
                    for o in found.overlaps
                ]
                row["overlap_seconds"] = round(sum(o.duration for o in found.overlaps), 3)
        # Utterances follow VAD and length only: speakers are given to words after ASR (segment stage)
        spans = utterances(regions, self.cfg.segmentation, audio)
        row["speech_seconds"] = round(sum(s.duration for s in spans), 3)
        if turns is not None:
            row["turns"] = [
                {"start": round(t.start + offset_s, 3), "end": round(t.end + offset_s, 3), "speaker": t.speaker}
                for t in turns
            ]
            row["num_speakers"] = len({t.speaker for t in turns})
            if row.get("piece") is not None:  # the sink matches this piece's speakers with the others'
                row["voices"] = self.diarizer.voices()
        else:
            row["num_speakers"] = 1 if spans else 0
        if not spans:
            row["status"] = "no_speech"
            return None
        pauses = self.vad.pauses(vad_audio, regions) if (self.pauses and self.vad) else None
        pieces, offset = [], 0
        for s in spans:
            # rounding to ms must not push the last span past the end of the audio
            end = min(s.end, duration)
            clip = audio[int(s.start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
            # on the recording's timeline; rounding must not push the last span past the audio's end either
            start_s, end_s = round(s.start + offset_s, 3), min(round(end + offset_s, 3), offset_s + duration)
            inside = None if pauses is None else [round(p + offset_s, 3) for p in pauses if s.start < p < end]
            row["spans"].append(
                {
                    "start": start_s,
                    "end": end_s,
                    "speaker": s.speaker,
                    "audio_offset": offset,
                    "num_samples": len(clip),
                    "pauses": inside,
                }
            )
            pieces.append(clip)
            offset += len(clip)
        if self.cfg.audio_quality.enabled:  # SNR, bandwidth, clipping, level (, MOS) of each utterance
            for span, signals in zip(row["spans"], span_signals(audio, heard, pieces, self.cfg.audio_quality.mos)):
                span.update(signals)
        return np.concatenate(pieces)


def _envelope(column: pa.ChunkedArray | None, i: int, channels: int | None) -> np.ndarray | None:
    """Row i of decode's `channel_energy` column as (channels, frames) float32, no copy (None if absent)."""
    flat = samples_at(column, i) if column is not None else None
    if flat is None or not channels or len(flat) % channels:
        return None
    return flat.reshape(channels, -1)
