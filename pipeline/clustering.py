"""Speaker clustering shared by the diarization backends (Resemblyzer d-vectors, NeMo TitaNet).

Agglomerative clustering, cosine distance, average link, stopped at `threshold`: the speaker count
follows from the data. Clusters holding fewer than `min_fraction` of the windows (noise, laughter,
overlap) are folded into the nearest large one; `max_speakers` caps the count.
"""

from __future__ import annotations

import numpy as np


def cluster_speakers(embeds: np.ndarray, threshold: float, max_speakers: int, min_fraction: float = 0.0) -> np.ndarray:
    """A label per embedding, 0..k-1 numbered by first appearance."""
    embeds = np.asarray(embeds, dtype=np.float64)
    if len(embeds) < 2:
        return np.zeros(len(embeds), dtype=int)
    from sklearn.cluster import AgglomerativeClustering

    embeds = embeds / np.maximum(np.linalg.norm(embeds, axis=1, keepdims=True), 1e-9)
    labels = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average", distance_threshold=threshold
    ).fit_predict(embeds)
    if min_fraction > 0:
        labels = _fold_small_clusters(embeds, labels, min_size=max(2, int(np.ceil(min_fraction * len(embeds)))))
    if len(set(labels)) > max_speakers:
        labels = AgglomerativeClustering(n_clusters=max_speakers, metric="cosine", linkage="average").fit_predict(embeds)
    order: dict[int, int] = {}
    for lab in labels:
        order.setdefault(int(lab), len(order))
    return np.array([order[int(lab)] for lab in labels], dtype=int)


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
