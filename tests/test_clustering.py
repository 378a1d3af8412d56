"""Speaker clustering of embedding windows (pipeline/clustering.py): the count follows the data within
its bounds, and a speaker holding too few windows is folded into another."""

from __future__ import annotations

import numpy as np

from pipeline.clustering import cluster_speakers


def test_speaker_count_bounds():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32))
    embeds = np.concatenate([c + 0.05 * rng.normal(size=(20, 32)) for c in centres])
    assert len(set(cluster_speakers(embeds, 0.3, 8))) == 3
    assert len(set(cluster_speakers(embeds, 0.3, 8, num_speakers=2))) == 2
    assert len(set(cluster_speakers(embeds, 0.3, 2))) == 2
    assert len(set(cluster_speakers(embeds[:20], 0.3, 8, min_speakers=2))) == 2
    # a speaker with a few windows is kept when it holds enough of them, folded when it does not
    few = np.concatenate([embeds[:40], embeds[40:46]])
    assert len(set(cluster_speakers(few, 0.3, 8, min_windows=6))) == 3
    assert len(set(cluster_speakers(few, 0.3, 8, min_windows=7))) == 2
