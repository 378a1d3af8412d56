"""Speaker diarization from Resemblyzer d-vectors + agglomerative clustering (embedded default).

Resemblyzer ships its 17 MB speaker encoder inside the pip package, so it works offline. We embed
overlapping windows inside each speech region, cluster them with an automatic speaker count
(average-link cosine, stopped at a threshold that follows the recording's own same-speaker distance:
pipeline/clustering.py says why), fold tiny clusters into their nearest big one,
and turn window labels into speaker turns with boundaries halfway between window centres.

Overlapped speech is not reported (`Diarization.overlaps` is None): one embedding per 1.6 s window
gives one speaker per window, so two voices at once cannot be told from one.
"""

from __future__ import annotations

import warnings
from importlib.metadata import version
from typing import Sequence

import numpy as np

from pipeline.backends.base import Diarization
from pipeline.clustering import cluster_for, threshold_for
from pipeline.config import DiarizationConfig
from pipeline.records import SAMPLE_RATE, Span

# Resemblyzer's partial window is fixed by the model: 160 mel frames of 10 ms.
_PARTIAL_S = 1.6


class ResemblyzerDiarizer:
    def __init__(self, cfg: DiarizationConfig, use_gpu: bool = False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # webrtcvad's pkg_resources deprecation warning
            from resemblyzer import VoiceEncoder  # heavy: Resemblyzer loads torch

        self.cfg = cfg
        self._voices: list[dict] = []
        self.encoder = VoiceEncoder(device="cuda" if use_gpu else "cpu", verbose=False)

    def model_id(self) -> str:
        """Provenance: the speaker encoder shipped in the installed resemblyzer package."""
        return f"resemblyzer:{version('resemblyzer')}"

    def diarize(
        self, audio: np.ndarray, regions: Sequence[Span], channel_energy: np.ndarray | None = None
    ) -> Diarization:
        """Turns only: this backend cannot tell overlapped speech (see the module docstring)."""
        return Diarization(self.speaker_turns(audio, regions), overlaps=None)

    def speaker_turns(
        self, audio: np.ndarray, regions: Sequence[Span], channel_energy: np.ndarray | None = None
    ) -> list[Span]:
        centres, embeds, groups = self._window_embeddings(audio, regions)
        self._voices = []
        if len(embeds) == 0:
            return [Span(r.start, r.end, "spk0") for r in regions]
        threshold = threshold_for(self.cfg, np.stack(embeds), self.cfg.embedding_hop_s, np.asarray(groups))
        labels = cluster_for(
            self.cfg, np.stack(embeds), self.cfg.embedding_hop_s, groups=np.asarray(groups), threshold=threshold
        )
        unit = np.stack(embeds) / np.maximum(np.linalg.norm(np.stack(embeds), axis=1, keepdims=True), 1e-9)
        for lab in sorted(set(labels.tolist())):
            mine = unit[labels == lab]
            self._voices.append(
                {
                    "speaker": f"spk{lab}",
                    "seconds": len(mine) * self.cfg.embedding_hop_s,
                    "threshold": threshold,
                    "embedding": mine.mean(axis=0).astype(np.float32).tolist(),
                }
            )
        return turns_from_windows(regions, np.asarray(centres), labels)

    def voices(self) -> list[dict]:
        """Each speaker of the last `speaker_turns` call: its label, its seconds of embedded speech, the
        threshold its windows were clustered at, and the mean of its unit d-vectors (not renormalised:
        1 - a.b of two such means is the average cosine distance between their windows, the distance
        the clustering used), so that the speakers of a long recording's pieces can be matched across
        them (pipeline/pieces.py `stitch`)."""
        return list(self._voices)

    def _window_embeddings(
        self, audio: np.ndarray, regions: Sequence[Span]
    ) -> tuple[list[float], list[np.ndarray], list[int]]:
        """Window centres (seconds), d-vectors, and the index of the region each window lies in."""
        centres: list[float] = []
        embeds: list[np.ndarray] = []
        groups: list[int] = []
        rate = 1.0 / self.cfg.embedding_hop_s
        for k, region in enumerate(regions):
            a, b = int(region.start * SAMPLE_RATE), int(region.end * SAMPLE_RATE)
            wav = audio[a:b]
            if len(wav) < 1.0 * SAMPLE_RATE:
                continue  # too short to say anything about the speaker; it inherits a neighbour's label
            _, partials, splits = self.encoder.embed_utterance(wav, return_partials=True, rate=rate)
            for emb, sl in zip(partials, splits):
                mid = (sl.start + min(sl.stop, len(wav))) / 2 / SAMPLE_RATE
                centres.append(region.start + mid)
                embeds.append(emb)
                groups.append(k)
        return centres, embeds, groups


def turns_from_windows(regions: Sequence[Span], centres: np.ndarray, labels: np.ndarray) -> list[Span]:
    """Speaker turns: inside each region, change speaker halfway between windows of different labels."""
    turns: list[Span] = []
    for region in regions:
        inside = np.where((centres >= region.start) & (centres <= region.end))[0]
        if len(inside) == 0:
            nearest = int(np.argmin(np.abs(centres - (region.start + region.end) / 2)))
            turns.append(Span(region.start, region.end, f"spk{labels[nearest]}"))
            continue
        start = region.start
        for a, b in zip(inside[:-1], inside[1:]):
            if labels[a] != labels[b]:
                cut = round(float(centres[a] + centres[b]) / 2, 3)
                turns.append(Span(start, cut, f"spk{labels[a]}"))
                start = cut
        turns.append(Span(start, region.end, f"spk{labels[inside[-1]]}"))
    return turns
