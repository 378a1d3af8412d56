"""Generate the bad-input corpus of issue 4 into a temp folder (never into the repo).

`make_bad_corpus(dest)` writes every case and returns {file name: Case(expected status, what the
error/warning message must contain)}. Speech comes from ../shared/corpus (read, never copied into
the repo); everything else is synthesised with numpy/soundfile/PyAV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
SPEECH = CORPUS / "speech" / "speechbrain_spk1_snt2.wav"  # 3.15 s, 16 kHz mono: "Drop the two when you add the figures."
SPEECH2 = CORPUS / "speech" / "speechbrain_spk2_snt1.wav"  # 2.0 s


@dataclass(frozen=True)
class Case:
    status: str  # expected recordings.status
    message: str | None = None  # substring the `error` column must hold (None: must be empty)


def speech(rate: int = 16000, path: Path = SPEECH) -> np.ndarray:
    x, sr = sf.read(path, dtype="float32")
    if sr != rate:
        import av  # noqa: F401 - resample with numpy's interp: good enough for a test signal

        t = np.arange(int(len(x) * rate / sr)) / rate
        x = np.interp(t, np.arange(len(x)) / sr, x).astype(np.float32)
    return x


def _encode(path: Path, x: np.ndarray, rate: int, codec: str) -> None:
    """Write mono float32 `x` with PyAV (mp3) or soundfile (others)."""
    if codec == "mp3":
        import av

        with av.open(str(path), "w") as out:
            st = out.add_stream("mp3", rate=rate, layout="mono")
            frame_len = 1152
            pts = 0
            for i in range(0, len(x), frame_len):
                chunk = x[i : i + frame_len]
                frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
                frame.sample_rate, frame.pts = rate, pts
                pts += len(chunk)
                for p in st.encode(frame):
                    out.mux(p)
            for p in st.encode(None):
                out.mux(p)
    else:
        sf.write(path, x, rate, format=codec.upper(), subtype="PCM_16")


def _truncate(path: Path, fraction: float | None = None, nbytes: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: nbytes if nbytes is not None else int(len(data) * fraction)])


def make_bad_corpus(dest: Path, include_long: bool = False) -> dict[str, Case]:
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    s16 = speech()
    cases: dict[str, Case] = {}

    def put(name: str, x: np.ndarray, rate: int = 16000, subtype: str = "PCM_16", case: Case = Case("ok")):
        sf.write(dest / name, x, rate, subtype=subtype)
        cases[name] = case

    # not audio at all
    (dest / "empty.wav").write_bytes(b"")
    cases["empty.wav"] = Case("error", "not a decodable audio file")
    (dest / "text_file.wav").write_text("This is a text file that only pretends to be a WAV.\n" * 20)
    cases["text_file.wav"] = Case("error", "not a decodable audio file")
    # truncated: to nothing (header only) -> error; mid-stream -> ok with a warning
    put("header_only.wav", s16)
    _truncate(dest / "header_only.wav", nbytes=44)
    cases["header_only.wav"] = Case("error", "no audio samples")
    long_speech = np.concatenate([s16, np.zeros(8000, np.float32), speech(path=SPEECH2)])
    put("truncated.wav", long_speech)
    _truncate(dest / "truncated.wav", 0.6)
    cases["truncated.wav"] = Case("ok", "truncated")
    _encode(dest / "truncated.flac", long_speech, 16000, "flac")
    _truncate(dest / "truncated.flac", 0.6)
    cases["truncated.flac"] = Case("ok", "truncated")
    _encode(dest / "truncated.mp3", long_speech, 16000, "mp3")
    _truncate(dest / "truncated.mp3", 0.6)
    cases["truncated.mp3"] = Case("ok")  # MP3 has no length header: nothing tells it was cut; any warning is fine
    # NaN / inf: a few -> zeroed with a warning; mostly -> refused
    x = s16.copy()
    x[100:110] = np.nan
    x[5000:5005] = np.inf
    put("some_nan_inf.wav", x, subtype="FLOAT", case=Case("ok", "NaN/inf samples set to 0"))
    x = np.full_like(s16, np.nan)
    put("all_nan.wav", x, subtype="FLOAT", case=Case("error", "NaN or infinite"))
    # formats and layouts
    put("speech_8k_mono.wav", speech(8000), 8000)
    stereo = np.stack([speech(48000), speech(48000) * 0.8], axis=1)
    put("speech_48k_stereo.wav", stereo, 48000)
    six = np.zeros((len(s16), 6), np.float32)
    six[:, 0] = s16
    six[:, 1] = s16 * 0.5
    put("six_channels.wav", six)
    put("clipped.wav", np.clip(s16 * 30, -1, 1))
    # no speech
    put("50ms.wav", rng.normal(0, 0.01, 800).astype(np.float32), case=Case("no_speech"))
    put("silence_10min.wav", np.zeros(16000 * 600, np.float32), case=Case("no_speech"))
    put("white_noise.wav", rng.normal(0, 0.1, 16000 * 10).astype(np.float32), case=Case("no_speech"))
    # awkward names
    put("name with spaces ü é.wav", s16)
    put("日本語の名前 — ñ.wav", speech(path=SPEECH2))
    if include_long:
        write_long_file(dest / "two_hours.flac", 7200.0)
        cases["two_hours.flac"] = Case("ok")
    return cases


def write_long_file(path: Path, seconds: float, rate: int = 16000, speech_at: float = 60.0) -> None:
    """`seconds` of low-level noise with one speech clip at `speech_at`, written in blocks (the
    generator itself never holds the whole file)."""
    rng = np.random.default_rng(1)
    s = speech(rate)
    block = rate * 60
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16", format=path.suffix[1:].upper()) as f:
        total = int(seconds * rate)
        done = 0
        while done < total:
            n = min(block, total - done)
            x = rng.normal(0, 0.002, n).astype(np.float32)
            lo = int(speech_at * rate) - done
            if 0 <= lo < n:
                k = min(len(s), n - lo)
                x[lo : lo + k] += s[:k]
            f.write(x)
            done += n
