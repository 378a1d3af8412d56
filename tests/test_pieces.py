"""Long recordings as pieces (pipeline/pieces.py): decode's cut, the recording stage's clip, the
sink's join and its registry. The run through the public API is in tests/test_runner.py
(`test_a_recording_cut_into_pieces_is_one_recording_with_the_same_words`)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from pipeline.pieces import PieceRegistry, clip_to_core, cut, join
from pipeline.records import SAMPLE_RATE, Span

SR = SAMPLE_RATE


def _windows(x: np.ndarray, window_s: float = 30.0):
    n = int(window_s * SR)
    for i in range(0, len(x), n):
        yield x[i : i + n]


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * 0.1).astype(np.float32)


def test_pieces_hold_the_recordings_samples_and_their_cores_tile_it():
    x = _noise(250)
    pieces = list(cut(_windows(x), piece_s=60, overlap_s=8))
    assert [p.index for p in pieces] == [0, 1, 2, 3] and [p.last for p in pieces] == [False] * 3 + [True]
    assert pieces[0].core_start == 0.0 and pieces[-1].core_end == 250.0
    for a, b in zip(pieces, pieces[1:]):
        assert a.core_end == b.core_start  # no gap, no overlap between cores
    for p in pieces:
        samples = np.frombuffer(p.buffer, dtype="<f4")
        first = int(round(p.start * SR))
        assert np.array_equal(samples, x[first : first + len(samples)])
        assert p.start <= p.core_start and p.start + len(samples) / SR >= p.core_end  # it holds its core
        assert p.core_start - p.start <= 8.0 + 1e-6  # and at most the overlap before it


def test_a_boundary_falls_in_the_quietest_spot_near_its_target():
    x = _noise(150)
    x[int(63.0 * SR) : int(63.4 * SR)] = 0.0  # a pause 3 s after the 60 s mark, inside the 4 s search
    pieces = list(cut(_windows(x), piece_s=60, overlap_s=8))
    assert 63.0 <= pieces[0].core_end <= 63.4


def test_a_short_recording_is_one_whole_piece_in_the_decoders_own_buffer():
    x = _noise(65)
    (p,) = list(cut(_windows(x), piece_s=60, overlap_s=8))  # 65 <= 60 + 8: not cut
    assert p.index is None and p.row()["piece"] is None and isinstance(p.buffer, bytearray)
    assert np.array_equal(np.frombuffer(p.buffer, dtype="<f4"), x)
    (q,) = list(cut(_windows(_noise(300)), piece_s=0, overlap_s=8))  # 0: never cut
    assert q.index is None and q.core_end == 300.0


def _peak_while_cutting(minutes: int) -> tuple[int, int]:
    def windows():
        rng = np.random.default_rng(1)
        for _ in range(2 * minutes):  # 30 s windows, made as they are read: only `cut` may hold them
            yield (rng.standard_normal(30 * SR) * 0.1).astype(np.float32)

    tracemalloc.start()
    try:
        count = sum(1 for _ in cut(windows(), piece_s=60, overlap_s=8))
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_cutting_holds_about_one_piece_whatever_the_recordings_length():
    """20 and 40 min of audio through `cut` in 1 min pieces: the peak of what Python allocates is the
    same for both (a piece, the decoder's tail and a window), far below either recording."""
    count20, peak20 = _peak_while_cutting(20)
    count40, peak40 = _peak_while_cutting(40)
    assert (count20, count40) == (20, 40)
    assert peak40 < 1.1 * peak20, f"peak {peak20 / 1e6:.1f} MB for 20 min, {peak40 / 1e6:.1f} MB for 40 min"
    assert peak40 < 40 * 60 * SR * 4 / 5  # the 40 min recording is 154 MB of samples


def test_each_region_is_kept_by_one_piece_whole_where_both_see_it():
    # piece 1: audio from 52 s (8 s of lead-in), core [60, 123.5), audio to 131.5 (8 s past the core)
    row = {"piece": 1, "piece_start": 52.0, "core_start": 60.0, "core_end": 123.5}
    local = [  # seconds into the piece's audio; the core is [8, 71.5), the overlap 8 s
        Span(0.5, 7.95),  # before the core: the previous piece's
        Span(0.0, 9.5),  # runs in from the audio's edge: not seen whole, cut at the boundary
        Span(6.0, 9.0),  # across the boundary, larger part before it: the previous piece's
        Span(7.5, 10.0),  # across, larger part here: kept whole
        Span(7.0, 20.0),  # 12 s past the boundary, more than the overlap: cut at the boundary
        Span(30.0, 71.6),  # 41.5 s before the next boundary: cut there
        Span(70.0, 73.0),  # a tie across the next boundary: the earlier piece (this one) keeps it
        Span(71.0, 75.0),  # larger part in the next piece: its
        Span(71.52, 79.0),  # after the core
    ]
    kept = clip_to_core(local, row, audio_s=79.5)
    assert kept == [Span(8.0, 9.5), Span(7.5, 10.0), Span(8.0, 20.0), Span(30.0, 71.5), Span(70.0, 73.0)]
    # the next piece (audio from 115.5 s, core from 123.5 s) sees Span(71.0, 75.0) as (7.5, 11.5): its own
    nxt = {"piece": 2, "piece_start": 115.5, "core_start": 123.5, "core_end": 180.0}
    assert clip_to_core([Span(7.5, 11.5), Span(6.5, 9.5)], nxt, audio_s=64.5) == [Span(7.5, 11.5)]
    assert clip_to_core(local, {"piece": None}, audio_s=79.5) == local


def _piece(k: int, status: str = "ok", segments=(), **kw) -> dict:
    row = {
        "recording_id": "r",
        "uri": "u",
        "piece": k,
        "last_piece": False,
        "status": status,
        "error": None,
        "duration": 600.0,
        "speech_seconds": 300.0,
        "asr_wall_seconds": 10.0,
        "decode_peak_rss_mb": 100.0 + k,
        "num_speakers": 1,
        "punctuated": True,
        "vocabulary_hits": None,
        "segments": [
            {"segment_index": i, "start": s, "end": s + 2.0, "text": "a", "language": "en", "speaker": None}
            for i, s in enumerate(segments)
        ],
    }
    row.update(kw)
    return row


def test_join_makes_one_recording_row_in_time_order():
    rows = [
        _piece(1, segments=[700.0, 650.0]),
        _piece(0, segments=[10.0]),
        _piece(2, segments=[], status="no_speech", duration=42.0, last_piece=True, error="1 corrupt packet(s) skipped"),
    ]
    out = join(rows)
    assert out["piece"] is None and out["status"] == "ok"
    assert [s["start"] for s in out["segments"]] == [10.0, 650.0, 700.0]
    assert [s["segment_index"] for s in out["segments"]] == [0, 1, 2]
    assert out["duration"] == 1242.0 and out["asr_wall_seconds"] == 30.0 and out["decode_peak_rss_mb"] == 102.0
    assert out["language"] == "en" and out["error"] == "piece 2: 1 corrupt packet(s) skipped"


def test_a_failed_piece_fails_the_recording_and_says_which():
    rows = [_piece(0, segments=[10.0]), _piece(1, status="error", error="decode: storage gave up", last_piece=True)]
    out = join(rows)
    assert out["status"] == "error" and out["segments"] == []
    assert out["error"] == "piece 1: decode: storage gave up"


def test_the_registry_names_one_committer_per_recording_even_when_tasks_retry():
    reg = PieceRegistry()
    assert reg.add_piece("r", 2, last=True) is False  # the last piece arrives first
    assert reg.add_piece("r", 0, last=False) is False
    assert reg.add_piece("r", 1, last=False) is True  # piece 1 completes it: its task commits
    assert reg.add_piece("r", 1, last=False) is True  # that task retried: told again
    assert reg.add_piece("r", 0, last=False) is False and reg.add_piece("r", 2, last=True) is False  # the others: never
    assert reg.add_piece("s", 0, last=True) is True  # a one-piece answer completes at once


@pytest.mark.parametrize("piece_s, overlap_s", [(10, 6)])
def test_overlap_longer_than_half_a_piece_is_refused(piece_s, overlap_s):
    from pipeline.config import DecodeConfig

    with pytest.raises(ValueError, match="piece_overlap_s"):
        DecodeConfig(piece_s=piece_s, piece_overlap_s=overlap_s)


def _voice(direction: np.ndarray, spread: float, seed: int) -> list[float]:
    """The mean of 20 unit vectors scattered around `direction` (as a speaker's d-vectors are)."""
    rng = np.random.default_rng(seed)
    v = direction + spread * rng.standard_normal((20, len(direction)))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).mean(axis=0).tolist()


