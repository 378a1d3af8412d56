"""The timeline (pipeline/timeline.py): utterances follow VAD and length only, so speakers never cost
words; diarization's turns are given to the recognised words afterwards (the split itself:
tests/test_packing.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import SegmentationConfig
from pipeline.records import Span
from pipeline.timeline import speaker_at, speaker_runs, utterances

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


def test_utterances_ignore_speakers():
    regions = [Span(0.0, 4.0), Span(4.5, 7.0)]
    spans = utterances(regions, SegmentationConfig(merge_gap_s=1.0))
    assert [(s.start, s.end) for s in spans] == [(0.0, 7.0)]  # one utterance, whoever speaks in it


def test_utterances_respect_max_length_and_split_at_the_quietest_moment():
    cfg = SegmentationConfig(max_segment_s=10, min_segment_s=0.3, merge_gap_s=1.0)
    regions = [Span(0.0, 4.0), Span(4.5, 30.0), Span(31.0, 31.1)]
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, 40 * 16000).astype(np.float32)
    audio[int(12.0 * 16000) : int(12.1 * 16000)] = 0  # a quiet moment to split at
    out = utterances(regions, cfg, audio)
    assert all(s.duration <= 10.0 + 1e-6 for s in out)
    assert all(s.duration >= 0.3 for s in out)  # the 0.1 s blip is dropped
    assert [s.start for s in out] == sorted(s.start for s in out)
    assert (out[0].start, out[0].end) == (0.0, 4.0)  # merging it with the next region would not fit
    long = out[1:]  # 4.5-30.0 in pieces that tile it, the first cut in the quiet moment
    assert long[0].start == 4.5 and long[-1].end == 30.0 and all(a.end == b.start for a, b in zip(long, long[1:]))
    assert long[0].end == 12.05


def test_pauses_are_the_gaps_of_the_fine_vad_inside_the_coarse_regions():
    from pipeline.timeline import pauses_inside

    fine = [Span(1.0, 2.0), Span(2.2, 3.0), Span(3.5, 5.0), Span(9.0, 10.0)]
    regions = [Span(0.9, 5.1), Span(8.9, 10.1)]
    assert pauses_inside(fine, regions) == [2.1, 3.25]  # 7.0 lies between the regions: not a pause inside one


def test_silero_pauses_fall_inside_speech_and_in_quiet_moments(corpus):
    """On the corpus lecture: Silero's 160 ms pauses lie inside its speech regions, and each is far
    quieter than the speech around it (the frame there against its region's median frame)."""
    from pipeline.backends.silero import SileroVad
    from pipeline.config import VadConfig
    from tests.helpers import load_audio

    audio = load_audio(corpus / "speech" / "silerovad_test.wav")
    vad = SileroVad(VadConfig())
    regions = vad.speech_regions(audio)
    pauses = vad.pauses(audio, regions)
    assert len(pauses) >= 5
    frame = 1600  # 100 ms
    energy = (audio[: len(audio) // frame * frame].astype(np.float64).reshape(-1, frame) ** 2).mean(axis=1)
    quiet = 0
    for p in pauses:
        region = next(r for r in regions if r.start < p < r.end)
        inside = energy[int(region.start * 10) : int(region.end * 10)]
        quiet += energy[int(p * 10)] < 0.1 * np.median(inside)
    assert quiet >= 0.8 * len(pauses)


def test_silero_in_blocks_finds_the_speech_it_finds_in_one_pass(corpus, monkeypatch):
    """Long audio goes through Silero in blocks (`_BLOCK_S`, bounded memory): a region cut by a
    block's end is joined back, so the corpus lecture three times over (blocks end mid-speech)
    gives the speech one pass over the whole gives."""
    import pipeline.backends.silero as silero
    from pipeline.config import VadConfig
    from tests.helpers import load_audio

    audio = np.tile(load_audio(corpus / "speech" / "silerovad_test.wav"), 3)
    vad = silero.SileroVad(VadConfig())
    monkeypatch.setattr(silero, "_BLOCK_S", len(audio) / 16000 / 3.3)  # 4 blocks, ends mid-lecture
    blocks = vad.speech_regions(audio)
    monkeypatch.setattr(silero, "_BLOCK_S", 1e9)
    whole = vad.speech_regions(audio)
    assert len(blocks) == len(whole)  # no region split where a block ended
    assert sum(r.end - r.start for r in blocks) == pytest.approx(sum(r.end - r.start for r in whole), rel=0.02)
    assert all(b.start >= a.end for a, b in zip(blocks, blocks[1:]))  # joined, not overlapping


# -- overlapped speech (model-free rule: pipeline/timeline.py overlapped_speech) -----------------


def _activity() -> np.ndarray:
    """10 ms frames over 2 s: A talks 0.0-1.2 s, B 1.0-2.0 s (0.2 s of overlap), C only 1.5-1.7 s
    under B (never the dominant speaker), and A once for one frame at 1.9 s (blur, not a voice)."""
    p = np.zeros((200, 3))
    p[:120, 0] = 0.9
    p[100:, 1] = 0.95
    p[150:170, 2] = 0.6
    p[190, 0] = 0.7
    return p


def test_overlap_is_where_two_speakers_are_active_and_names_match_the_turns():
    from pipeline.timeline import exclusive_turns, turns_and_overlaps

    probs, regions = _activity(), [Span(0.0, 2.0)]
    turns, overlaps = turns_and_overlaps(probs, 0.01, regions)
    assert turns == exclusive_turns(probs, 0.01, regions)  # the exclusive turns do not change
    assert [(t.start, t.end, t.speaker) for t in turns] == [(0.0, 1.0, "spk0"), (1.0, 2.0, "spk1")]
    # A+B at 1.0-1.2, B+C at 1.5-1.7; the single frame at 1.9 s is shorter than min_overlap_s
    assert [(o.start, o.end, o.speakers) for o in overlaps] == [
        (1.0, 1.2, ("spk0", "spk1")),
        (1.5, 1.7, ("spk1", "spk2")),
    ]  # C, only heard under B, is named after A, B


def test_overlap_bridges_short_gaps_stays_in_regions_and_takes_names():
    from pipeline.timeline import overlapped_speech

    p = np.zeros((100, 2))
    p[:, 0] = 0.9
    p[20:40, 1] = 0.9
    p[45:60, 1] = 0.9  # a 50 ms dip in B's activity: one overlap, 0.2-0.6 s
    assert [(o.start, o.end) for o in overlapped_speech(p, 0.01, [Span(0.0, 1.0)])] == [(0.2, 0.6)]
    # clipped to the VAD regions; outside speech there is no overlap
    assert [
        (o.start, o.end, o.speakers) for o in overlapped_speech(p, 0.01, [Span(0.3, 0.5)], names=["ch0", "ch1"])
    ] == [(0.3, 0.5, ("ch0", "ch1"))]
    assert overlapped_speech(p, 0.01, [Span(0.7, 1.0)]) == []
    assert overlapped_speech(p[:, :1], 0.01, [Span(0.0, 1.0)]) == []  # one speaker column: never overlap


def test_words_in_overlap_by_the_larger_share_and_unknown_stays_unknown():
    from pipeline.records import Overlap
    from pipeline.timeline import overlap_seconds, word_in_overlap

    ov = [Overlap(1.0, 1.2, ("spk0", "spk1")), {"start": 3.0, "end": 4.0, "speakers": ["spk1", "spk2"]}]
    assert word_in_overlap(1.05, 1.15, ov) is True
    assert word_in_overlap(1.1, 1.5, ov) is False  # 0.1 of 0.4 s
    assert word_in_overlap(0.9, 1.1, ov) is True  # half of it: the larger-share rule, ties go to overlap
    assert word_in_overlap(3.5, 3.5, ov) is True and word_in_overlap(2.0, 2.0, ov) is False
    assert word_in_overlap(2.0, 2.5, []) is False  # the backend can tell, and there is none
    assert word_in_overlap(1.05, 1.15, None) is None  # the backend cannot tell: unknown, not False
    assert overlap_seconds(0.0, 5.0, ov) == 1.2 and overlap_seconds(0.0, 5.0, []) == 0.0
    assert overlap_seconds(0.0, 5.0, None) is None
