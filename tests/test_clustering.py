"""Speaker clustering of embedding windows (pipeline/clustering.py): the count follows the data within
its bounds, and a speaker holding too few windows is folded into another."""

from __future__ import annotations

import numpy as np

from pipeline.clustering import cluster_for, cluster_speakers


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


def test_a_speaker_with_a_small_share_of_the_longest_speakers_talk_is_folded():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 32))
    sizes = (60, 20, 8)  # the third holds 8 windows: 13% of the longest speaker's 60
    embeds = np.concatenate([c + 0.05 * rng.normal(size=(n, 32)) for c, n in zip(centres, sizes)])
    assert len(set(cluster_speakers(embeds, 0.3, 8, min_windows=4))) == 3
    assert len(set(cluster_speakers(embeds, 0.3, 8, min_windows=4, min_share=0.15))) == 2
    assert len(set(cluster_speakers(embeds, 0.3, 8, min_windows=4, min_share=0.10))) == 3


def _voice(rng, centre, n, spread):
    v = centre + spread * rng.normal(size=(n, centre.size))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_the_threshold_follows_the_recordings_own_same_speaker_distance():
    """Two voices that a fixed threshold merges (a narrow-band call: everything alike) are kept apart,
    and one voice that a fixed threshold splits (a noisy room) stays one, because the threshold is a
    multiple of the distance between windows 1 s apart within one speech region."""
    from pipeline.clustering import recording_threshold
    from pipeline.config import DiarizationConfig

    rng = np.random.default_rng(2)
    dim = 64
    base = rng.normal(size=dim)
    a, b = base + 0.35 * rng.normal(size=dim), base + 0.35 * rng.normal(size=dim)  # alike voices
    call = np.concatenate([_voice(rng, a, 30, 0.02), _voice(rng, b, 30, 0.02)])
    groups = np.repeat(np.arange(6), 10)  # six regions, one speaker each
    cfg = DiarizationConfig(enabled=True, min_speaker_s=1.0)
    fixed = cfg.model_copy(update={"threshold_scale": None, "cluster_threshold": 0.40})
    assert len(set(cluster_for(fixed, call, 0.5))) == 1  # a fixed threshold merges them
    t = recording_threshold(call, groups, 0.5, 1.6, 0.01, 0.99, 0.3)
    assert t < float(1 - _centroid(call[:30]) @ _centroid(call[30:]))
    assert len(set(cluster_for(cfg.model_copy(update={"threshold_bounds": (0.01, 0.99)}), call, 0.5, groups))) == 2
    # too few windows 1 s apart in one region: the fixed threshold
    assert recording_threshold(call[:5], groups[:5], 0.5, 1.6, 0.25, 0.4, 0.3) == 0.3
    assert recording_threshold(call, np.arange(60), 0.5, 1.6, 0.25, 0.4, 0.3) == 0.3  # every window its own region
    # the bounds hold whatever the recording says
    assert recording_threshold(call, groups, 0.5, 1e4, 0.25, 0.4, 0.3) == 0.4
    assert recording_threshold(call, groups, 0.5, 1e-3, 0.25, 0.4, 0.3) == 0.25


def _centroid(x):
    c = x.mean(axis=0)
    return c / np.linalg.norm(c)
