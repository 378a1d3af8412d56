"""Degraded copies of the corpus's referenced files, for calibrating the quality rules on audio they
were not fitted on (issue 35): 5 dB SNR noise, an 8 kHz telephone line, a reverberant room.

    .venv/bin/python bench/degrade.py ../shared/corpus/references.jsonl /tmp/degraded [--kinds noise telephone reverb]

writes DEST/<kind>/<the file's path>.flac (telephone: an 8 kHz WAV, as a phone recording arrives) and
DEST/<kind>/references.jsonl (the same lines, `audio_filepath` pointing at the copy, `degraded` set),
which is both the job's input manifest and `scriptorium eval`'s references.

Made with numpy/scipy rather than an augmentation library (audiomentations, torch-audiomentations):
three transforms of a few lines each, seeded, with nothing new to install; the libraries add room
simulation and codecs this calibration does not need.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.audio import decode  # noqa: E402 - after the path
from pipeline.records import SAMPLE_RATE  # noqa: E402

KINDS = ("noise", "telephone", "reverb")


def speech_power(x: np.ndarray) -> float:
    """Mean power of the louder half of 20 ms frames (the speech, not the pauses)."""
    n = len(x) // 320
    p = np.mean(np.square(x[: n * 320].reshape(n, 320), dtype=np.float64), axis=1)
    return float(np.mean(p[p >= np.median(p)]))


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise at `snr_db` below the speech's power."""
    noise = rng.standard_normal(len(x)) * np.sqrt(speech_power(x) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def telephone(x: np.ndarray) -> tuple[np.ndarray, int]:
    """An 8 kHz telephone line: 300-3,400 Hz band (4th-order Butterworth), G.711 mu-law 8-bit. Returns
    the 8 kHz samples and their rate."""
    from scipy.signal import butter, resample_poly, sosfilt  # heavy: SciPy, this bench only

    y = resample_poly(x, 1, 2)
    y = sosfilt(butter(4, [300, 3400], "bandpass", fs=8000, output="sos"), y)
    y = np.clip(y, -1, 1)
    mu = 255.0
    q = np.round(np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu) * 127) / 127  # 8-bit mu-law
    return (np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu).astype(np.float32), 8000


def reverb(x: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """A room of reverberation time `rt60_s`: convolution with exponentially decaying noise (the
    statistical model of a late reverberant tail) after a direct path; level kept."""
    from scipy.signal import fftconvolve  # heavy: SciPy, this bench only

    t = np.arange(int(rt60_s * SAMPLE_RATE)) / SAMPLE_RATE
    rir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60_s) * 0.3
    rir[0] = 1.0
    y = fftconvolve(x, rir)[: len(x)]
    return (y * np.sqrt(speech_power(x) / max(speech_power(y), 1e-12))).astype(np.float32)


def degrade(references: Path, dest: Path, kinds: tuple[str, ...] = KINDS, seed: int = 0) -> dict[str, Path]:
    """Write the copies of every referenced file with a text; returns kind -> its references.jsonl."""
    import soundfile as sf  # heavy: libsndfile, this bench only

    lines = [json.loads(ln) for ln in references.read_text().splitlines() if ln.strip()]
    lines = [ln for ln in lines if ln.get("text")]
    out = {}
    for kind in kinds:
        rng = np.random.default_rng(seed)
        folder = dest / kind
        rows = []
        for ln in lines:
            x = decode(str(references.parent / ln["audio_filepath"])).samples
            rate = SAMPLE_RATE
            if kind == "noise":
                y = add_noise(x, 5.0, rng)
            elif kind == "telephone":
                y, rate = telephone(x)
            else:
                y = reverb(x, 0.7, rng)
            rel = Path(ln["audio_filepath"]).with_suffix(".wav" if kind == "telephone" else ".flac")
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            peak = float(np.max(np.abs(y))) if len(y) else 0.0
            sf.write(folder / rel, y / peak * 0.9 if peak > 1 else y, rate)
            rows.append({**ln, "audio_filepath": str(rel), "degraded": kind})
        (folder / "references.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        out[kind] = folder / "references.jsonl"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("references", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    a = ap.parse_args(argv)
    for kind, refs in degrade(a.references, a.dest, tuple(a.kinds)).items():
        print(f"{kind}: {refs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
