"""Speakers never cost words: utterances follow VAD and length only, and diarization's turns are given
to the recognised words afterwards (pipeline/timeline.py, pipeline/stages/segment.py `_by_speaker`)."""

from __future__ import annotations

import numpy as np

from pipeline.clustering import cluster_speakers
from pipeline.records import AsrResult, Span, Word
from pipeline.stages.segment import _by_speaker, _Item
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


def _item(words: list[Word], start: float = 10.0, end: float = 16.0) -> _Item:
    clip = np.zeros(int((end - start) * 16000), np.float32)
    res = AsrResult(text=" ".join(w.word.strip() for w in words), words=words, confidence=0.9, language="en",
                    avg_logprob=-0.2, no_speech_prob=0.01, compression_ratio=1.2)
    return _Item(0, {"start": start, "end": end, "speaker": None, "audio_offset": 0, "num_samples": len(clip)}, clip,
                 result=res, padded_s=30.0, wall_s=2.0)


def test_a_segment_splits_where_its_words_change_speaker():
    words = [Word(" Hello", 0.2, 0.6, 0.9), Word(" there.", 0.7, 1.1, 0.8),
             Word(" Hi,", 2.4, 2.7, 0.7), Word(" you.", 2.8, 3.4, 0.5)]
    turns = [{"start": 10.0, "end": 12.0, "speaker": "spk1"}, {"start": 12.0, "end": 16.0, "speaker": "spk0"}]
    first, second = _by_speaker(_item(words), turns)
    assert (first.span["start"], first.span["end"], first.span["speaker"]) == (10.0, 11.1, "spk1")
    assert (second.span["start"], second.span["end"], second.span["speaker"]) == (12.4, 16.0, "spk0")
    assert first.result.text == "Hello there." and second.result.text == "Hi, you."
    assert [w.speaker for w in first.result.words] == ["spk1", "spk1"]
    # word times stay relative to the piece: 12.4 + 0.0 = 12.4 s on the original timeline
    assert second.result.words[0].start == 0.0 and abs(second.result.words[1].end - 1.0) < 1e-9
    assert abs(first.result.confidence - 0.85) < 1e-9 and abs(second.result.confidence - 0.6) < 1e-9
    assert first.padded_s + second.padded_s == 30.0  # the call's cost is shared, not counted twice
    only = _by_speaker(_item(words[:2]), turns)
    assert len(only) == 1 and only[0].span["speaker"] == "spk1" and only[0].span["end"] == 16.0


def test_a_segment_without_words_takes_the_speaker_it_overlaps_most():
    it = _item([])
    (one,) = _by_speaker(it, [{"start": 10.0, "end": 11.0, "speaker": "spk1"}, {"start": 11.0, "end": 16.0, "speaker": "spk0"}])
    assert one.span["speaker"] == "spk0"


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
