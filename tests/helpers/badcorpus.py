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

from tests.helpers import CORPUS

SPEECH = (
    CORPUS / "speech" / "speechbrain_spk1_snt2.wav"
)  # 3.15 s, 16 kHz mono: "Drop the two when you add the figures."
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
    cases.update(make_untrusted_files(dest, s16))
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


# ------------------------------------------------------------------------------- untrusted input (issue 18)

#: Names that would drive a terminal if printed raw: clear screen + home, CR overwrite, an OSC title,
#: a right-to-left override and a line separator. Their audio is good speech: each must be `ok`.
HOSTILE_NAMES = [
    "\x1b[2J\x1b[H FAKE-ALL-GOOD.wav",
    "carriage\rOVERWRITTEN.wav",
    "\x1b]0;owned\x07title.wav",
    "bidi \u202egnp.wav",
    "line\u2028separator.wav",
]


def _with_header_field(data: bytes, find: bytes, offset: int, value: bytes) -> bytes:
    b = bytearray(data)
    i = b.find(find)
    assert i >= 0, find
    b[i + offset : i + offset + len(value)] = value
    return bytes(b)


def lying_wav(path: Path, x: np.ndarray) -> None:
    """A short WAV whose RIFF and data sizes claim ~4 GB (134218 s at 16 kHz 16-bit)."""
    import struct

    sf.write(path, x, 16000, subtype="PCM_16")
    data = _with_header_field(path.read_bytes(), b"data", 4, struct.pack("<I", 0xFFFFFFF0))
    path.write_bytes(data[:4] + struct.pack("<I", 0xFFFFFFF8) + data[8:])


def lying_flac(path: Path, x: np.ndarray, hours: float = 100.0) -> None:
    """A short FLAC whose STREAMINFO claims `hours` of samples."""
    sf.write(path, x, 16000, subtype="PCM_16")
    b = bytearray(path.read_bytes())
    off = 8 + 10  # "fLaC" + block header, then min/max block (2+2) and frame (3+3) sizes
    v = int.from_bytes(b[off : off + 8], "big")
    v = (v & ~((1 << 36) - 1)) | int(hours * 3600 * 16000)
    b[off : off + 8] = v.to_bytes(8, "big")
    path.write_bytes(bytes(b))


def lying_mp3(path: Path, x: np.ndarray, hours: float = 100.0) -> None:
    """A short MP3 whose Xing/Info header claims `hours` of frames."""
    import struct

    _encode(path, x, 16000, "mp3")
    data = path.read_bytes()
    tag = b"Xing" if b"Xing" in data else b"Info"
    path.write_bytes(_with_header_field(data, tag, 8, struct.pack(">I", int(hours * 3600 * 16000 / 576))))


def write_opus(path: Path, x: np.ndarray, rate: int = 48000) -> None:
    import av

    with av.open(str(path), "w") as out:
        st = out.add_stream("libopus", rate=rate, layout="mono")
        pts = 0
        for i in range(0, len(x), 960):
            fr = av.AudioFrame.from_ndarray(
                x[i : i + 960].reshape(1, -1).astype(np.float32), format="flt", layout="mono"
            )
            fr.sample_rate, fr.pts = rate, pts
            pts += 960
            for pk in st.encode(fr):
                out.mux(pk)
        for pk in st.encode(None):
            out.mux(pk)


