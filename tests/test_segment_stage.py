"""The segment stage with fake backends: bucketing, regrouping, failure isolation, window packing."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pyarrow as pa

from pipeline.backends.base import AsrCapabilities, ContractError, FusedLid
from pipeline.config import load_config
from pipeline.records import SEGMENTED_SCHEMA, TRANSCRIBED_SCHEMA, AsrResult, LanguageSwitch, Word
from pipeline.stages.segment import SegmentStage

SR = 16000


class FakeAsr:
    """Says 'w<k>' for each second of a clip; a clip of exactly 3.3 s makes the model raise."""

    capabilities = AsrCapabilities(
        window_s=30.0, one_language_per_call=True, detects_language=True, native_punctuation=True
    )

    def __init__(self):
        self.calls: list[int] = []
        self.lid_calls: list[tuple[tuple[float, ...], float | None]] = []

    def model_id(self):
        return "fake"

    def set_vocabulary(self, vocabulary):
        return ["fake: no boosting"]

    def padded_seconds(self, durations):
        return 30.0 * len(durations)

    def identify(self, clips, probe_s=None):
        self.lid_calls.append((tuple(len(c) / SR for c in clips), probe_s))
        return [("de" if float(c[0]) > 0.5 else "en", 0.9) for c in clips]

    def transcribe(self, clips, languages, parts=None):
        """Fused LID as WhisperAsr does it: a window whose packed parts start at different 'languages'
        (sample level) gets the closer `identify` check, then comes back as a LanguageSwitch."""
        self.calls.append(len(clips))
        out = []
        for c, lang, spans in zip(clips, languages, parts or [None] * len(clips)):
            if lang is None and spans and len(spans) > 1:
                found = {"de" if float(c[int(a * SR)]) > 0.5 else "en" for a, _ in spans}
                if len(found) > 1:
                    votes = self.identify([c[int(a * SR) : int(b * SR)] for a, b in spans], probe_s=4.0)
                    out.append(LanguageSwitch(votes))
                    continue
            dur = len(c) / SR
            if abs(dur - 3.3) < 1e-3:
                raise RuntimeError("model exploded")
            words = [Word(f"w{k}", k + 0.1, k + 0.6, 0.9) for k in range(int(dur))]
            detected = "de" if float(c[0]) > 0.5 else "en"  # fused LID: read from the window's own start
            out.append(
                AsrResult(" ".join(w.word for w in words), words, 0.9, language=lang or detected, language_prob=0.8)
            )
        return out


def _stage(*overrides: str, lid: str = "fused") -> tuple[SegmentStage, FakeAsr]:
    """The stage built from fake backends. `lid`: "fused" (the ASR reads languages itself), "asr"
    (the ASR model answers a separate identify pass, as with corpus packing) or "own" (another model)."""
    # the fake says ~3 characters a second, which the skipped-segment check would send again alone;
    # that check has its own test (test_a_packed_segment_the_model_skipped_is_transcribed_again_alone)
    # and calls of up to 16 windows (a GPU's size; conf/local.yaml's CPU calls take 2), so that pooling shows
    cfg = load_config(
        "conf/local.yaml",
        [
            "input.uri=/i",
            "output.uri=/o",
            "segment_stage.packing.retry_below_cps=0",
            "segment_stage.batching.max_padded_s=480",
            "segment_stage.batching.max_items=16",
            *overrides,
        ],
    ).segment_stage
    fake = FakeAsr()
    lid_backend = {"fused": FusedLid(fake), "asr": fake, "own": FakeAsr()}[lid]
    return SegmentStage(cfg, fake, lid_backend), fake


def _batch(durations_per_recording: list[list[float]], level: float = 0.1, levels: dict | None = None) -> pa.Table:
    """Recordings of silence-free 'speech' segments; `levels[(r, k)]` sets segment k's sample value
    (the fakes call a segment starting above 0.5 German)."""
    rows = []
    for r, durs in enumerate(durations_per_recording):
        total = sum(durs) + len(durs) + 1
        audio = np.concatenate(
            [np.full(int(d * SR), (levels or {}).get((r, k), level), dtype="<f4") for k, d in enumerate(durs)]
        )
        spans, t, offset = [], 0.5, 0
        for d in durs:
            spans.append(
                {"start": t, "end": t + d, "speaker": None, "audio_offset": offset, "num_samples": int(d * SR)}
            )
            t += d + 1.0
            offset += int(d * SR)
        rows.append(
            {
                "recording_id": f"r{r}",
                "uri": f"/a/{r}.wav",
                "size": 1,
                "etag": None,
                "mtime": None,
                "duration": total,
                "models": "vad=fake",
                "source_sample_rate": SR,
                "source_channels": 1,
                "status": "ok",
                "error": None,
                "audio": audio.tobytes(),
                "spans": spans,
                "num_speakers": 1,
                "speech_seconds": sum(durs),
                "recording_wall_seconds": 0.0,
                "recording_peak_rss_mb": 0.0,
            }
        )
    return pa.Table.from_pylist(rows, schema=SEGMENTED_SCHEMA)


def test_one_failing_segment_fails_only_its_recording():
    stage, fake = _stage("segment_stage.packing.mode=none")
    out = stage(_batch([[2.0, 5.0], [3.3], [4.0]])).to_pylist()
    assert [r["status"] for r in out] == ["ok", "error", "ok"]
    assert "model exploded" in out[1]["error"] and out[1]["segments"] == []
    assert [s["text"] for s in out[0]["segments"]] == ["w0 w1", "w0 w1 w2 w3 w4"]
    assert out[0]["segments"][1]["words"][0]["start"] == 3.5 + 0.1  # clip time -> recording time (span 3.5-8.5)
    assert pa.Table.from_pylist(out, schema=TRANSCRIBED_SCHEMA).num_rows == 3


def test_bucketing_pools_recordings_and_restores_order():
    stage, fake = _stage("segment_stage.batching.max_items=4", "segment_stage.packing.mode=none")
    out = stage(_batch([[1.5, 9.0, 4.0], [8.0], [2.0, 6.0]])).to_pylist()
    assert fake.calls == [4, 2]  # 6 segments from 3 recordings pooled into 2 calls
    assert [[s["segment_index"] for s in r["segments"]] for r in out] == [[0, 1, 2], [0], [0, 1]]
    assert all(s["start"] < s["end"] for r in out for s in r["segments"])
    assert abs(sum(r["asr_padded_seconds"] for r in out) - 6 * 30.0) < 1e-6


def test_packing_shares_windows_and_gives_each_segment_its_own_words():
    stage, fake = _stage("segment_stage.packing.mode=corpus", "segment_stage.packing.gap_s=1.0", lid="asr")
    out = stage(_batch([[2.0, 3.0], [4.0]])).to_pylist()
    assert fake.calls == [1]  # 9 s of speech in one 30 s window
    texts = [[s["text"] for s in r["segments"]] for r in out]
    # packed layout (longest first): 4.0 s at 0 | gap | 3.0 s at 5 | gap | 2.0 s at 9; the fake says
    # "w<k>" at second k of the window; a word in a gap goes to the nearer segment
    assert texts == [["w9 w10", "w5 w6 w7 w8"], ["w0 w1 w2 w3 w4"]]
    for r in out:
        for s in r["segments"]:
            assert all(s["start"] <= w["start"] <= w["end"] <= s["end"] for w in s["words"])
    assert abs(sum(r["asr_padded_seconds"] for r in out) - 30.0) < 1e-6


def test_recording_packing_merges_consecutive_segments_of_one_recording_only():
    stage, fake = _stage("segment_stage.packing.mode=recording", "segment_stage.packing.gap_s=0.5")
    out = stage(_batch([[5.0, 6.0, 25.0], [4.0]])).to_pylist()
    # r0: [5, 6] share a window, 25 s does not fit after them; r1 alone -> 3 windows, one call
    assert fake.calls == [3]
    assert [len(r["segments"]) for r in out] == [3, 1]
    assert [s["text"].split()[0] for s in out[0]["segments"]] == [
        "w0",
        "w5",
        "w0",
    ]  # w5 (5.1-5.6 s) lies past the gap midpoint 5.25


def test_fused_lid_cuts_a_window_that_switches_language_and_runs_the_pieces_again():
    stage, fake = _stage("segment_stage.packing.mode=recording", "segment_stage.packing.gap_s=0.5")
    out = stage(_batch([[5.0, 6.0, 4.0], [8.0]], levels={(0, 1): 0.9, (0, 2): 0.9})).to_pylist()
    # round 1: r0's window [5 en | 6 de | 4 de] and r1's [8 en] in one call; r0's window switches, so
    # it was not transcribed; the closer check ran on its three parts only (a lone segment needs none)
    assert fake.lid_calls == [((5.0, 6.0, 4.0), 4.0)]
    # round 2: the pieces [5 s en] and [6 s + 4 s de] in one more call
    assert fake.calls == [2, 2]
    assert [[s["language"] for s in r["segments"]] for r in out] == [["en", "de", "de"], ["en"]]
    assert [s["text"].split()[0] for s in out[0]["segments"]] == ["w0", "w0", "w6"]  # de window: 6 s | gap | 4 s
    # the wasted first pass is paid for: r0 spent 2 windows of the first call and 2 of the second
    assert abs(sum(r["asr_padded_seconds"] for r in out) - 4 * 30.0) < 1e-6


def test_fused_lid_monolingual_windows_cost_no_separate_lid():
    stage, fake = _stage("segment_stage.packing.mode=recording", "segment_stage.packing.gap_s=0.5")
    out = stage(_batch([[5.0, 6.0, 4.0], [8.0]])).to_pylist()
    assert fake.lid_calls == [] and fake.calls == [2]
    assert all(s["language"] == "en" for r in out for s in r["segments"])


def test_separate_lid_is_bucketed_by_duration():
    stage, fake = _stage("segment_stage.packing.mode=none", "segment_stage.batching.max_items=2", lid="own")
    # a LID model of its own: every segment is identified before ASR
    out = stage(_batch([[9.0, 2.0], [8.0, 3.0]])).to_pylist()
    assert stage.lid.lid_calls == [((2.0, 3.0), None), ((8.0, 9.0), None)]  # arrival order would pair 9 with 2
    assert fake.lid_calls == [] and all(s["language"] == "en" for r in out for s in r["segments"])


def test_provenance_names_every_model_that_made_the_row():
    stage, _ = _stage("segment_stage.packing.mode=none")
    out = stage(_batch([[2.0]])).to_pylist()
    assert out[0]["models"] == "vad=fake; lid=fused with asr (fake); asr=fake"
    assert out[0]["vocabulary_warning"] is None  # no vocabulary, nothing to warn about


class _DroppingAsr(FakeAsr):
    """A broken backend: loses the last result of every call with more than one clip."""

    def transcribe(self, clips, languages, parts=None):
        out = super().transcribe(clips, languages, parts)
        return out[:-1] if len(out) > 1 else out


def test_a_backend_that_loses_a_result_is_caught_not_zipped_onto_the_wrong_segment():
    cfg = load_config(
        "conf/local.yaml",
        [
            "input.uri=/i",
            "output.uri=/o",
            "segment_stage.packing.mode=none",
            "segment_stage.batching.max_items=16",
            "segment_stage.batching.max_padded_s=480",
        ],
    ).segment_stage
    asr = _DroppingAsr()
    out = SegmentStage(cfg, asr, FusedLid(asr))(_batch([[2.0, 5.0], [4.0]])).to_pylist()
    # the 3-clip call raised ContractError; retried one clip at a time, every segment got its own text
    assert asr.calls[0] == 3 and all(c == 1 for c in asr.calls[1:])
    assert [[s["text"] for s in r["segments"]] for r in out] == [["w0 w1", "w0 w1 w2 w3 w4"], ["w0 w1 w2 w3"]]
    with __import__("pytest").raises(ContractError, match="2 results for 3 clips"):
        from pipeline.backends.base import check_results

        check_results(asr.transcribe([np.zeros(SR)] * 3, [None] * 3), [None] * 3, asr)


class _SkippingAsr(FakeAsr):
    """Whisper's failure on packed windows: the model passes over the second packed part whole."""

    def transcribe(self, clips, languages, parts=None):
        out = super().transcribe(clips, languages, parts)
        for res, spans in zip(out, parts or [None] * len(out)):
            if spans and len(spans) > 1:
                a, b = spans[1]
                res.words = [w for w in res.words if not a - 0.25 <= (w.start + w.end) / 2 < b + 0.25]
                res.text = " ".join(w.word for w in res.words)
        return out


