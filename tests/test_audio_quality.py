"""Audio-quality signals (pipeline/audio_quality.py) on synthetic signals and on real corpus speech and
its degraded copies (bench/degrade.py); the rules they feed; the columns through the CLI and `filter`."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pytest

from bench.degrade import add_noise, telephone
from pipeline import audio_quality as aq
from pipeline.config import QualityConfig
from pipeline.records import AUDIO_SIGNAL_FIELDS, SAMPLE_RATE, WORD_SIGNAL_FIELDS, Span
from pipeline.stages.quality import judge
from tests.helpers.cli import cli_inproc as _cli

SR = SAMPLE_RATE


def _speechlike(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Bursts of band-limited noise (0.4 s on, 0.2 s off) at -20 dBFS: energy up to 8 kHz, with pauses."""
    x = rng.standard_normal(int(seconds * SR)).astype(np.float32) * 0.1
    on = (np.arange(len(x)) / SR) % 0.6 < 0.4
    return x * on


def _decoded(corpus, rel: str) -> np.ndarray:
    from pipeline.audio import decode

    return decode(str(corpus / rel)).samples.copy()


def _read_at_16k(x: np.ndarray, rate: int, tmp_path) -> np.ndarray:
    """`x` at `rate` written to a WAV and decoded as the pipeline decodes every input (to 16 kHz)."""
    import soundfile as sf

    from pipeline.audio import decode

    path = tmp_path / f"at{rate}.wav"
    sf.write(path, x, rate)
    return decode(str(path)).samples.copy()


def test_synthetic_signals(tmp_path):
    rng = np.random.default_rng(0)
    # level: a full-scale square wave is 0 dBFS, one at half scale -6 dBFS
    square = np.sign(np.sin(2 * np.pi * 100 * np.arange(SR) / SR)).astype(np.float32)
    assert aq.level_dbfs(square) == pytest.approx(0.0, abs=0.1)
    assert aq.level_dbfs(square * 0.5) == pytest.approx(-6.02, abs=0.1)
    # clipping: a sine driven 3x past full scale and clipped vs the same sine at half scale
    sine = np.sin(2 * np.pi * 220 * np.arange(SR) / SR).astype(np.float32)
    assert aq.clipped_share(sine * 0.5) == 0.0
    assert aq.clipped_share(np.clip(sine * 3, -1, 1)) > 0.5
    # bandwidth: white noise fills 8 kHz; white noise in an 8 kHz file, read at 16 kHz, ends past 4 kHz
    # by the decoder's transition band only
    noise = rng.standard_normal(SR).astype(np.float32) * 0.1
    assert aq.bandwidth_hz(noise) >= 7800
    assert 3800 <= aq.bandwidth_hz(_read_at_16k(noise[::2], 8000, tmp_path)) <= 5000
    # SNR: against the noise of the non-speech frames; more noise, lower SNR
    speech = _speechlike(4.0, rng)
    regions = [Span(k * 0.6, k * 0.6 + 0.4) for k in range(7)]
    snrs = []
    for level in (0.001, 0.01, 0.05):
        x = speech + rng.standard_normal(len(speech)).astype(np.float32) * level
        snrs.append(aq.span_signals(x, regions, [x[: int(0.4 * SR)]])[0]["snr_db"])
    assert snrs[0] > snrs[1] > snrs[2]
    assert snrs[1] == pytest.approx(20.0, abs=1.5)  # 0.1 vs 0.01 RMS: 20 dB
    # digital silence outside the speech: the SNR is capped, not infinite
    assert 70 <= aq.span_signals(speech, regions, [speech[: int(0.4 * SR)]])[0]["snr_db"] <= 80.0


def test_real_speech_and_its_degraded_copies(corpus, tmp_path):
    x = _decoded(corpus, "speech/speechbrain_spk1_snt1.wav")  # 16 kHz wideband studio speech
    whole = [Span(0.0, len(x) / SR)]
    clean = aq.span_signals(x, whole, [x], with_mos=True)[0]
    phone = _read_at_16k(telephone(x)[0], 8000, tmp_path)
    tel = aq.span_signals(phone, whole, [phone], with_mos=True)[0]
    noisy = add_noise(x, 5.0, np.random.default_rng(0))
    loud = aq.span_signals(noisy, whole, [noisy], with_mos=True)[0]
    clipped = np.clip(x * 30, -1, 1)
    assert clean["bandwidth_hz"] >= 7000
    assert 3300 <= tel["bandwidth_hz"] <= 4600  # ~4 kHz: mu-law noise fills the 8 kHz file up to its Nyquist
    assert clean["snr_db"] > 30 and loud["snr_db"] < 8  # 5 dB below the speech's louder half
    assert clean["clipped_share"] == 0.0 and aq.clipped_share(clipped) > 0.05
    assert clean["mos"] - loud["mos"] > 0.8  # DNSMOS hears the noise
    assert all(1.0 <= s["mos"] <= 5.0 for s in (clean, tel, loud))
    # a real telephone call of the corpus (pyannote's sample) reads as narrowband
    call = _decoded(corpus, "diarization/pyannote_sample.wav")[: 10 * SR]
    assert aq.bandwidth_hz(call) < 4500


