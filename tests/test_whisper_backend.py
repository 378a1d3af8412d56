"""The embedded Whisper backend (pipeline/backends/whisper.py): its weights verified before loading,
and on real speech the fused language ID of packed windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.audio import decode
from pipeline.config import AsrConfig
from pipeline.records import AsrResult, LanguageSwitch

SR = 16000


def test_whisper_weights_are_verified_before_loading(tmp_path):
    from pipeline.backends.whisper import EMBEDDED, embedded_model_dir, resolve_whisper_model
    from pipeline.config import AsrConfig
    from pipeline.models import ModelIntegrityError, sha256_file

    embedded = embedded_model_dir("base")  # reassembled from the two pip packages, hash checked
    assert sha256_file(embedded / "model.bin") == EMBEDDED["base"]["sha256"]
    own = tmp_path / "ct2"
    own.mkdir()
    (own / "model.bin").symlink_to(embedded / "model.bin")
    assert resolve_whisper_model(AsrConfig(model=str(own), sha256=EMBEDDED["base"]["sha256"])) == str(own)
    with pytest.raises(ModelIntegrityError):
        resolve_whisper_model(AsrConfig(model=str(own), sha256="0" * 64))
    with pytest.raises(FileNotFoundError, match="no model hub is contacted"):
        resolve_whisper_model(AsrConfig(model="large-v3"))


def _clip(corpus: Path, rel: str) -> np.ndarray:
    with open(corpus / rel, "rb") as f:
        return np.frombuffer(decode(f, 3600).buffer, dtype="<f4")


def _pack(clips: list[np.ndarray], gap_s: float = 0.5) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Clips laid end to end with silence between them, as the segment stage packs a window."""
    pieces, parts, pos = [], [], 0
    for k, c in enumerate(clips):
        if k:
            pieces.append(np.zeros(int(gap_s * SR), np.float32))
            pos += int(gap_s * SR)
        parts.append((pos / SR, (pos + len(c)) / SR))
        pieces.append(c)
        pos += len(c)
    return np.concatenate(pieces), parts


@pytest.fixture(scope="module")
def whisper():
    from pipeline.backends.whisper import WhisperAsr

    return WhisperAsr(AsrConfig())


def test_packed_window_in_one_language_is_transcribed_with_it(whisper, corpus):
    en = [_clip(corpus, f"speech/speechbrain_spk1_snt{k}.wav") for k in (1, 2, 3)]
    window, parts = _pack(en)
    de = _clip(corpus, "multilingual/fleurs-de-000.ogg")
    res = whisper.transcribe([window, de], [None, None], parts=[parts, None])
    assert all(isinstance(r, AsrResult) for r in res)
    assert [r.language for r in res] == ["en", "de"]
    assert res[0].language_prob > 0.5 and len(res[0].words) >= 15  # three Harvard sentences


def test_packed_window_that_switches_language_comes_back_for_cutting(whisper, corpus):
    clips = [
        _clip(corpus, "multilingual/fleurs-en-001.ogg"),
        _clip(corpus, "multilingual/fleurs-de-001.ogg"),
        _clip(corpus, "multilingual/fleurs-de-002.ogg"),
    ]
    window, parts = _pack([c[: 9 * SR] for c in clips])  # three 9 s parts fit one 30 s window
    (res,) = whisper.transcribe([window], [None], parts=[parts])
    assert isinstance(res, LanguageSwitch)
    assert [lang for lang, _ in res.languages] == ["en", "de", "de"]


@pytest.fixture(scope="module")
def whisper_short():
    from pipeline.backends.whisper import WhisperAsr

    return WhisperAsr(AsrConfig(encode_pad_s=1.0))


def _frames_seen(asr, monkeypatch) -> list[int]:
    """Records the mel frames of every encoder pass `asr` makes."""
    seen: list[int] = []
    encode = asr.model.encode

    def spy(features, *a, **k):
        seen.append(features.shape[-1])
        return encode(features, *a, **k)

    monkeypatch.setattr(asr.model, "encode", spy)
    return seen


def test_a_short_window_is_encoded_only_up_to_its_audio(whisper_short, corpus, monkeypatch):
    """`asr.encode_pad_s`: the encoder sees the longest clip of the call plus the padding, rounded up
    to whole seconds, and the words still come out in the right language."""
    en = [_clip(corpus, f"speech/speechbrain_spk1_snt{k}.wav") for k in (1, 2, 3)]
    window, parts = _pack(en)
    de = _clip(corpus, "multilingual/fleurs-de-000.ogg")
    seen = _frames_seen(whisper_short, monkeypatch)
    res = whisper_short.transcribe([window, de], [None, None], parts=[parts, None])
    longest = max(len(window), len(de)) / SR
    assert seen[0] == int(np.ceil(longest + 1.0)) * 100 < 3000
    assert [r.language for r in res] == ["en", "de"]
    assert len(res[0].words) >= 15 and res[0].compression_ratio < 2.4


def test_a_short_window_that_loops_is_decoded_again_from_the_whole_window(whisper_short, corpus, monkeypatch):
    from pipeline.backends import whisper as backend

    seen = _frames_seen(whisper_short, monkeypatch)
    decode = backend.WhisperAsr._decode

    def loops_when_short(self, encoded, language, durations):
        out = decode(self, encoded, language, durations)
        if encoded.shape[1] < 1500:  # encoder positions: 50 a second
            for r in out:
                r.text, r.compression_ratio = "go out. " * 40, 9.0
        return out

    monkeypatch.setattr(backend.WhisperAsr, "_decode", loops_when_short)
    clip = _clip(corpus, "speech/speechbrain_spk1_snt1.wav")
    (res,) = whisper_short.transcribe([clip], ["en"])
    assert seen == [int(np.ceil(len(clip) / SR + 1.0)) * 100, 3000]
    assert "go out. go out." not in res.text and len(res.words) >= 4 and res.language == "en"


def test_two_workers_transcribe_two_calls_at_once_as_one_would(whisper_short, corpus):
    """`asr.workers: 2`: two CTranslate2 workers of one thread each, so two calls from two threads run
    at once (the segment stage makes them so, `concurrent_calls`); each gives what one worker gives."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.backends.whisper import WhisperAsr

    two = WhisperAsr(AsrConfig(encode_pad_s=1.0, workers=2))
    assert two.capabilities.concurrent_calls == 2 and whisper_short.capabilities.concurrent_calls == 1
    clips = [[_clip(corpus, "multilingual/fleurs-de-000.ogg")], [_clip(corpus, "speech/speechbrain_spk1_snt1.wav")]]
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda c: two.transcribe(c, [None]), clips))
    alone = [whisper_short.transcribe(c, [None]) for c in clips]
    assert [r[0].language for r in both] == ["de", "en"]
    assert [r[0].text for r in both] == [r[0].text for r in alone]