def test_a_packed_segment_the_model_skipped_is_transcribed_again_alone():
    def run(retry_below_cps: str) -> tuple[list[str], list[int]]:
        cfg = load_config(
            "conf/local.yaml",
            [
                "input.uri=/i",
                "output.uri=/o",
                "segment_stage.packing.mode=recording",
                "segment_stage.packing.gap_s=0.5",
                f"segment_stage.packing.retry_below_cps={retry_below_cps}",
            ],
        ).segment_stage
        asr = _SkippingAsr()
        out = SegmentStage(cfg, asr, FusedLid(asr))(_batch([[5.0, 6.0, 4.0]])).to_pylist()
        return [s["text"] for s in out[0]["segments"]], asr.calls

    # one window [5 s | 6 s | 4 s]; the fake says "w<k>" at second k of it and skips the 6 s part
    texts, calls = run("0")
    assert texts == ["w0 w1 w2 w3 w4", "", "w12 w13 w14 w15"] and calls == [1]
    texts, calls = run("1.0")  # the fake's ~3 characters a second pass; the skipped part's 0 do not
    assert texts == ["w0 w1 w2 w3 w4", "w0 w1 w2 w3 w4 w5", "w12 w13 w14 w15"] and calls == [1, 1]


def _retry_packing_cfg():
    """local.yaml's segment stage packing per recording, with the retry of sparse windows, one item a call."""
    return load_config(
        "conf/local.yaml",
        [
            "input.uri=/i",
            "output.uri=/o",
            "segment_stage.packing.mode=recording",
            "segment_stage.packing.gap_s=0.5",
            "segment_stage.packing.retry_below_cps=1.0",
            "segment_stage.batching.max_items=1",
        ],
    ).segment_stage


