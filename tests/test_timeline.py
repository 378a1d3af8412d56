"""Speakers never cost words: utterances follow VAD and length only, and diarization's turns are given
to the recognised words afterwards (pipeline/timeline.py; the split itself: tests/test_packing.py)."""

from __future__ import annotations

import numpy as np

from pipeline.clustering import cluster_speakers
from pipeline.records import Span
from pipeline.timeline import speaker_at, speaker_runs, utterances
from pipeline.config import SegmentationConfig

TURNS = [Span(0.0, 2.0, "spk0"), Span(2.0, 5.0, "spk1"), Span(6.0, 8.0, "spk0")]


def test_a_word_goes_to_the_speaker_it_overlaps_most():
    assert speaker_at(0.5, 1.0, TURNS) == "spk0"
    assert speaker_at(1.9, 2.3, TURNS) == "spk1"  # straddles the change: 0.1 s vs 0.3 s
    assert speaker_at(1.6, 2.1, TURNS) == "spk0"
    assert speaker_at(5.2, 5.4, TURNS) == "spk1"  # in a gap: the nearest turn
    assert speaker_at(5.8, 5.9, TURNS) == "spk0"
    assert speaker_at(1.0, 2.0, []) is None


def test_runs_of_one_speaker():
    words = [(0.1, 0.5), (0.6, 1.2), (2.1, 2.5), (2.6, 3.0), (6.2, 6.5)]
    assert speaker_runs(words, TURNS) == [("spk0", [0, 1]), ("spk1", [2, 3]), ("spk0", [4])]


def test_utterances_ignore_speakers_now():
    regions = [Span(0.0, 4.0), Span(4.5, 7.0)]
    spans = utterances(regions, None, SegmentationConfig(merge_gap_s=1.0))
    assert [(s.start, s.end) for s in spans] == [(0.0, 7.0)]  # one utterance across a speaker change


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
