"""NeMo speaker diarization: Sortformer end-to-end, or TitaNet-style embeddings + clustering.

Both produce per-frame speaker activity that `pipeline.timeline.exclusive_turns` turns into
non-overlapping turns covering the recording's speech regions. Sortformer's activity is per speaker
(sigmoid outputs, several may be high at once), so it also says where speech overlaps
(`pipeline.timeline.overlapped_speech`); TitaNet + clustering gives one speaker per window and
cannot (overlaps None)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from pipeline.backends.base import Diarization
from pipeline.backends.nemo.common import NemoBackend, frame_seconds_of, frames_in, is_file_ref, split_on_oom
from pipeline.clustering import cluster_for
from pipeline.config import DiarizationConfig, ModelsConfig
from pipeline.records import SAMPLE_RATE, Span
from pipeline.timeline import exclusive_turns, stitch_chunk_activity, turns_and_overlaps


class NemoDiarizer(NemoBackend):
    """Speaker diarization of one recording, restricted to its VAD regions.

    * Sortformer (`SortformerEncLabelModel`, e.g. diar_sortformer_4spk-v1): one forward gives per-frame
      speaker activity (80 ms frames, up to 4 speakers). Recordings longer than `sortformer_chunk_s` are
      processed in chunks overlapping by `sortformer_overlap_s`, whose speakers are matched on the
      overlap (Hungarian assignment on co-activity), so memory stays bounded and labels stay
      consistent; streaming Sortformer models take the whole recording.
    * TitaNet-style speaker-embedding model (`EncDecSpeakerLabelModel`): embeddings of
      `cfg.embedding_window_s` windows every `cfg.embedding_hop_s` inside the speech regions
      (`windows_per_batch` per forward), clustered (`pipeline.clustering.cluster_for`), each instant
      assigned to the nearest window centre.

    Both produce exclusive turns (no overlap; overlapped speech goes to the dominant speaker) that
    exactly cover `regions`, labelled "spk0", "spk1", ... in order of appearance. Sortformer also
    reports overlapped speech: frames where two or more speakers' activity reaches 0.5.

    More speakers than Sortformer's slots (panels, hearings): with `cfg.beyond_model` (a TitaNet-style
    embedding model) a recording where every slot holds at least `min_speaker_s` of speech
    (`every_slot_busy`: Sortformer has likely merged people) is diarized by clustering that model's
    windows instead, whose count follows the data up to `max_speakers`; overlaps are then None."""

    default_model = "diar_sortformer_4spk-v1"
    sortformer_chunk_s = 600.0
    sortformer_overlap_s = 60.0
    windows_per_batch = 64
    _beyond: "NemoDiarizer | None" = None  # the embedding model beyond Sortformer's slots (cfg.beyond_model)

    def __init__(self, cfg: DiarizationConfig, models: ModelsConfig, use_gpu: bool):
        # heavy: NeMo takes ~20 s to import
        from nemo.collections.asr.models import EncDecSpeakerLabelModel, SortformerEncLabelModel

        super().__init__(cfg, models, use_gpu)
        if isinstance(self._model, SortformerEncLabelModel):
            self.mode = "sortformer"
            self.frame_s = frame_seconds_of(self._model, 0.08)
        elif isinstance(self._model, EncDecSpeakerLabelModel):
            self.mode = "embedding"
        else:
            raise TypeError(
                f"diarization model {self._ref!r} is a {type(self._model).__name__}; expected a Sortformer "
                "(SortformerEncLabelModel) or a speaker-embedding model (EncDecSpeakerLabelModel)"
            )
        if self.mode == "sortformer" and cfg.beyond_model:
            only = {"model": cfg.beyond_model, "sha256": cfg.beyond_sha256, "beyond_model": None}
            self._beyond = NemoDiarizer(cfg.model_copy(update=only), models, use_gpu)
            if self._beyond.mode != "embedding":
                raise TypeError(f"diarization.beyond_model {cfg.beyond_model!r} is not a speaker-embedding model")
        self.last_mode = self.mode  # which of the two diarized the last recording

    def model_id(self) -> str:
        """Provenance: the model, and the embedding model used beyond Sortformer's slots."""
        own = super().model_id()
        return own if self._beyond is None else f"{own} + beyond {self._beyond.model_id()}"

    def _model_class(self) -> Any:
        # heavy: NeMo takes ~20 s to import
        from nemo.collections.asr.models import EncDecSpeakerLabelModel, SortformerEncLabelModel

        if is_file_ref(self._ref):
            return None  # a .nemo names its own class
        return SortformerEncLabelModel if "sortformer" in self._ref.lower() else EncDecSpeakerLabelModel

    def speaker_turns(
        self, audio: np.ndarray, regions: Sequence[Span], channel_energy: np.ndarray | None = None
    ) -> list[Span]:
        """Speaker turns, seconds of the recording's timeline, covering exactly the speech in `regions`."""
        return self.diarize(audio, regions).turns

    def diarize(
        self, audio: np.ndarray, regions: Sequence[Span], channel_energy: np.ndarray | None = None
    ) -> Diarization:
        """Turns, and overlapped speech for Sortformer (None for TitaNet + clustering)."""
        duration = len(audio) / SAMPLE_RATE
        regions = [Span(max(0.0, r.start), min(duration, r.end)) for r in regions]
        regions = [r for r in sorted(regions, key=lambda r: r.start) if r.end > r.start]
        if not regions:
            return Diarization([], [] if self.mode == "sortformer" else None)
        self.last_mode = self.mode
        if self.mode == "sortformer":
            probs = self.sortformer_probs(audio)
            if self._beyond is not None and every_slot_busy(probs, self.frame_s, regions, self.cfg.min_speaker_s):
                self.last_mode = "beyond"
                return Diarization(self._beyond._embedding_turns(audio, regions), None)
            turns, overlaps = turns_and_overlaps(probs, self.frame_s, regions)
            return Diarization(turns, overlaps)
        return Diarization(self._embedding_turns(audio, regions), None)

    # -- Sortformer ------------------------------------------------------------------------------
    def sortformer_probs(self, audio: np.ndarray) -> np.ndarray:
        """Speaker activity (T, S) in [0, 1] at `frame_s`, frame 0 at sample 0; columns are global
        speakers (consistent across chunks)."""
        n = len(audio)
        chunk = int(self.sortformer_chunk_s * SAMPLE_RATE)
        if n <= chunk or getattr(self._model, "streaming_mode", False):
            return self._sortformer_forward(audio)
        hop = chunk - int(self.sortformer_overlap_s * SAMPLE_RATE)
        total = frames_in(n, self.frame_s)
        glob: np.ndarray | None = None
        written = 0  # global frames filled so far
        for s in range(0, n, hop):
            p = self._sortformer_forward(audio[s : s + chunk])
            f0 = int(round(s / SAMPLE_RATE / self.frame_s))
            if glob is None:
                glob = np.zeros((total, p.shape[1]), dtype=np.float32)
                glob[f0 : f0 + len(p)] = p[: total - f0]
            else:
                glob = stitch_chunk_activity(glob, p, f0, overlap=max(0, written - f0))
            written = min(total, f0 + len(p))
            if s + chunk >= n:
                break
        assert glob is not None
        return glob

    def _sortformer_forward(self, clip: np.ndarray) -> np.ndarray:
        x, lens = self._inputs([clip], min_samples=SAMPLE_RATE)
        with self._inference():
            preds = self._model(audio_signal=x, audio_signal_length=lens)
        return preds[0, : frames_in(len(clip), self.frame_s)].float().cpu().numpy()

    # -- embeddings + clustering -----------------------------------------------------------------
    def _embedding_turns(self, audio: np.ndarray, regions: Sequence[Span]) -> list[Span]:
        window_s, hop_s = self.cfg.embedding_window_s, self.cfg.embedding_hop_s
        windows: list[tuple[float, float]] = []
        for r in regions:
            if r.duration <= window_s:
                windows.append((r.start, r.end))
                continue
            t = r.start
            while True:
                end = min(t + window_s, r.end)
                windows.append((end - window_s, end))
                if end >= r.end:
                    break
                t += hop_s
        clips = [audio[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)] for a, b in windows]
        step = self.windows_per_batch
        embs = np.concatenate([split_on_oom(self._embed, clips[i : i + step]) for i in range(0, len(clips), step)])
        labels = cluster_for(self.cfg, embs, hop_s)
        centres = np.array([(a + b) / 2 for a, b in windows])
        frame_s = 0.01
        n_frames = frames_in(len(audio), frame_s)
        probs = np.zeros((n_frames, int(labels.max()) + 1), dtype=np.float32)
        for r in regions:
            lo, hi = int(r.start / frame_s), min(n_frames, int(math.ceil(r.end / frame_s)))
            inside = np.where((centres >= r.start - 1e-6) & (centres <= r.end + 1e-6))[0]
            cand = inside if len(inside) else np.arange(len(centres))
            t = (np.arange(lo, hi) + 0.5) * frame_s
            nearest = cand[np.abs(t[:, None] - centres[cand][None, :]).argmin(axis=1)]
            probs[np.arange(lo, hi), labels[nearest]] = 1.0
        return exclusive_turns(probs, frame_s, regions, min_turn_s=min(0.3, hop_s))

    def _embed(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        x, lens = self._inputs(clips, min_samples=SAMPLE_RATE // 4)
        with self._inference():
            _logits, emb = self._model(input_signal=x, input_signal_length=lens)
        return list(emb.float().cpu().numpy())


def every_slot_busy(probs: np.ndarray, frame_s: float, regions: Sequence[Span], min_speaker_s: float) -> bool:
    """Whether each of Sortformer's speaker slots (columns of `probs`, T x S) is active (>= 0.5) for at
    least `min_speaker_s` inside `regions`: the model has no slot left, so a recording with more people
    than slots has had some of them merged (the sign to cluster embeddings instead)."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or not probs.shape[0] or not probs.shape[1]:
        return False
    inside = np.zeros(probs.shape[0], dtype=bool)
    for r in regions:
        inside[max(0, int(r.start / frame_s)) : int(math.ceil(r.end / frame_s))] = True
    seconds = (probs[inside] >= 0.5).sum(axis=0) * frame_s
    return bool(np.all(seconds >= max(min_speaker_s, frame_s)))