def test_stitch_gives_a_speaker_one_label_across_pieces():
    from pipeline.config import DiarizationConfig
    from pipeline.pieces import stitch

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(64), rng.standard_normal(64)  # two voices, far apart
    rows = [
        {
            "piece": 0,
            "voices": [
                {"speaker": "spk0", "seconds": 30, "embedding": _voice(b, 0.05, 1)},
                {"speaker": "spk1", "seconds": 20, "embedding": _voice(a, 0.05, 2)},
            ],
        },
        # piece 1 was told num_speakers=2 but holds speaker b alone: it split b in two
        {
            "piece": 1,
            "voices": [
                {"speaker": "spk0", "seconds": 25, "embedding": _voice(b, 0.05, 3)},
                {"speaker": "spk1", "seconds": 5, "embedding": _voice(b, 0.05, 4)},
            ],
            "segments": [{"speaker": "spk2", "words": []}],
        },  # a label without a voice
        {"piece": 2, "voices": [{"speaker": "spk0", "seconds": 30, "embedding": _voice(a, 0.05, 5)}]},
    ]
    m = stitch(rows, DiarizationConfig(enabled=True))
    assert m[(0, "spk0")] == m[(1, "spk0")] == m[(1, "spk1")] == "spk0"  # b, numbered first as it speaks first
    assert m[(0, "spk1")] == m[(2, "spk0")] == "spk1"
    assert m[(1, "spk2")] == "spk0"  # no voice: the most heard speaker (b, 60 s; a, 50 s)
    fixed = stitch(rows, DiarizationConfig(enabled=True, num_speakers=3))
    assert len(set(fixed.values())) == 3