def test_the_segments_skipped_across_a_rounds_calls_are_packed_again_together():
    class Recording(_SkippingAsr):
        def transcribe(self, clips, languages, parts=None):
            self.parts = getattr(self, "parts", []) + [[len(p) if p else 1 for p in parts or [None] * len(clips)]]
            return super().transcribe(clips, languages, parts)

    cfg = _retry_packing_cfg()
    asr = Recording()
    # windows [5 | 6 | 4] and [14 | 6 | 4], one call each; the fake skips each window's second part
    out = SegmentStage(cfg, asr, FusedLid(asr))(_batch([[5.0, 6.0, 4.0, 14.0, 6.0, 4.0]])).to_pylist()
    # both skipped 6 s parts share one retry window (which skips its second part: that one goes alone)
    assert asr.parts == [[3], [3], [2], [1]]
    assert all(s["text"] for s in out[0]["segments"])


class _ConcurrentAsr(_SkippingAsr):
    """Declares `concurrent_calls`; with more than one, a call waits (up to 0.5 s) for another to be
    running beside it, so the test sees whether the stage really makes them at once."""

    def __init__(self, concurrent: int):
        super().__init__()
        self.capabilities = replace(FakeAsr.capabilities, concurrent_calls=concurrent)
        self.lock, self.both = threading.Lock(), threading.Event()
        self.running = self.most = 0
        self.threads: set[int] = set()

    def transcribe(self, clips, languages, parts=None):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.get_ident())
            if self.running > 1:
                self.both.set()
        try:
            if self.capabilities.concurrent_calls > 1:
                self.both.wait(0.5)
            time.sleep(0.05)  # a call takes a while, so that calls made at once overlap in time
            return super().transcribe(clips, languages, parts)
        finally:
            with self.lock:
                self.running -= 1