def make_untrusted_files(dest: Path, s16: np.ndarray) -> dict[str, Case]:
    """Folder cases of issue 18: non-regular files, symlinks out of the folder, hostile names,
    headers that lie, a cut Opus file, a header with 0 channels."""
    import os
    import socket

    cases: dict[str, Case] = {}
    os.mkfifo(dest / "fifo.wav")  # opening it would block forever: it must never be opened
    cases["fifo.wav"] = Case("error", "FIFO")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(dest / "socket.wav"))
        cases["socket.wav"] = Case("error", "socket")
    except OSError:  # path too long for AF_UNIX on this machine: skip the case
        pass
    finally:
        sock.close()
    outside = dest.parent / f"{dest.name}-outside"
    outside.mkdir(exist_ok=True)
    sf.write(outside / "secret.wav", s16, 16000, subtype="PCM_16")
    (dest / "escape_link.wav").symlink_to(outside / "secret.wav")
    cases["escape_link.wav"] = Case("error", "outside the input folder")
    (dest / "etc_link.wav").symlink_to("/etc/passwd")
    cases["etc_link.wav"] = Case("error", "outside the input folder")
    (dest / "dangling_link.wav").symlink_to(dest / "no-such-target.wav")
    cases["dangling_link.wav"] = Case("error", "target does not exist")
    sub = dest / "sub"
    sub.mkdir(exist_ok=True)
    sf.write(sub / "target.wav", speech(path=SPEECH2), 16000, subtype="PCM_16")
    cases["target.wav"] = Case("ok")
    (dest / "inside_link.wav").symlink_to(sub / "target.wav")
    cases["inside_link.wav"] = Case("ok")  # a symlink that stays inside is followed
    for name in HOSTILE_NAMES:
        sf.write(dest / name, s16, 16000, subtype="PCM_16")
        cases[name] = Case("ok")
    lying_wav(dest / "lying_4gb.wav", s16)
    cases["lying_4gb.wav"] = Case("ok", "header declares 134217.73 s but only 3.15 s decode")
    lying_flac(dest / "lying_100h.flac", s16)
    cases["lying_100h.flac"] = Case("ok", "header declares 360000.00 s but only 3.15 s decode")
    lying_mp3(dest / "lying_100h.mp3", s16)
    cases["lying_100h.mp3"] = Case("ok", "header declares 359999.91 s")
    x48 = speech(48000)
    write_opus(dest / "cut.opus", np.concatenate([x48, np.zeros(24000, np.float32), x48]))
    _truncate(dest / "cut.opus", 0.5)
    cases["cut.opus"] = Case("ok", "ends without an end-of-stream page")
    sf.write(dest / "zero_channels.wav", s16, 16000, subtype="PCM_16")
    (dest / "zero_channels.wav").write_bytes(
        _with_header_field((dest / "zero_channels.wav").read_bytes(), b"fmt ", 10, b"\0\0")
    )
    cases["zero_channels.wav"] = Case("error", "0 audio channels")
    return cases


def make_manifest_cases(dest: Path) -> tuple[Path, dict[str, Case]]:
    """A NeMo manifest in `dest/m/` whose entries try to leave it. Returns (manifest path,
    {audio_filepath as written: Case}). Entry names with control characters test the summary."""
    import json

    folder = dest / "m"
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    sf.write(folder / "good.wav", speech(), 16000, subtype="PCM_16")
    sf.write(folder / "sub" / "good2.wav", speech(path=SPEECH2), 16000, subtype="PCM_16")
    (folder / "out_link.wav").symlink_to("/etc/hostname")
    os_fifo = folder / "fifo.wav"
    import os

    os.mkfifo(os_fifo)
    cases = {
        "good.wav": Case("ok"),
        "sub/../sub/good2.wav": Case("ok"),  # '..' that stays inside is fine
        "../../../../../../etc/passwd": Case("error", "outside the manifest's folder"),
        "/etc/hostname": Case("error", "outside the manifest's folder"),
        "file:///etc/shadow": Case("error", "outside the manifest's folder"),
        "http://127.0.0.1:9/x.wav": Case("error", "a local manifest names a http:// entry"),
        "s3://elsewhere/x.wav": Case("error", "a local manifest names a s3:// entry"),
        "out_link.wav": Case("error", "outside the manifest's folder"),
        "fifo.wav": Case("error", "FIFO"),
        "../\x1b[2J\x1b[H FAKE-ALL-GOOD.wav": Case("error", "outside the manifest's folder"),
    }
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"audio_filepath": a, "text": "x"}) + "\n" for a in cases))
    return manifest, cases
