"""Speaker clustering shared by the diarization backends (Resemblyzer d-vectors, NeMo TitaNet).

Agglomerative clustering, cosine distance, average link, stopped at a threshold: the speaker count
follows from the data. Clusters holding less than `min_speaker_s` of speech (noise, laughter,
overlap), or less than `min_speaker_share` of the longest speaker's, are folded into the nearest
large one. Why not a share of all the windows: a fixed 25% folded away every speaker of a meeting who
talked less than a quarter of the time.

Why the threshold follows the recording (`recording_threshold`, the embedded default): Resemblyzer's
distances depend on the channel. On clean speech (bench/meetings.py) windows of one voice lie 0.17-0.35
apart (cosine distance, 1.6 s windows), windows of two voices 0.43-0.69; on the corpus's telephone
call the two speakers are 0.30 apart and each 0.23 from itself: the narrow band makes every voice
alike. No fixed threshold serves both: 0.30 split the noisier studio voices into 2-5 speakers in 7 of
24 synthetic meetings, 0.33 and above made the call one speaker. So the recording measures its own
same-speaker scale: the median distance between windows 1 s apart inside one speech region (nearly
always one speaker). Same-speaker pairs lie at up to 1.45 times that scale, different speakers at
1.7 (the call) to 2.8 times; the threshold is `threshold_scale` (1.6) times it, kept within
`threshold_bounds` (0.25-0.40: never merge what is farther apart than two clean voices, never split
what is closer than one). Short recordings (fewer than 8 such pairs) use the fixed `cluster_threshold`.
`num_speakers`, `min_speakers`, `max_speakers` bound the count for users who know it, as every
diarization tool offers.
"""

from __future__ import annotations

import numpy as np


def cluster_speakers(
    embeds: np.ndarray,
    threshold: float,
    max_speakers: int,
    min_fraction: float = 0.0,
    *,
    min_windows: int = 2,
    num_speakers: int | None = None,
    min_speakers: int = 1,
    min_share: float = 0.0,
) -> np.ndarray:
    """A label per embedding, 0..k-1 numbered by first appearance.

    `num_speakers` fixes the count (a user who knows it); otherwise the count follows the data and
    is kept within [min_speakers, max_speakers]. Clusters with fewer than `min_windows` windows (or
    `min_fraction` of all of them, or `min_share` of the largest cluster's) are folded into the
    nearest large one."""
    embeds = np.asarray(embeds, dtype=np.float64)
    if len(embeds) < 2:
        return np.zeros(len(embeds), dtype=int)
    from sklearn.cluster import AgglomerativeClustering  # heavy: scikit-learn takes about a second to import

    embeds = embeds / np.maximum(np.linalg.norm(embeds, axis=1, keepdims=True), 1e-9)

    def fixed(k: int) -> np.ndarray:
        return AgglomerativeClustering(n_clusters=min(k, len(embeds)), metric="cosine", linkage="average").fit_predict(
            embeds
        )

    if num_speakers is not None:
        labels = fixed(num_speakers)
    else:
        labels = AgglomerativeClustering(
            n_clusters=None, metric="cosine", linkage="average", distance_threshold=threshold
        ).fit_predict(embeds)
        largest = int(np.bincount(labels).max())
        min_size = max(2, min_windows, int(np.ceil(min_fraction * len(embeds))), int(np.ceil(min_share * largest)))
        labels = _fold_small_clusters(embeds, labels, min_size=min_size)
        if len(set(labels)) > max_speakers:
            labels = fixed(max_speakers)
        elif len(set(labels)) < min_speakers:
            labels = fixed(min_speakers)
    order: dict[int, int] = {}
    for lab in labels:
        order.setdefault(int(lab), len(order))
    return np.array([order[int(lab)] for lab in labels], dtype=int)


def threshold_for(cfg, embeds: np.ndarray, hop_s: float, groups: np.ndarray | None = None) -> float:
    """The clustering threshold under a `DiarizationConfig`: `groups` (the speech region of each window,
    windows in time order) lets it follow the recording (`recording_threshold`, when
    `cfg.threshold_scale` is set); without them it is the fixed `cluster_threshold`."""
    if groups is not None and cfg.threshold_scale is not None:
        lo, hi = cfg.threshold_bounds
        return recording_threshold(embeds, groups, hop_s, cfg.threshold_scale, lo, hi, cfg.cluster_threshold)
    return cfg.cluster_threshold


def cluster_for(
    cfg, embeds: np.ndarray, hop_s: float, groups: np.ndarray | None = None, threshold: float | None = None
) -> np.ndarray:
    """`cluster_speakers` with a `DiarizationConfig`'s settings; `hop_s` turns its `min_speaker_s`
    (seconds of speech a speaker must hold) into a count of embedding windows. The threshold is
    `threshold_for(cfg, embeds, hop_s, groups)` unless given."""
    if threshold is None:
        threshold = threshold_for(cfg, embeds, hop_s, groups)
    return cluster_speakers(
        embeds,
        threshold,
        cfg.max_speakers,
        cfg.min_cluster_fraction,
        min_windows=int(np.ceil(cfg.min_speaker_s / hop_s)),
        num_speakers=cfg.num_speakers,
        min_speakers=cfg.min_speakers,
        min_share=cfg.min_speaker_share,
    )


#: Windows this far apart (seconds) inside one speech region measure the recording's same-speaker scale.
LOCAL_S = 1.0
#: Fewer such pairs than this: the recording is too short to measure it.
MIN_LOCAL_PAIRS = 8


def recording_threshold(
    embeds: np.ndarray, groups: np.ndarray, hop_s: float, scale: float, lo: float, hi: float, fallback: float
) -> float:
    """The clustering threshold of one recording: `scale` times the median cosine distance between
    windows `LOCAL_S` apart in the same speech region, within [lo, hi]; `fallback` when there are
    fewer than `MIN_LOCAL_PAIRS` such pairs (see the module docstring for why)."""
    embeds = np.asarray(embeds, dtype=np.float64)
    groups = np.asarray(groups)
    lag = max(1, int(round(LOCAL_S / hop_s)))
    if len(embeds) <= lag:
        return fallback
    unit = embeds / np.maximum(np.linalg.norm(embeds, axis=1, keepdims=True), 1e-9)
    same = groups[:-lag] == groups[lag:]
    if same.sum() < MIN_LOCAL_PAIRS:
        return fallback
    dist = 1.0 - np.einsum("ij,ij->i", unit[:-lag][same], unit[lag:][same])
    return float(np.clip(scale * np.median(dist), lo, hi))


def _fold_small_clusters(embeds: np.ndarray, labels: np.ndarray, min_size: int) -> np.ndarray:
    ids, counts = np.unique(labels, return_counts=True)
    big = [i for i, c in zip(ids, counts) if c >= min_size]
    if not big or len(big) == len(ids):
        return labels
    centroids = {i: embeds[labels == i].mean(axis=0) for i in big}
    out = labels.copy()
    for k, lab in enumerate(labels):
        if lab not in centroids:
            out[k] = max(big, key=lambda i: float(embeds[k] @ centroids[i]))
    return out