def test_a_backend_that_runs_calls_at_once_gets_them_at_once_with_the_same_output():
    """`concurrent_calls` (Whisper's `asr.workers` on a CPU): the round's calls come from that many
    threads; skipped parts, failed calls and the output are what one call at a time gives."""

    def run(concurrent: int):
        cfg = _retry_packing_cfg()
        asr = _ConcurrentAsr(concurrent)
        stage, t0 = SegmentStage(cfg, asr, FusedLid(asr)), time.perf_counter()
        out = stage(_batch([[5.0, 6.0, 4.0, 14.0, 6.0, 4.0], [3.3], [20.0, 25.0]]))
        asr.elapsed = time.perf_counter() - t0
        return out.to_pylist(), asr

    one, asr1 = run(1)
    two, asr2 = run(2)
    assert asr1.most == 1 and asr2.most == 2 and len(asr2.threads) == 2
    # the report's ASR time is wall time: calls that ran at once share it, they are not summed
    assert sum(r["asr_wall_seconds"] for r in two) <= asr2.elapsed < asr1.elapsed
    assert sorted(asr2.calls) == sorted(asr1.calls) and len(asr1.calls) >= 6
    strip = ("asr_wall_seconds", "segment_wall_seconds", "segment_peak_rss_mb")
    assert [{k: v for k, v in r.items() if k not in strip} for r in two] == [
        {k: v for k, v in r.items() if k not in strip} for r in one
    ]
    assert [r["status"] for r in two] == ["ok", "error", "ok"] and all(s["text"] for s in two[0]["segments"])


