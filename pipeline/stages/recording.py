"""Recording stage (actor): VAD -> speech regions; diarization -> speaker turns; cut into utterances.

One row per recording goes in and one comes out, its utterances nested in `spans` (seconds, original
timeline). Audio travels on unchanged for the segment stage. A recording with no speech leaves with
status "no_speech" and no audio (nothing downstream needs it).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa

from pipeline.backends.registry import make_diarizer, make_vad
from pipeline.config import JobConfig
from pipeline.records import Span, peak_rss_mb
from pipeline.stages.decode import DECODED_SCHEMA
from pipeline.timeline import utterances

log = logging.getLogger(__name__)

SPAN_TYPE = pa.struct([("start", pa.float64()), ("end", pa.float64()), ("speaker", pa.string())])

SEGMENTED_SCHEMA = pa.schema(
    list(DECODED_SCHEMA)
    + [
        ("spans", pa.list_(SPAN_TYPE)),
        ("num_speakers", pa.int32()),
        ("speech_seconds", pa.float64()),
        ("recording_wall_seconds", pa.float64()),  # VAD + diarization time spent on this recording
        ("recording_peak_rss_mb", pa.float64()),  # the actor's peak RSS when it finished this batch
    ]
)


class RecordingStage:
    name = "recording"

    def __init__(self, cfg: JobConfig):
        use_gpu = cfg.recording_stage.resources.num_gpus > 0
        self.cfg = cfg
        self.vad = make_vad(cfg.vad, cfg.models, use_gpu)
        self.diarizer = make_diarizer(cfg.diarization, cfg.models, use_gpu)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        for row in batch.to_pylist():
            row.update(spans=[], num_speakers=None, speech_seconds=None)
            t0 = time.perf_counter()
            if row["status"] == "ok":
                try:
                    self._process(row)
                except Exception as exc:  # noqa: BLE001 - one bad recording must not stop the batch
                    log.exception("recording stage failed on %s", row["uri"])
                    row.update(status="error", error=f"vad/diarization: {type(exc).__name__}: {exc}", audio=None)
            row["recording_wall_seconds"] = time.perf_counter() - t0
            rows.append(row)
        rss = peak_rss_mb()
        for row in rows:
            row["recording_peak_rss_mb"] = rss
        return pa.Table.from_pylist(rows, schema=SEGMENTED_SCHEMA)

    def _process(self, row: dict) -> None:
        audio = np.frombuffer(row["audio"], dtype="<f4")
        duration = len(audio) / 16000
        regions = self.vad.speech_regions(audio) if self.vad else [Span(0.0, round(duration, 3))]
        turns = self.diarizer.speaker_turns(audio, regions) if (self.diarizer and regions) else None
        spans = utterances(regions, turns, self.cfg.segmentation, audio)
        row["speech_seconds"] = round(sum(s.duration for s in spans), 3)
        row["num_speakers"] = len({s.speaker for s in spans}) if turns is not None else (1 if spans else 0)
        # rounding to ms must not push the last span past the end of the audio
        row["spans"] = [{"start": s.start, "end": min(s.end, duration), "speaker": s.speaker} for s in spans]
        if not spans:
            row.update(status="no_speech", audio=None)
