"""NeMo frame VAD: MarbleNet speech probabilities every 20 ms, turned into speech regions by
`pipeline.timeline.probs_to_regions`."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pipeline.backends.nemo.common import NemoBackend, frame_seconds_of, frames_in, split_on_oom
from pipeline.config import ModelsConfig, VadConfig
from pipeline.records import SAMPLE_RATE, Span
from pipeline.timeline import PAUSE_S, pauses_inside, probs_to_regions


class NemoVad(NemoBackend):
    """Frame-level MarbleNet VAD (`EncDecFrameClassificationModel`): speech probability every 20 ms.

    Long recordings are cut into chunks of `chunk_s` seconds (each read with `context_s` of extra
    audio on both sides, discarded after the forward, so chunk edges see real context), processed
    `chunks_per_batch` at a time: memory stays bounded whatever the recording length."""

    default_model = "vad_multilingual_frame_marblenet"
    chunk_s = 60.0
    context_s = 1.0
    chunks_per_batch = 8

    def __init__(self, cfg: VadConfig, models: ModelsConfig, use_gpu: bool):
        super().__init__(cfg, models, use_gpu)
        labels = [str(x) for x in (self._model.cfg.get("labels") or ["0", "1"])]
        self._speech_index = next(
            (i for i, lab in enumerate(labels) if lab.lower() in ("1", "speech")), len(labels) - 1
        )
        self.frame_s = frame_seconds_of(self._model, 0.02)

    def _model_class(self) -> Any:
        from nemo.collections.asr.models import EncDecFrameClassificationModel  # heavy: NeMo takes ~20 s to import

        return EncDecFrameClassificationModel

    def speech_probs(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability per frame of `frame_s` seconds, frame 0 at sample 0."""
        n = len(audio)
        total = frames_in(n, self.frame_s)
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        chunk = int(self.chunk_s * SAMPLE_RATE)
        ctx = int(self.context_s * SAMPLE_RATE)
        jobs = [(s, max(0, s - ctx), min(n, s + chunk + ctx)) for s in range(0, n, chunk)]
        probs = np.zeros(total, dtype=np.float32)
        for b in range(0, len(jobs), self.chunks_per_batch):
            batch = jobs[b : b + self.chunks_per_batch]
            outs = split_on_oom(self._forward, [audio[lo:hi] for _, lo, hi in batch])
            for (s, lo, _hi), p in zip(batch, outs):
                first = int(round((s - lo) / SAMPLE_RATE / self.frame_s))  # the leading context
                keep = frames_in(min(chunk, n - s), self.frame_s)
                f0 = int(round(s / SAMPLE_RATE / self.frame_s))
                seg = p[first : first + keep]
                probs[f0 : f0 + len(seg)] = seg[: max(0, total - f0)]
        return probs

    def _forward(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        import torch  # heavy: torch, only where a model runs

        x, lens = self._inputs(clips, min_samples=SAMPLE_RATE // 10)
        with self._inference():
            logits = self._model(input_signal=x, input_signal_length=lens)
            p = torch.softmax(logits.float(), dim=-1)[..., self._speech_index].cpu().numpy()
        return [p[i, : frames_in(len(c), self.frame_s)] for i, c in enumerate(clips)]

    def speech_regions(self, audio: np.ndarray) -> list[Span]:
        """Speech regions of one recording, seconds of its timeline, sorted and non-overlapping."""
        return self._regions(self.speech_probs(audio), len(audio), self.cfg.min_silence_s, self.cfg.pad_s)

    def pauses(self, audio: np.ndarray, regions: Sequence[Span]) -> list[float]:
        """Pauses of at least `PAUSE_S` inside the regions, from the same frame probabilities."""
        return pauses_inside(self._regions(self.speech_probs(audio), len(audio), PAUSE_S, 0.0), regions)

    def _regions(self, probs: np.ndarray, n: int, min_silence_s: float, pad_s: float) -> list[Span]:
        neg = self.cfg.neg_threshold if self.cfg.neg_threshold is not None else max(0.01, self.cfg.threshold - 0.15)
        return probs_to_regions(
            probs,
            self.frame_s,
            onset=self.cfg.threshold,
            offset=neg,
            min_speech_s=self.cfg.min_speech_s,
            min_silence_s=min_silence_s,
            pad_s=pad_s,
            duration=n / SAMPLE_RATE,
        )
