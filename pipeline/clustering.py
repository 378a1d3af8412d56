"""Speaker clustering shared by the diarization backends (Resemblyzer d-vectors, NeMo TitaNet).

Agglomerative clustering, cosine distance, average link, stopped at `threshold`: the speaker count
follows from the data. Clusters holding less than `min_speaker_s` of speech (noise, laughter,
overlap) are folded into the nearest large one. Why seconds and not a share of the windows: a fixed
25% share folded away every speaker of a meeting who talked less than a quarter of the time; on
../shared/corpus an absolute 3 s keeps 42 of 43 single-speaker clips at one speaker (25%: 41) and
both two-speaker files at two. `num_speakers`, `min_speakers`, `max_speakers` bound the count for
users who know it, as every diarization tool offers.
"""

from __future__ import annotations

import numpy as np


def cluster_speakers(
    embeds: np.ndarray, threshold: float, max_speakers: int, min_fraction: float = 0.0, *,
    min_windows: int = 2, num_speakers: int | None = None, min_speakers: int = 1,
) -> np.ndarray:
    """A label per embedding, 0..k-1 numbered by first appearance.

    `num_speakers` fixes the count (a user who knows it); otherwise the count follows the data and
    is kept within [min_speakers, max_speakers]. Clusters with fewer than `min_windows` windows (or
    `min_fraction` of them) are folded into the nearest large one."""
    embeds = np.asarray(embeds, dtype=np.float64)
    if len(embeds) < 2:
        return np.zeros(len(embeds), dtype=int)
    from sklearn.cluster import AgglomerativeClustering

    embeds = embeds / np.maximum(np.linalg.norm(embeds, axis=1, keepdims=True), 1e-9)

    def fixed(k: int) -> np.ndarray:
        return AgglomerativeClustering(n_clusters=min(k, len(embeds)), metric="cosine", linkage="average").fit_predict(embeds)

    if num_speakers is not None:
        labels = fixed(num_speakers)
    else:
        labels = AgglomerativeClustering(
            n_clusters=None, metric="cosine", linkage="average", distance_threshold=threshold
        ).fit_predict(embeds)
        min_size = max(2, min_windows, int(np.ceil(min_fraction * len(embeds))))
        labels = _fold_small_clusters(embeds, labels, min_size=min_size)
        if len(set(labels)) > max_speakers:
            labels = fixed(max_speakers)
        elif len(set(labels)) < min_speakers:
            labels = fixed(min_speakers)
    order: dict[int, int] = {}
    for lab in labels:
        order.setdefault(int(lab), len(order))
    return np.array([order[int(lab)] for lab in labels], dtype=int)


def cluster_for(cfg, embeds: np.ndarray, hop_s: float) -> np.ndarray:
    """`cluster_speakers` with a `DiarizationConfig`'s settings; `hop_s` turns its `min_speaker_s`
    (seconds of speech a speaker must hold) into a count of embedding windows."""
    return cluster_speakers(
        embeds, cfg.cluster_threshold, cfg.max_speakers, cfg.min_cluster_fraction,
        min_windows=int(np.ceil(cfg.min_speaker_s / hop_s)), num_speakers=cfg.num_speakers,
        min_speakers=cfg.min_speakers,
    )


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
