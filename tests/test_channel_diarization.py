"""Diarization by channel (`recording_stage.diarization.backend=channels`): decode keeps each source
channel's energy every 10 ms (only when asked), the recording stage gives each speech frame to the
loudest channel (pipeline/backends/channels.py), speakers "ch0", "ch1", ..."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from pipeline.audio import decode
from pipeline.backends.channels import ChannelDiarizer
from pipeline.records import DECODED_SCHEMA, INPUT_SCHEMA, SEGMENTED_SCHEMA, Span
from pipeline.timeline import exclusive_turns
from tests.helpers import LOCAL_CONF
from tests.helpers.cli import run_cli

STEREO = "diarization/fasterwhisper_stereo_diarization.wav"
MONO = "speech/speechbrain_spk1_snt1.wav"


def _talk(n: int, rate: int, rng: np.random.Generator, gaps: bool = True) -> np.ndarray:
    """Speech-like noise: syllables at ~4 Hz and, with `gaps`, a 150 ms pause every second."""
    t = np.arange(n) / rate
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t)
    if gaps:
        env[(t % 1.0) > 0.85] = 0.0
    return (0.1 * env * rng.standard_normal(n)).astype(np.float32)


def _stereo(path: Path, a: tuple, b: tuple, rate: int = 44100, seconds: float = 5.0) -> Path:
    """Speaker A on the left during `a`, B on the right during `b`, each bleeding into the other channel
    at -20 dB; a noise floor on both channels, the right one (a noisier line) 20 dB above the left."""
    rng = np.random.default_rng(0)
    n = int(seconds * rate)
    x = np.zeros((n, 2), np.float32)
    for (s, e), ch in ((a, 0), (b, 1)):
        i, j = int(s * rate), int(e * rate)
        voice = _talk(j - i, rate, rng)
        x[i:j, ch] += voice
        x[i:j, 1 - ch] += 0.1 * voice  # -20 dB bleed
    x[:, 0] += 3e-5 * rng.standard_normal(n)  # about -90 dBFS
    x[:, 1] += 3e-4 * rng.standard_normal(n)  # about -70 dBFS
    sf.write(path, x, rate, subtype="FLOAT")
    return path


def _turns(path: Path, regions: list[Span]) -> list[Span]:
    audio = decode(str(path), channel_energy=True)
    return ChannelDiarizer().speaker_turns(audio.samples, regions, channel_energy=audio.channel_energy)


# -- unit: decode's envelope and the diarizer ----------------------------------------------------


def test_decode_keeps_the_channel_energy_only_when_asked(tmp_path):
    path = _stereo(tmp_path / "call.wav", (0.0, 2.0), (2.5, 5.0))
    assert decode(str(path)).channel_energy is None
    audio = decode(str(path), channel_energy=True)
    env = audio.channel_energy
    # 100 frames a second per channel, float32: a 4 h stereo file costs 4*3600*100*2*4 B = 11.5 MB
    assert env.dtype == np.float32 and env.shape[0] == 2 and abs(env.shape[1] - 500) <= 1
    a, b = (10 * np.log10(env[:, f0:f1].mean(axis=1)) for f0, f1 in ((50, 150), (300, 450)))
    assert 19 < a[0] - a[1] < 21 and 19 < b[1] - b[0] < 21  # each speaker's bleed: 20 dB down in the other channel
    assert np.array_equal(audio.samples, decode(str(path)).samples)  # the mono samples do not change


def test_stereo_turns_follow_the_channels_despite_bleed(tmp_path):
    path = _stereo(tmp_path / "call.wav", (0.0, 2.0), (2.5, 5.0))
    # the regions a VAD gives (speech, with the 0.5 s pause between the speakers)
    turns = _turns(path, [Span(0.0, 2.0), Span(2.5, 5.0)])
    assert [t.speaker for t in turns] == ["ch0", "ch1"]
    assert abs(turns[0].start - 0.0) <= 0.1 and abs(turns[0].end - 2.0) <= 0.1
    assert abs(turns[1].start - 2.5) <= 0.1 and abs(turns[1].end - 5.0) <= 0.1
    # one region over both (a VAD that bridges the pause): the change falls in the pause, within 0.1 s
    one = _turns(path, [Span(0.0, 5.0)])
    assert [t.speaker for t in one] == ["ch0", "ch1"]
    assert (one[0].start, one[-1].end) == (0.0, 5.0) and 2.0 - 0.1 <= one[0].end <= 2.5 + 0.1


def test_a_change_without_a_pause_is_found_within_100_ms(tmp_path):
    path = _stereo(tmp_path / "call.wav", (0.0, 2.5), (2.5, 5.0))
    turns = _turns(path, [Span(0.0, 5.0)])
    assert [t.speaker for t in turns] == ["ch0", "ch1"]
    assert abs(turns[0].end - 2.5) <= 0.1 and turns[0].end == turns[1].start


def test_a_noisier_line_does_not_win_the_pauses(tmp_path):
    # only A speaks (its syllable pauses included); the right channel holds its bleed and a louder noise floor
    path = _stereo(tmp_path / "solo.wav", (0.0, 5.0), (0.0, 0.0))
    turns = _turns(path, [Span(0.0, 5.0)])
    assert {t.speaker for t in turns} == {"ch0"}


def test_mono_or_missing_envelope_is_one_speaker_with_a_warning():
    regions = [Span(0.5, 1.5), Span(2.0, 3.0)]
    audio = np.zeros(48000, np.float32)
    d = ChannelDiarizer()
    assert d.model_id() == "channels"
    assert d.speaker_turns(audio, regions, channel_energy=np.ones((1, 300), np.float32)) == [
        Span(0.5, 1.5, "ch0"),
        Span(2.0, 3.0, "ch0"),
    ]
    assert "mono" in d.turns_and_warning(regions, np.ones((1, 300), np.float32))[1]
    assert [t.speaker for t in d.speaker_turns(audio, regions)] == ["ch0", "ch0"]
    assert "no channel energy" in d.turns_and_warning(regions, None)[1]
    assert d.speaker_turns(audio, [], channel_energy=np.ones((2, 300), np.float32)) == []


def test_overlap_is_both_channels_loud_at_once_not_crosstalk(tmp_path: Path, corpus: Path):
    # A and B talk at once for 0.5 s; each bleeds into the other's line at -20 dB (crosstalk, not a voice)
    both = decode(str(_stereo(tmp_path / "both.wav", (0.2, 2.5), (2.0, 4.8))), channel_energy=True)
    found = ChannelDiarizer().diarize(both.samples, [Span(0.1, 4.9)], channel_energy=both.channel_energy)
    [o] = found.overlaps
    assert (
        o.speakers == ("ch0", "ch1") and abs(o.start - 2.0) <= 0.15 and abs(o.end - 2.5) <= 0.15
    )  # levels: 0.31 s medians
    apart = decode(str(_stereo(tmp_path / "apart.wav", (0.2, 2.0), (2.6, 4.8))), channel_energy=True)
    found = ChannelDiarizer().diarize(apart.samples, [Span(0.1, 4.9)], channel_energy=apart.channel_energy)
    assert found.overlaps == [] and found.warning is None  # can tell, and there is none
    # the corpus's stereo file: the two sentences are spoken at the same time (0.5-2.3 s)
    st = decode(str(corpus / STEREO), channel_energy=True)
    found = ChannelDiarizer().diarize(st.samples, [Span(0.3, 4.8)], channel_energy=st.channel_energy)
    assert len(found.overlaps) == 1 and found.overlaps[0].speakers == ("ch0", "ch1")
    assert found.overlaps[0].start < 0.6 and found.overlaps[0].end > 2.2
    # mono: one speaker, and overlap unknown (None), not "none"
    mono = ChannelDiarizer().diarize(st.samples, [Span(0.3, 4.8)], channel_energy=np.ones((1, 500), np.float32))
    assert mono.overlaps is None and "mono" in mono.warning


def test_stereo_with_the_same_audio_on_both_channels_is_one_speaker(corpus: Path):
    # JFK is "stereo": two copies of one signal, a fraction of a dB apart. The loudest channel would
    # flip on noise; no channel is 3 dB louder anywhere, so it is one speaker, with a warning.
    audio = decode(str(corpus / "speech/whisper_jfk.flac"), channel_energy=True)
    turns, warning = ChannelDiarizer().turns_and_warning([Span(0.0, 11.0)], audio.channel_energy)
    assert turns == [Span(0.0, 11.0, "ch0")] and "same audio" in warning


def test_exclusive_turns_can_name_the_columns():
    probs = np.zeros((100, 3))
    probs[:40, 2] = 1.0
    probs[40:, 0] = 1.0
    regions = [Span(0.0, 1.0)]
    assert [t.speaker for t in exclusive_turns(probs, 0.01, regions)] == ["spk0", "spk1"]  # default unchanged
    named = exclusive_turns(probs, 0.01, regions, names=["ch0", "ch1", "ch2"])
    assert [(t.speaker, t.end) for t in named] == [("ch2", 0.4), ("ch0", 1.0)]


def test_decode_stage_carries_the_envelope_and_the_recording_stage_drops_it(corpus: Path):
    from pipeline.config import DecodeConfig, StorageOptions, load_config
    from pipeline.stages.decode import decode_batch
    from pipeline.stages.recording import RecordingStage

    assert "channel_energy" in DECODED_SCHEMA.names and "channel_energy" not in SEGMENTED_SCHEMA.names
    rows = [
        {"recording_id": str(i), "uri": str(corpus / rel), "size": (corpus / rel).stat().st_size}
        for i, rel in enumerate([STEREO, MONO])
    ]
    batch = pa.Table.from_pylist(rows, schema=INPUT_SCHEMA)
    plain = decode_batch(batch, DecodeConfig(), StorageOptions())
    assert plain.schema == DECODED_SCHEMA and plain.column("channel_energy").null_count == 2
    decoded = decode_batch(batch, DecodeConfig(), StorageOptions(), channel_energy=True)
    assert decoded.schema == DECODED_SCHEMA
    stereo = np.frombuffer(decoded.column("channel_energy")[0].as_buffer(), "<f4")
    mono = np.frombuffer(decoded.column("channel_energy")[1].as_buffer(), "<f4")
    assert len(stereo) == 2 * 500 and abs(len(mono) - len(decoded.column("audio")[1].as_py()) / 4 / 160) <= 1

    job = load_config(
        LOCAL_CONF,
        [
            "input.uri=.",
            "output.uri=.",
            "recording_stage.diarization.enabled=true",
            "recording_stage.diarization.backend=channels",
        ],
    )
    out = RecordingStage.from_config(job)(decoded)
    assert out.schema == SEGMENTED_SCHEMA
    st, mo = out.to_pylist()
    assert st["status"] == "ok" and st["num_speakers"] == 2 and st["error"] is None
    assert {t["speaker"] for t in st["turns"]} == {"ch0", "ch1"} and "diarization=channels" in st["models"]
    assert mo["status"] == "ok" and mo["num_speakers"] == 1 and {t["speaker"] for t in mo["turns"]} == {"ch0"}
    assert "mono" in mo["error"]


# -- the path a user takes: the CLI ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_run(corpus: Path, tmp_path_factory):
    from pipeline.config import load_config
    from pipeline.ledger import read_output

    src = tmp_path_factory.mktemp("in")
    out = tmp_path_factory.mktemp("out")
    for rel in (STEREO, MONO):
        shutil.copy(corpus / rel, src)
    args = [
        f"input.uri={src}",
        f"output.uri={out}",
        "recording_stage.diarization.enabled=true",
        "recording_stage.diarization.backend=channels",
    ]
    res = run_cli("run", str(LOCAL_CONF), *args)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    cfg = load_config(LOCAL_CONF, args).output
    recordings = {Path(r["uri"]).name: r for r in read_output(cfg, "recordings").to_pylist()}
    segments = [s for s in read_output(cfg, "segments").to_pylist()]
    return recordings, segments


def test_cli_stereo_call_gets_one_speaker_per_channel(cli_run):
    recordings, segments = cli_run
    rec = recordings[Path(STEREO).name]
    assert rec["status"] == "ok" and rec["num_speakers"] == 2 and rec["source_channels"] == 2
    assert "diarization=channels" in rec["models"]
    segs = [s for s in segments if s["uri"].endswith(Path(STEREO).name)]
    words = [w for s in segs for w in s["words"]]
    assert words and {w["speaker"] for w in words} == {"ch0", "ch1"}
    for s in segs:
        assert {w["speaker"] for w in s["words"]} == {s["speaker"]}  # a segment is split where its words change speaker
    # both channels talk at once for ~2 s: overlapped speech is marked on the recording, segments and words
    assert rec["overlap_seconds"] > 1.5
    assert sum(s["overlap_seconds"] for s in segs) > 1.0
    assert any(w["overlap"] for w in words) and all(w["overlap"] is not None for w in words)
    late = [w for w in words if w["start"] > 2.6]  # only the left channel still talks
    assert late and not any(w["overlap"] for w in late)


def test_cli_mono_file_with_channels_is_one_speaker_and_a_warning(cli_run):
    recordings, segments = cli_run
    rec = recordings[Path(MONO).name]
    assert rec["status"] == "ok" and rec["num_speakers"] == 1
    assert "diarization.backend=channels" in rec["error"] and "mono" in rec["error"]
    segs = [s for s in segments if s["uri"].endswith(Path(MONO).name)]
    assert segs and {w["speaker"] for s in segs for w in s["words"]} == {"ch0"}
    # one channel cannot tell overlapped speech: unknown (null), not "none"
    assert rec["overlap_seconds"] is None and all(s["overlap_seconds"] is None for s in segs)
    assert {w["overlap"] for s in segs for w in s["words"]} == {None}
