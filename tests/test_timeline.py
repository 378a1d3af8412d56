"""The timeline (pipeline/timeline.py): utterances follow VAD and length only, so speakers never cost
words; diarization's turns are given to the recognised words afterwards (the split itself:
tests/test_packing.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import SegmentationConfig
from pipeline.records import Span
from pipeline.timeline import MIN_RUN_S, MIN_RUN_WORDS, TURN_PAUSE_S, outside, speaker_at, speaker_runs, utterances

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


# -- no confetti: the rules `speaker_runs` keeps (pipeline/timeline.py) ---------------------------------


def _runs(words, turns):
    return [(who, idx) for who, idx in speaker_runs(words, turns)]


def test_a_word_of_no_duration_is_never_a_segment_of_its_own():
    # the demo call's "12.00-12.00 spk1 'I'": one zero-length word that the turns give to another speaker
    words = [(11.14, 11.28), (11.28, 11.5), (11.64, 11.8), (11.8, 11.88), (12.0, 12.0), (12.0, 12.14), (12.14, 12.26)]
    turns = [Span(10.0, 11.95, "spk0"), Span(11.95, 12.05, "spk1"), Span(12.05, 14.0, "spk0")]
    assert [speaker_at(a, b, turns) for a, b in words].count("spk1") == 1  # the turns alone would split it
    assert _runs(words, turns) == [("spk0", list(range(7)))]
    # even between pauses (a "whole utterance" of no duration) it joins a neighbour
    words = [(0.0, 0.5), (0.6, 1.0), (1.5, 1.5), (2.0, 2.4), (2.5, 3.0)]
    turns = [Span(0.0, 1.3, "spk0"), Span(1.3, 1.8, "spk1"), Span(1.8, 3.0, "spk0")]
    assert speaker_at(1.5, 1.5, turns) == "spk1"
    assert _runs(words, turns) == [("spk0", [0, 1, 2, 3, 4])]


def test_a_change_of_speaker_without_a_pause_needs_a_minimum_run():
    # "you know," (0.24 s, two words, 0.12-0.14 s from its neighbours): the diarizer's blur, not a turn
    words = [(10.9, 10.98), (11.14, 11.28), (11.28, 11.5), (11.64, 11.8), (11.8, 11.88), (12.0, 12.14), (12.14, 12.3)]
    turns = [Span(10.0, 11.6, "spk0"), Span(11.6, 11.9, "spk1"), Span(11.9, 14.0, "spk0")]
    assert _runs(words, turns) == [("spk0", list(range(7)))]
    # the same words over 0.6 s with no pause around them: a run long enough to be a turn
    words2 = [(10.9, 10.98), (11.14, 11.28), (11.28, 11.5), (11.6, 11.9), (11.9, 12.2), (12.3, 12.6), (12.6, 13.0)]
    turns2 = [Span(10.0, 11.55, "spk0"), Span(11.55, 12.25, "spk1"), Span(12.25, 14.0, "spk0")]
    assert _runs(words2, turns2) == [("spk0", [0, 1, 2]), ("spk1", [3, 4]), ("spk0", [5, 6])]
    # one word of 0.6 s is not a turn either without a pause on both sides
    words3 = [(0.0, 0.4), (0.45, 0.8), (0.85, 1.45), (1.5, 1.9), (1.95, 2.3)]
    turns3 = [Span(0.0, 0.82, "spk0"), Span(0.82, 1.48, "spk1"), Span(1.48, 3.0, "spk0")]
    assert len(_runs(words3, turns3)) == 1


def test_a_short_run_between_pauses_is_a_whole_utterance_and_stays():
    # a 0.25 s backchannel ("yeah") with pauses of 0.4 s on both sides: kept as its speaker's turn
    words = [(0.0, 0.4), (0.5, 1.0), (1.4, 1.65), (2.05, 2.5), (2.6, 3.0)]
    turns = [Span(0.0, 1.2, "spk0"), Span(1.2, 1.85, "spk1"), Span(1.85, 3.0, "spk0")]
    assert _runs(words, turns) == [("spk0", [0, 1]), ("spk1", [2]), ("spk0", [3, 4])]
    # with the pause on one side only it is a fragment, not an utterance: it joins the side it touches
    words = [(0.0, 0.4), (0.5, 1.0), (1.4, 1.65), (1.7, 2.5), (2.6, 3.0)]
    assert _runs(words, turns) == [("spk0", [0, 1, 2, 3, 4])]


def test_a_change_inside_a_phrase_moves_to_the_nearest_pause():
    # the demo call's end: "... down here. | So I" then "don't hear that ...", the diarizer's change
    # between "I" and "don't" (no gap) moves to the 0.24 s pause before "So"
    words = [
        (26.68, 26.98),
        (26.98, 27.26),
        (27.5, 27.58),
        (27.58, 28.0),
        (28.0, 28.68),
        (28.68, 28.84),
        (28.84, 29.06),
    ]
    turns = [Span(22.0, 28.0, "spk1"), Span(28.0, 30.0, "spk0")]
    assert _runs(words, turns) == [("spk1", [0, 1]), ("spk0", [2, 3, 4, 5, 6])]
    # a pause farther than SNAP_S away is not taken: the change stays where the turns put it
    words = [(25.0, 25.5), (26.0, 26.4), (26.4, 26.9), (26.9, 27.4), (27.4, 28.0), (28.0, 28.68), (28.68, 29.2)]
    assert _runs(words, turns) == [("spk1", [0, 1, 2, 3, 4]), ("spk0", [5, 6])]


@pytest.mark.parametrize("seed", range(40))
def test_no_split_leaves_confetti(seed):
    """Random words (gaps 0-0.6 s, some of no duration) under random turns (0.2-3 s): every run
    lasts longer than zero and is either a turn (MIN_RUN_WORDS words over MIN_RUN_S) or a whole
    utterance (pauses or the segment's edges on both sides); the runs tile the words in order."""
    rng = np.random.default_rng(seed)
    t, words = 0.0, []
    for _ in range(int(rng.integers(3, 40))):
        t += float(rng.choice([0.0, 0.05, 0.1, 0.3, 0.6]))
        d = 0.0 if rng.random() < 0.1 else float(rng.uniform(0.05, 0.6))
        words.append((round(t, 3), round(t + d, 3)))
        t += d
    turns, s = [], 0.0
    while s < t + 1:
        e = s + float(rng.uniform(0.2, 3.0))
        turns.append(Span(s, e, f"spk{int(rng.integers(0, 3))}"))
        s = e
    runs = speaker_runs(words, turns)
    assert [i for _, idx in runs for i in idx] == list(range(len(words)))
    assert all(a[0] != b[0] for a, b in zip(runs, runs[1:]))
    if len(runs) == 1:
        return
    for who, idx in runs:
        first, last = idx[0], idx[-1]
        duration = words[last][1] - words[first][0]
        assert duration > 0, (who, idx, words)
        before = first == 0 or words[first][0] - words[first - 1][1] >= TURN_PAUSE_S
        after = last == len(words) - 1 or words[last + 1][0] - words[last][1] >= TURN_PAUSE_S
        assert (duration >= MIN_RUN_S and len(idx) >= MIN_RUN_WORDS) or (before and after), (who, idx, words)


def test_split_pieces_never_have_zero_duration():
    """Through the packing API that writes segments (pipeline/packing.py `by_speaker`)."""
    from pipeline.packing import Utterance, by_speaker
    from pipeline.records import AsrResult, Word

    times = [(0.2, 0.6), (0.7, 1.1), (2.0, 2.0), (2.0, 2.3), (2.3, 2.9), (3.3, 3.5), (3.9, 4.6), (4.6, 5.2)]
    words = [Word(f" w{k}", a, b, 0.9) for k, (a, b) in enumerate(times)]
    res = AsrResult(text=" ".join(w.word for w in words), words=words, confidence=0.9, language="en")
    it = Utterance(0, {"start": 10.0, "end": 16.0, "speaker": None}, np.zeros(6 * 16000, np.float32), result=res)
    turns = [
        {"start": 10.0, "end": 11.95, "speaker": "spk0"},
        {"start": 11.95, "end": 12.05, "speaker": "spk1"},
        {"start": 12.05, "end": 13.7, "speaker": "spk0"},
        {"start": 13.7, "end": 16.0, "speaker": "spk1"},
    ]
    pieces = by_speaker(it, turns)
    assert [p.span["speaker"] for p in pieces] == ["spk0", "spk1"]
    assert all(p.span["end"] - p.span["start"] >= 0.3 for p in pieces)
    assert pieces[0].span["start"] == 10.0 and pieces[-1].span["end"] == 16.0


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


def test_outside_keeps_the_parts_no_other_span_covers():
    """What a sensitive VAD pass adds beside the VAD's regions (recording stage `diarizer_regions`)."""
    vad = [Span(1.0, 2.0), Span(3.0, 4.0), Span(9.5, 12.0)]
    assert outside(Span(0.0, 10.0), vad) == [Span(0.0, 1.0), Span(2.0, 3.0), Span(4.0, 9.5)]
    assert outside(Span(1.2, 1.8), vad) == []  # inside a region: nothing new
    assert outside(Span(2.0, 3.03), vad) == [Span(2.0, 3.0)] and outside(Span(2.98, 3.5), vad) == []  # slivers go
    assert outside(Span(5.0, 6.0), []) == [Span(5.0, 6.0)]
