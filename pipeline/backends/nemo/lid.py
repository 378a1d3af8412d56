"""NeMo spoken language ID: AmberNet-style classifiers over the clip's audio."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pipeline.backends.nemo.common import NemoBackend, split_on_oom
from pipeline.config import LidConfig, ModelsConfig
from pipeline.records import SAMPLE_RATE


class NemoLid(NemoBackend):
    """AmberNet-style spoken language ID (`EncDecSpeakerLabelModel` with language labels).

    One batched forward per call (padded; the encoder masks padding and the attentive pooling uses the
    lengths). Only the first `max_clip_s` seconds of each clip are used: language is stable within an
    utterance and this bounds the cost of long clips."""

    default_model = "langid_ambernet"
    max_clip_s = 20.0

    def __init__(self, cfg: LidConfig, models: ModelsConfig, use_gpu: bool):
        super().__init__(cfg, models, use_gpu)
        mcfg = self._model.cfg
        labels = (mcfg.get("train_ds") or {}).get("labels") or mcfg.get("labels")
        if not labels:
            raise ValueError(f"LID model {self._ref!r} stores no labels (cfg.train_ds.labels / cfg.labels)")
        self._labels = [str(x) for x in labels]

    def _model_class(self) -> Any:
        from nemo.collections.asr.models import EncDecSpeakerLabelModel  # heavy: NeMo takes ~20 s to import

        return EncDecSpeakerLabelModel

    def labels(self) -> list[str]:
        return list(self._labels)

    def identify(self, clips: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """(language, probability) per clip, in order."""
        if not clips:
            return []
        limit = int(self.max_clip_s * SAMPLE_RATE)
        return split_on_oom(self._forward, [c[:limit] for c in clips])

    def _forward(self, clips: list[np.ndarray]) -> list[tuple[str, float]]:
        import torch  # heavy: torch, only where a model runs

        x, lens = self._inputs(clips, min_samples=SAMPLE_RATE // 4)
        with self._inference():
            logits, _emb = self._model(input_signal=x, input_signal_length=lens)
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        best = probs.argmax(axis=1)
        return [(self._labels[int(k)], float(probs[i, k])) for i, k in enumerate(best)]