def test_rules_reject_on_each_signal_and_only_when_set():
    seg = {
        "text": "a clear sentence",
        "language": "en",
        "confidence": 0.95,
        "snr_db": 4.0,
        "bandwidth_hz": 3600.0,
        "clipped_share": 0.02,
        "level_dbfs": -55.0,
        "mos": 1.8,
        **aq.word_signals([0.99, 0.2, 0.4, 0.97]),
    }
    assert seg["min_word_confidence"] == 0.2 and seg["low_word_share"] == 0.5
    assert judge(dict(seg), QualityConfig()) == (True, [])  # the audio rules are off by default
    strict = QualityConfig(
        min_snr_db=10,
        min_bandwidth_hz=6000,
        max_clipped_share=0.01,
        min_level_dbfs=-50,
        min_mos=2.5,
        min_word_confidence=0.3,
        max_low_word_share=0.25,
    )
    ok, reasons = judge(dict(seg), strict)
    assert not ok
    assert reasons == ["low_snr", "narrowband", "clipped", "too_quiet", "low_mos", "unsure_word", "unsure_words"]
    # an older output's row has no audio signals: no audio rule rejects it
    old = {k: v for k, v in seg.items() if k not in AUDIO_SIGNAL_FIELDS + WORD_SIGNAL_FIELDS}
    assert judge(old, strict.model_copy(update={"min_word_confidence": None, "max_low_word_share": None}))[0]


def test_columns_through_the_cli_and_filter(shared_output, tmp_path):
    from deltalake import DeltaTable, write_deltalake

    from pipeline.config import OutputConfig
    from pipeline.ledger import Ledger, read_output

    out = tmp_path / "out"
    shutil.copytree(shared_output[1], out)
    segs = read_output(OutputConfig(uri=str(out)), "segments").to_pylist()
    spoken = [s for s in segs if s["text"]]
    assert spoken and all(s["snr_db"] is not None and s["bandwidth_hz"] > 0 for s in spoken)
    assert all(s["min_word_confidence"] is not None for s in spoken if s["words"])
    assert all(s["mos"] is None for s in spoken)  # MOS is off in conf/local.yaml
    cut = sorted(s["snr_db"] for s in spoken)[len(spoken) // 2]
    res = _cli("filter", str(out), f"quality.min_snr_db={cut}")
    assert res.returncode == 0, res.stderr
    after = read_output(OutputConfig(uri=str(out)), "segments").to_pylist()
    low = [s for s in after if s["text"] and s["snr_db"] < cut]
    assert low and all("low_snr" in s["reject_reasons"] and not s["accepted"] for s in low)
    assert not any("low_snr" in s["reject_reasons"] for s in after if s["text"] and s["snr_db"] >= cut)
    # status names the rule that rejects the most speech
    hours: dict[str, float] = {}
    for s in after:
        for r in s["reject_reasons"] or []:
            hours[r] = hours.get(r, 0.0) + (s["end"] - s["start"]) / 3600
    top = max(hours, key=hours.get)
    st = _cli("status", str(out))
    assert st.returncode == 0 and f"the rule rejecting the most speech: {top} (" in st.stdout, st.stdout
    # an output written before these columns existed: filter still judges it, and the next run's
    # committer adds the columns (null for the old rows)
    path = str(out / "segments")
    old = DeltaTable(path).to_pyarrow_table().drop_columns(list(AUDIO_SIGNAL_FIELDS + WORD_SIGNAL_FIELDS))
    write_deltalake(path, old, mode="overwrite", schema_mode="overwrite")
    assert _cli("filter", str(out), f"quality.min_snr_db={cut}").returncode == 0
    Ledger(OutputConfig(uri=str(out))).ensure_schema("segments")
    t: pa.Table = DeltaTable(path).to_pyarrow_table()
    assert set(AUDIO_SIGNAL_FIELDS) <= set(t.column_names)
    assert t.column("snr_db").null_count == t.num_rows


def test_mos_falls_back_with_one_warning(monkeypatch, caplog):
    """Weights absent or not the pinned ones: MOS is null, with one warning per process, not one per clip."""
    clip = np.zeros(SR, dtype=np.float32)
    for where, sha in ((("no_such_package", "x.onnx"), aq.DNSMOS_SHA256), (aq.DNSMOS_FILE, "0" * 64)):
        monkeypatch.setattr(aq, "DNSMOS_FILE", where)
        monkeypatch.setattr(aq, "DNSMOS_SHA256", sha)
        aq.dnsmos_session.cache_clear()
        caplog.clear()
        with caplog.at_level("WARNING", logger="pipeline.audio_quality"):
            assert aq.mos([clip, clip]) == [None, None] and aq.mos([clip]) == [None]
        assert len(caplog.records) == 1 and "no MOS" in caplog.records[0].getMessage()
    aq.dnsmos_session.cache_clear()  # the real weights again for later tests
