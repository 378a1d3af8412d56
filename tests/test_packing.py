"""Window packing without a model (pipeline/packing.py): utterances into shared windows, the window's
words back to each utterance, a window cut where its language changes, a segment split by speaker."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.packing import Utterance, by_speaker, compression_ratio, pack, retry
from pipeline.records import AsrResult, LanguageSwitch, Word

SR = 16000


def _utts(durations: list[float], row: int = 0) -> list[Utterance]:
    out, t = [], 0.0
    for d in durations:
        out.append(Utterance(row, {"start": t, "end": t + d, "speaker": None}, np.zeros(int(d * SR), np.float32)))
        t += d + 1.0
    return out


def test_pack_follows_its_mode():
    utts = _utts([5.0, 6.0, 25.0]) + _utts([4.0], row=1)
    langs = ["en"] * 4
    assert [len(w.items) for w in pack(utts, langs, None, "recording", 0.5)] == [1, 1, 1, 1]  # no window: alone
    assert [len(w.items) for w in pack(utts, langs, 30.0, "none", 0.5)] == [1, 1, 1, 1]
    rec = pack(utts, langs, 30.0, "recording", 0.5)
    assert [[it.duration for it in w.items] for w in rec] == [[5.0, 6.0], [25.0], [4.0]]  # never across recordings
    assert rec[0].parts == [(0.0, 5.0), (5.5, 11.5)] and rec[0].duration == 11.5
    corpus = pack(utts, langs, 30.0, "corpus", 0.5)  # first-fit decreasing, any recording
    assert [[it.duration for it in w.items] for w in corpus] == [[25.0, 4.0], [6.0, 5.0]]
    mixed = pack(_utts([2.0, 2.0, 2.0]), ["en", "de", "de"], 30.0, "recording", 0.5)
    assert [(w.language, len(w.items)) for w in mixed] == [("en", 1), ("de", 2)]  # a language change closes a window


def test_split_gives_each_utterance_the_words_in_its_half_of_the_gaps():
    (w,) = pack(_utts([4.0, 3.0]), [None, None], 30.0, "recording", 1.0)  # 4 s at 0 | gap | 3 s at 5
    words = [Word(f"w{k}", k + 0.1, k + 0.6, 0.9) for k in range(8)]
    w.split(AsrResult(" ".join(x.word for x in words), words, 0.9, language="en", avg_logprob=-0.1))
    a, b = (it.result for it in w.items)
    assert a.text == "w0 w1 w2 w3 w4" and b.text == "w5 w6 w7"  # w4 (4.1-4.6) is left of the midpoint 4.5
    assert b.words[0].start == 0.1 and b.words[-1].end == 2.6  # clip-relative again
    assert a.words[-1].end == 4.0  # clamped to its own clip
    assert a.language == "en" and a.avg_logprob == -0.1 and a.compression_ratio == compression_ratio(a.text)


def test_skipped_names_the_packed_utterances_the_model_passed_over():
    (w,) = pack(_utts([4.0, 3.0, 1.0]), [None] * 3, 30.0, "recording", 0.5)  # 4 s | 3 s | 1 s
    words = [Word(f"word{k}", k + 0.1, k + 0.6, 0.9) for k in range(4)]  # speech in the first part only
    w.split(AsrResult(" ".join(x.word for x in words), words, 0.9, language="en"))
    assert w.skipped(3.0) == [w.items[1]]  # 0 characters in 3 s; the 1 s one is too short to tell
    assert w.skipped(0.0) == []  # off
    (alone,) = w.alone()[1:2]
    alone.split(AsrResult("", [], 0.0, language="en"))
    assert alone.skipped(3.0) == []  # an utterance alone is what a retry is: never sent again


def test_skipped_utterances_are_packed_again_once_then_sent_alone():
    a, b, c = _utts([4.0, 3.0, 5.0])
    (w,) = retry([(a, "en"), (b, "en")], 30.0, 0.5)  # the first time: packed among themselves
    assert w.items == [a, b] and w.language == "en" and a.retried == b.retried == 1
    again = retry([(b, "en"), (c, "de")], 30.0, 0.5)  # b skipped twice: alone; c's first time
    assert [(x.items, x.language) for x in again] == [([b], "en"), ([c], "de")]
    assert b.retried == 2 and c.retried == 1


def test_cut_splits_a_window_where_the_language_changes():
    (w,) = pack(_utts([2.0, 2.0, 2.0]), [None] * 3, 30.0, "recording", 0.5)
    pieces = w.cut(LanguageSwitch([("en", 0.9), ("de", 0.8), ("de", 0.7)]), 0.5)
    assert [[it.duration for it in p.items] for p in pieces] == [[2.0], [2.0, 2.0]]
    assert [len(x.items) for x in w.alone()] == [1, 1, 1]


def _item(words: list[Word], start: float = 10.0, end: float = 16.0) -> Utterance:
    clip = np.zeros(int((end - start) * 16000), np.float32)
    res = AsrResult(
        text=" ".join(w.word.strip() for w in words),
        words=words,
        confidence=0.9,
        language="en",
        avg_logprob=-0.2,
        no_speech_prob=0.01,
        compression_ratio=1.2,
    )
    return Utterance(
        0,
        {"start": start, "end": end, "speaker": None, "audio_offset": 0, "num_samples": len(clip)},
        clip,
        result=res,
        padded_s=30.0,
        wall_s=2.0,
    )


def test_a_segment_splits_where_its_words_change_speaker():
    words = [
        Word(" Hello", 0.2, 0.6, 0.9),
        Word(" there.", 0.7, 1.1, 0.8),
        Word(" Hi,", 2.4, 2.7, 0.7),
        Word(" you.", 2.8, 3.4, 0.5),
    ]
    turns = [{"start": 10.0, "end": 12.0, "speaker": "spk1"}, {"start": 12.0, "end": 16.0, "speaker": "spk0"}]
    first, second = by_speaker(_item(words), turns)
    assert (first.span["start"], first.span["end"], first.span["speaker"]) == (10.0, 11.1, "spk1")
    assert (second.span["start"], second.span["end"], second.span["speaker"]) == (12.4, 16.0, "spk0")
    assert first.result.text == "Hello there." and second.result.text == "Hi, you."
    assert [w.speaker for w in first.result.words] == ["spk1", "spk1"]
    # word times stay relative to the piece: 12.4 + 0.0 = 12.4 s on the original timeline
    assert second.result.words[0].start == 0.0 and abs(second.result.words[1].end - 1.0) < 1e-9
    assert abs(first.result.confidence - 0.85) < 1e-9 and abs(second.result.confidence - 0.6) < 1e-9
    assert first.padded_s + second.padded_s == 30.0  # the call's cost is shared, not counted twice
    only = by_speaker(_item(words[:2]), turns)
    assert len(only) == 1 and only[0].span["speaker"] == "spk1" and only[0].span["end"] == 16.0


def test_a_segment_without_words_takes_the_speaker_it_overlaps_most():
    it = _item([])
    (one,) = by_speaker(
        it, [{"start": 10.0, "end": 11.0, "speaker": "spk1"}, {"start": 11.0, "end": 16.0, "speaker": "spk0"}]
    )
    assert one.span["speaker"] == "spk0"


def _speech(seconds: float, pauses: list[float] = (), seed: int = 0) -> np.ndarray:
    """Noise 'speech' with 300 ms of near-silence centred at each of `pauses` (seconds)."""
    clip = np.random.default_rng(seed).normal(0, 0.1, int(seconds * SR)).astype(np.float32)
    for p in pauses:
        clip[int((p - 0.15) * SR) : int((p + 0.15) * SR)] *= 0.01
    return clip


def test_filling_cuts_an_utterance_at_a_pause_and_joins_its_words_back():
    first = Utterance(0, {"start": 0.0, "end": 20.0, "speaker": None}, _speech(20.0))
    second = Utterance(0, {"start": 21.0, "end": 41.0, "speaker": None}, _speech(20.0, pauses=[4.0, 8.0]))
    windows = pack([first, second], ["en", "en"], 30.0, "recording", 0.5, min_piece_s=3.0)
    # room left after the first: 30 - 20 - 0.5 = 9.5 s; the pause nearest the room's end is at 8 s
    assert [len(w.items) for w in windows] == [2, 1] and second.pieces == [windows[0].items[1], windows[1].items[0]]
    cut = second.pieces[1].offset_s
    assert 7.85 <= cut <= 8.15 and abs(second.pieces[0].duration - cut) < 1e-9  # inside the pause
    # each window says a word per second of its own audio; the pieces' words go back onto the whole
    for w in windows:
        words = [Word(f"w{k}", k + 0.1, k + 0.6, 0.9) for k in range(int(w.duration))]
        w.split(
            AsrResult(" ".join(x.word for x in words), words, 0.9, language="en", avg_logprob=-0.2, no_speech_prob=0.1)
        )
    second.join_pieces()
    words = second.result.words
    assert len(words) == 8 + int(20.0 - cut)  # w20..w27 of window 1, then every word of window 2
    assert second.result.text.split()[7:9] == ["w27", "w0"]
    assert words[8].start == round(cut + 0.1, 3)  # back on the utterance's own clip
    assert all(0 <= a.start <= a.end <= b.start for a, b in zip(words, words[1:])) and words[-1].end <= 20.0
    assert second.result.avg_logprob == -0.2 and second.result.language == "en" and first.pieces == []


def test_no_cut_without_a_pause_or_room():
    first = Utterance(0, {"start": 0.0, "end": 20.0, "speaker": None}, _speech(20.0))
    flat = Utterance(0, {"start": 21.0, "end": 41.0, "speaker": None}, _speech(20.0, seed=1))  # no pause
    assert [len(w.items) for w in pack([first, flat], ["en", "en"], 30.0, "recording", 0.5, 3.0)] == [1, 1]
    assert flat.pieces == []
    big = Utterance(0, {"start": 0.0, "end": 28.0, "speaker": None}, _speech(28.0))
    late = Utterance(0, {"start": 29.0, "end": 39.0, "speaker": None}, _speech(10.0, pauses=[1.0]))
    assert [len(w.items) for w in pack([big, late], ["en", "en"], 30.0, "recording", 0.5, 3.0)] == [1, 1]  # 1.5 s room


def test_filling_cuts_at_the_pauses_vad_heard_not_at_the_quietest_frame():
    """With `span["pauses"]` (the recording stage's VAD pauses, recording timeline) the cut is the
    latest of them that fits the room, even where the signal has no quiet frame; none fits: no cut."""
    first = Utterance(0, {"start": 0.0, "end": 20.0, "speaker": None, "pauses": None}, _speech(20.0))
    flat = _speech(20.0, seed=1)  # no quiet frame anywhere: `pause_at` would not cut it
    second = Utterance(0, {"start": 21.0, "end": 41.0, "speaker": None, "pauses": [24.5, 27.25, 40.0]}, flat)
    windows = pack([first, second], ["en", "en"], 30.0, "recording", 0.5, min_piece_s=3.0)
    assert [len(w.items) for w in windows] == [2, 1]
    assert second.pieces[1].offset_s == pytest.approx(6.25, abs=1e-3)  # 27.25 s; 40.0 leaves < 3 s after it
    none_fits = Utterance(0, {"start": 21.0, "end": 41.0, "speaker": None, "pauses": [39.0]}, flat)
    assert [len(w.items) for w in pack([first, none_fits], ["en", "en"], 30.0, "recording", 0.5, 3.0)] == [1, 1]
