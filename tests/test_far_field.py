"""Speakers in real rooms (issue 34): the VAD hears a talker far from the microphone, and the demo's
two-speaker call comes out as two speakers without confetti segments, through the CLI.
(The benchmark of far-field meetings is bench/meetings.py --rooms; the rules that keep segments whole
are unit-tested in tests/test_timeline.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import decode
from tests.helpers import LOCAL_CONF, REPO
from tests.helpers.cli import run_cli

SR = 16000


def far_field(clean: np.ndarray, snr_db: float = 10.0, rt60: float = 0.8, seed: int = 0) -> np.ndarray:
    """`clean` as a room microphone hears it: an exponentially decaying noise tail of `rt60` seconds
    after a direct path, rumbling brown noise at `snr_db`, quiet (peak 0.05)."""
    from scipy.signal import fftconvolve  # heavy: SciPy takes about a second to import

    rng = np.random.default_rng(seed)
    t = np.arange(int(rt60 * SR)) / SR
    rir = rng.normal(0, 1, len(t)) * np.exp(-6.9 * t / rt60)
    rir[0] = 8.0
    wet = fftconvolve(clean.astype(np.float64), rir / np.abs(rir).max())[: len(clean)]
    brown = np.cumsum(rng.normal(0, 1, len(wet)))
    brown -= np.convolve(brown, np.ones(4001) / 4001, mode="same")
    noisy = wet + brown * np.sqrt(np.mean(wet**2) / 10 ** (snr_db / 10) / np.mean(brown**2))
    return (0.05 * noisy / np.abs(noisy).max()).astype(np.float32)


def test_the_vad_hears_a_far_field_talker_at_the_configured_level(corpus: Path):
    from pipeline.backends.silero import SileroVad
    from pipeline.config import VadConfig
    from pipeline.stages.recording import at_level

    vad = SileroVad(VadConfig())
    room = far_field(decode(str(corpus / "speech/whisper_jfk.flac")).samples)
    heard = lambda audio: sum(r.duration for r in vad.speech_regions(audio))  # noqa: E731
    assert heard(room) < 1.0  # as recorded, Silero hears (almost) none of JFK's 9.5 s of speech
    assert heard(at_level(room, VadConfig().level_dbfs)) > 6.0
    assert at_level(room, None) is room
    # what is not speech stays so: the corpus's noise-only clip, and digital silence (not raised to noise)
    for audio in (decode(str(corpus / "negative/silerovad_test.opus")).samples, np.zeros(5 * SR, np.float32)):
        assert heard(at_level(audio, VadConfig().level_dbfs)) == 0.0
    quiet = at_level(np.full(SR, 1e-6, np.float32), -14.0)
    assert float(np.abs(quiet).max()) <= 1e-6 * 10 ** (30 / 20) * 1.001  # raised by 30 dB at most


@pytest.mark.slow
@pytest.mark.ray
def test_cli_demo_call_is_two_speakers_without_confetti_and_a_far_talker_is_heard(corpus: Path, tmp_path: Path):
    from pipeline.config import load_config
    from pipeline.ledger import read_output
    from pipeline.timeline import TURN_PAUSE_S

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(REPO / "jobs/demo-audio/two_speakers_call.opus", src)
    sf.write(src / "jfk_far.wav", far_field(decode(str(corpus / "speech/whisper_jfk.flac")).samples), SR)
    args = [f"input.uri={src}", f"output.uri={tmp_path / 'out'}", "recording_stage.diarization.enabled=true"]
    res = run_cli("run", str(LOCAL_CONF), *args)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    out = load_config(LOCAL_CONF, args).output
    recs = {Path(r["uri"]).name: r for r in read_output(out, "recordings").to_pylist()}
    segs = read_output(out, "segments").to_pylist()
    call = sorted((s for s in segs if s["uri"].endswith("two_speakers_call.opus")), key=lambda s: s["start"])
    assert recs["two_speakers_call.opus"]["num_speakers"] == 2 and len({s["speaker"] for s in call}) == 2
    for s in call:
        assert s["end"] - s["start"] >= 0.3, s  # no zero-length segment, no 0.24 s fragment of two words
        assert {w["speaker"] for w in s["words"]} == {s["speaker"]}
    for a, b in zip(call, call[1:]):
        if a["speaker"] != b["speaker"]:  # a change of speaker sits in a pause, not inside a phrase
            assert b["words"][0]["start"] - a["words"][-1]["end"] >= TURN_PAUSE_S - 1e-6, (a["text"], b["text"])
    far = sorted((s for s in segs if s["uri"].endswith("jfk_far.wav")), key=lambda s: s["start"])
    # (its speaker count is not pinned: Resemblyzer hears the reverberant talker as 1-2 voices, the
    # weakness bench/meetings.py --rooms measures)
    assert recs["jfk_far.wav"]["status"] == "ok"
    text = " ".join(s["text"] for s in far).lower()
    assert "fellow america" in text and "what you can do for your country" in text  # without level: no segment
