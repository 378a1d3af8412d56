"""Segment stage (actor): pooled, duration-bucketed LID -> ASR -> punctuation -> quality.

Segments of every recording in the Ray batch are pooled, sorted by duration and packed into model
calls under a padded-seconds budget (pipeline/batching.py), then regrouped per recording. Language
is identified per segment, so a file that switches language is transcribed in both. A model call
that fails is retried item by item; an item that still fails marks its recording "error" with the
message, and the other recordings of the batch are unaffected.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from pipeline.backends.registry import make_asr, make_lid
from pipeline.batching import plan_batches
from pipeline.config import JobConfig
from pipeline.records import AsrResult, WORD_TYPE
from pipeline.stages.punctuation import needs_punctuation_warning
from pipeline.stages.quality import judge
from pipeline.stages.recording import SEGMENTED_SCHEMA

log = logging.getLogger(__name__)

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
        ("accepted", pa.bool_()),
        ("reject_reasons", pa.list_(pa.string())),
    ]
)

_KEEP = [f for f in SEGMENTED_SCHEMA.names if f not in ("audio", "spans")]

TRANSCRIBED_SCHEMA = pa.schema(
    [SEGMENTED_SCHEMA.field(n) for n in _KEEP]
    + [
        ("language", pa.string()),
        ("segments", pa.list_(SEGMENT_TYPE)),
        ("punctuated", pa.bool_()),
        ("asr_audio_seconds", pa.float64()),
        ("asr_padded_seconds", pa.float64()),
        ("asr_wall_seconds", pa.float64()),
    ]
)


@dataclass
class _Item:
    row: int
    span: dict
    clip: np.ndarray
    result: AsrResult | None = None
    error: str | None = None
    lid: tuple[str, float] | None = None
    padded_s: float = 0.0
    wall_s: float = 0.0


class SegmentStage:
    name = "segment"

    def __init__(self, cfg: JobConfig):
        use_gpu = cfg.segment_stage.resources.num_gpus > 0
        self.cfg = cfg
        self.asr = make_asr(cfg.asr, cfg.models, use_gpu)
        self.lid = make_lid(cfg.lid, cfg.asr, self.asr, cfg.models, use_gpu)
        self.itn: Callable[[str, str | None], str] | None = None
        if cfg.itn.enabled:
            from pipeline.stages.itn import make_itn

            self.itn = make_itn(cfg.itn)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        items: list[_Item] = []
        for r, row in enumerate(rows):
            if row["status"] != "ok" or not row["spans"]:
                continue
            audio = np.frombuffer(row["audio"], dtype="<f4")
            for span in row["spans"]:
                clip = audio[int(span["start"] * 16000) : int(span["end"] * 16000)]
                items.append(_Item(r, span, clip))
        self._run_models(items)
        return self._regroup(rows, items)

    # -- models ---------------------------------------------------------------------------------
    def _run_models(self, items: list[_Item]) -> None:
        durations = [len(it.clip) / 16000 for it in items]
        bcfg = self.cfg.batching
        for idx in plan_batches(durations, self.asr.padded_seconds, bcfg.max_padded_s, bcfg.max_items, bcfg.enabled):
            group = [items[i] for i in idx]
            t0 = time.perf_counter()
            self._call(group)
            wall = time.perf_counter() - t0
            padded = self.asr.padded_seconds([durations[i] for i in idx])
            total = sum(durations[i] for i in idx) or 1.0
            for i in idx:
                share = durations[i] / total
                items[i].padded_s, items[i].wall_s = padded * share, wall * share

    def _languages(self, group: list[_Item]) -> list[str | None]:
        if self.lid is None:
            return [self.cfg.lid.language] * len(group)
        if self.lid is self.asr:
            return [None] * len(group)  # fused: the ASR call detects from its own encoder pass
        for it, lid in zip(group, self.lid.identify([it.clip for it in group])):
            it.lid = lid
        return [it.lid[0] for it in group]  # type: ignore[index]

    def _call(self, group: list[_Item]) -> None:
        try:
            results = self.asr.transcribe([it.clip for it in group], self._languages(group))
            for it, res in zip(group, results):
                it.result = res
        except Exception as exc:  # noqa: BLE001
            if len(group) == 1:
                log.exception("segment failed")
                group[0].error = f"asr: {type(exc).__name__}: {exc}"
                return
            log.warning("batch of %d failed (%s); retrying one at a time", len(group), exc)
            for it in group:
                self._call([it])

    # -- regroup --------------------------------------------------------------------------------
    def _regroup(self, rows: list[dict], items: list[_Item]) -> pa.Table:
        by_row: dict[int, list[_Item]] = {}
        for it in items:
            by_row.setdefault(it.row, []).append(it)
        punctuated = not needs_punctuation_warning(self.cfg.punctuation, self.asr)
        out = []
        for r, row in enumerate(rows):
            mine = sorted(by_row.get(r, []), key=lambda it: it.span["start"])
            rec = {k: row[k] for k in _KEEP}
            rec.update(
                language=None,
                segments=[],
                punctuated=punctuated if mine else None,
                asr_audio_seconds=sum(len(it.clip) / 16000 for it in mine),
                asr_padded_seconds=sum(it.padded_s for it in mine),
                asr_wall_seconds=sum(it.wall_s for it in mine),
            )
            errors = [it.error for it in mine if it.error]
            if errors:
                rec.update(status="error", error=f"{len(errors)} of {len(mine)} segments failed; first: {errors[0]}")
            elif mine:
                rec["segments"] = [self._segment(k, it) for k, it in enumerate(mine)]
                spoken = [s for s in rec["segments"] if s["text"]]
                if not spoken:
                    rec["status"] = "no_speech"
                lang = Counter()
                for s in spoken:
                    lang[s["language"]] += s["duration"]
                rec["language"] = lang.most_common(1)[0][0] if lang else None
            out.append(rec)
        return pa.Table.from_pylist(out, schema=TRANSCRIBED_SCHEMA)

    def _segment(self, index: int, it: _Item) -> dict:
        res = it.result
        assert res is not None
        start, end = it.span["start"], it.span["end"]
        text = res.text
        language = res.language or (it.lid[0] if it.lid else self.cfg.lid.language)
        language_prob = res.language_prob if res.language_prob is not None else (it.lid[1] if it.lid else None)
        if self.itn and text:
            text = self.itn(text, language)
        words = [
            {
                "word": w.word,
                "start": round(min(max(start + w.start, start), end), 3),
                "end": round(min(max(start + w.end, start), end), 3),
                "confidence": w.confidence,
            }
            for w in res.words
        ]
        duration = round(end - start, 3)
        seg = {
            "segment_index": index,
            "start": start,
            "end": end,
            "duration": duration,
            "speaker": it.span["speaker"],
            "language": language,
            "language_prob": language_prob,
            "text": text,
            "words": words,
            "confidence": res.confidence,
            "avg_logprob": res.avg_logprob,
            "no_speech_prob": res.no_speech_prob,
            "compression_ratio": res.compression_ratio,
            "chars_per_second": round(len(text) / duration, 3) if duration > 0 else None,
        }
        seg["accepted"], seg["reject_reasons"] = judge(seg, self.cfg.quality)
        return seg