def test_windows_worked_on_at_once_share_the_backends_limit_and_keep_their_output():
    """`segment_stage.windows_at_once: 2`: Ray runs two windows in one actor at once, from two threads.
    Their model calls still go through the backend's own limit (`concurrent_calls`: one at a time for
    NeMo, two for Whisper's `asr.workers: 2`), and each window's rows are what it gives alone."""
    strip = ("asr_wall_seconds", "segment_wall_seconds", "segment_peak_rss_mb")
    windows = [[[5.0, 6.0, 4.0, 14.0, 6.0, 4.0], [20.0, 25.0]], [[3.3], [7.0, 12.0], [9.0, 8.0, 2.0]]]
    for concurrent in (1, 2):
        cfg = load_config(
            "conf/local.yaml",
            [
                "input.uri=/i",
                "output.uri=/o",
                "segment_stage.packing.retry_below_cps=1.0",
                "segment_stage.batching.max_items=1",
                "segment_stage.windows_at_once=2",
            ],
        )
        alone = []
        for durations in windows:
            asr = _ConcurrentAsr(concurrent)
            alone.append(SegmentStage(cfg.segment_stage, asr, FusedLid(asr))(_batch(durations)).to_pylist())
        asr = _ConcurrentAsr(concurrent)
        stage = SegmentStage(cfg.segment_stage, asr, FusedLid(asr))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(2) as two_windows:  # as Ray's max_concurrent_calls_per_actor calls the actor
            together = [t.to_pylist() for t in two_windows.map(stage, [_batch(d) for d in windows])]
        elapsed = time.perf_counter() - t0
        assert asr.most == concurrent, concurrent
        # the report's ASR time is wall time: calls of the two windows that ran at once share it
        assert 0 < sum(r["asr_wall_seconds"] for rows in together for r in rows) <= elapsed
        assert [[{k: v for k, v in r.items() if k not in strip} for r in rows] for rows in together] == [
            [{k: v for k, v in r.items() if k not in strip} for r in rows] for rows in alone
        ]
        assert [r["status"] for r in together[1]] == ["error", "ok", "ok"]
