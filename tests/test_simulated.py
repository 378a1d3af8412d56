"""The simulated accelerator (pipeline/backends/simulated.py, benchmarks and tests only): each backend
keeps its protocol's contract, holds each call for padded seconds / RTFx without using CPU, and a
whole run on it writes well-formed rows whose recorded ASR wall time is what the holds add up to."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.backends.base import check_results
from pipeline.backends.registry import make_asr, make_diarizer, make_lid, make_vad, stitches_pieces
from pipeline.backends.simulated import SimulatedAsr, SimulatedDiarizer, SimulatedLid, SimulatedVad
from pipeline.config import (
    AsrConfig,
    DiarizationConfig,
    LidConfig,
    ModelsConfig,
    SegmentStageConfig,
    VadConfig,
    load_config,
)
from pipeline.records import SAMPLE_RATE, AsrResult, Span
from tests.helpers import LOCAL_CONF

SIMULATED = [
    "recording_stage.vad.backend=simulated",
    "segment_stage.lid.backend=simulated",
    "segment_stage.asr.backend=simulated",
]


def _clip(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def _timed(fn, *args):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - t0, time.process_time() - c0


def test_the_registry_builds_each_simulated_backend():
    models = ModelsConfig()
    assert isinstance(make_vad(VadConfig(backend="simulated"), models, False, 50.0), SimulatedVad)
    diar = DiarizationConfig(enabled=True, backend="simulated")
    assert isinstance(make_diarizer(diar, models, False, 50.0), SimulatedDiarizer)
    assert stitches_pieces(diar)  # one voice per piece: a long recording may go in pieces
    seg = SegmentStageConfig(
        asr=AsrConfig(backend="simulated"), lid=LidConfig(backend="simulated", language="de"), simulated_rtfx=50.0
    )
    asr = make_asr(seg.asr, models, False, seg.lid, rtfx=seg.simulated_rtfx)
    lid = make_lid(seg, asr, models, False)
    assert isinstance(asr, SimulatedAsr) and isinstance(lid, SimulatedLid)
    assert lid.identify([_clip(1.0)]) == [("de", 0.99)] and lid.labels() == ["de"]
    assert "simulated" in asr.model_id() and "50" in asr.model_id()


def test_asr_holds_padded_seconds_over_rtfx_without_cpu_and_returns_one_word_per_second():
    asr = SimulatedAsr(AsrConfig(backend="simulated"), rtfx=20.0)
    clips = [_clip(3.0), _clip(6.2), _clip(0.05)]  # the last is below min_clip_s: empty, not run
    caps = asr.capabilities
    assert caps.window_s is None and caps.concurrent_calls == 1 and not caps.detects_language
    padded = asr.padded_seconds([3.0, 6.2])
    assert padded == pytest.approx(12.4)
    out, wall, cpu = _timed(asr.transcribe, clips, ["en", "fr", "en"])
    assert wall == pytest.approx(padded / 20.0, abs=0.05)
    assert cpu < 0.05  # a sleep, not work
    check_results(out, clips, asr)
    for res, seconds, lang in zip(out, (3.0, 6.2, 0.05), ("en", "fr", "en")):
        assert isinstance(res, AsrResult) and res.language == lang
        if seconds < asr.min_clip_s:
            assert res.text == "" and res.words == []
            continue
        assert len(res.words) == round(seconds)
        assert res.text == " ".join(w.word for w in res.words) and res.text.endswith(".")
        assert all(0 <= w.start < w.end <= seconds for w in res.words)
        assert all(0.9 <= w.confidence <= 1.0 for w in res.words)
        assert [w.start for w in res.words] == sorted(w.start for w in res.words)
    with pytest.raises(ValueError):
        asr.transcribe(clips, ["en"])


def test_vad_lid_and_diarization_hold_and_answer_like_their_protocols():
    audio = _clip(4.0)
    vad = SimulatedVad(VadConfig(backend="simulated"), rtfx=40.0)
    regions, wall, _ = _timed(vad.speech_regions, audio)
    assert regions == [Span(0.0, 4.0)] and wall == pytest.approx(0.1, abs=0.05)
    assert vad.speech_regions(_clip(0)) == [] and vad.pauses(audio, regions) == []
    diar = SimulatedDiarizer(DiarizationConfig(enabled=True, backend="simulated"), rtfx=40.0)
    found = diar.diarize(audio, [Span(0.0, 1.5), Span(2.0, 4.0)])
    assert [(t.start, t.end, t.speaker) for t in found.turns] == [(0.0, 1.5, "spk0"), (2.0, 4.0, "spk0")]
    assert found.overlaps is None and [v["speaker"] for v in diar.voices()] == ["spk0"]
    lid = SimulatedLid(LidConfig(backend="simulated"), rtfx=100.0)
    langs, wall, _ = _timed(lid.identify, [_clip(30.0), _clip(2.0)])
    assert langs == [("en", 0.99)] * 2
    assert wall == pytest.approx(20.0 * 2 / 100.0, abs=0.05)  # longest (first 20 s) x count


def test_simulated_rtfx_is_not_in_the_fingerprint_but_the_backend_is():
    from pipeline.fingerprint import job_fingerprint

    def fp(overrides: list[str]) -> str:
        return job_fingerprint(load_config(LOCAL_CONF, overrides), {})

    for key in ("recording_stage.simulated_rtfx=5", "segment_stage.simulated_rtfx=5"):
        assert fp([key]) == fp([]), key
    assert fp(SIMULATED) != fp([])


@pytest.mark.ray
@pytest.mark.slow
def test_a_run_on_the_simulated_accelerator_writes_well_formed_rows(corpus: Path, tmp_path: Path):
    from pipeline.ledger import read_output
    from pipeline.runner import run

    src = tmp_path / "in"
    src.mkdir()
    names = sorted(p for p in (corpus / "speech").glob("*.flac"))[:3]
    for p in names:
        shutil.copyfile(p, src / p.name)
    rtfx = 40.0
    cfg = load_config(
        LOCAL_CONF,
        [
            f"input.uri={src}",
            f"output.uri={tmp_path / 'out'}",
            "ray.num_cpus=2",
            *SIMULATED,
            f"segment_stage.simulated_rtfx={rtfx}",
            "recording_stage.simulated_rtfx=400",
            "segment_stage.batching.max_padded_s=600",
            "segment_stage.batching.max_items=16",
        ],
    )
    report = run(cfg)
    assert report.ok == len(names) and report.error == 0
    recordings = read_output(cfg.output, "recordings").to_pylist()
    segments = read_output(cfg.output, "segments").to_pylist()
    assert len(recordings) == len(names)
    for rec in recordings:
        assert rec["status"] == "ok" and rec["num_segments"] >= 1 and rec["language"] == "en"
        assert "simulated-asr" in rec["models"] and "simulated-vad" in rec["models"]
    # the recorded ASR wall time is the holds': padded / rtfx (plus a little bookkeeping per call)
    assert report.asr_padded_seconds >= report.asr_audio_seconds > 0
    assert report.asr_wall_seconds == pytest.approx(report.asr_padded_seconds / rtfx, rel=0.1, abs=0.05)
    for seg in segments:
        assert seg["language"] == "en" and seg["text"] and seg["accepted"], seg
        words = seg["words"]
        assert len(words) == max(1, round(seg["end"] - seg["start"]))
        assert all(seg["start"] <= w["start"] < w["end"] <= seg["end"] for w in words)
        assert " ".join(w["word"] for w in words) == seg["text"]
