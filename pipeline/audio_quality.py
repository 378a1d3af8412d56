"""The audio's own quality per utterance, and a second opinion on the text from its word probabilities.

Data teams filter on the audio as well as on the transcript (NeMo Curator's bandwidth and MOS stages,
Emilia-Pipe's DNSMOS): a segment can be transcribed right and still be useless for TTS, or be
transcribed wrong because the audio is a noisy telephone line. The recording stage holds each
recording's whole audio (speech and the silence between), so it computes these once per utterance
(`span_signals`) and they travel in the span to the segment's row:

    snr_db         speech power against the recording's non-speech frames (VAD's gaps), in dB
    bandwidth_hz   the highest frequency whose energy is within 60 dB of the spectrum's peak: ~3,600 for
                   a telephone line or an 8 kHz file upsampled, 5,000-8,000 for wideband audio
    clipped_share  share of samples at or above 0.98 of full scale
    level_dbfs     RMS level, dB relative to full scale
    mos            DNSMOS P.835 overall quality (1..5), a learned MOS from `speechmos`' ONNX weights
                   (MIT, sha256-pinned); off unless `recording_stage.audio_quality.mos` (its CPU cost:
                   README "Pseudo-label quality"); null when off or the weights are absent

The segment stage adds, from the ASR's word probabilities (`word_signals`): `min_word_confidence` (the
least sure word) and `low_word_share` (share of words under 0.5): a mean hides one wrong word. The
decoder's own `avg_logprob` (stored already) gets a rule here too: on held-out data it separates bad
segments from good a little better than `confidence` (README "Pseudo-label quality").

`reasons` turns all of them into reject reasons under `QualityRules`; `pipeline.stages.quality.judge`
calls it, so the segment stage and `scriptorium filter` judge alike. Every function is plain numpy.
"""

from __future__ import annotations

import hashlib
import logging
from functools import lru_cache
from importlib import resources
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import QualityRules
from pipeline.records import AUDIO_SIGNAL_FIELDS, SAMPLE_RATE, WORD_SIGNAL_FIELDS, Span

log = logging.getLogger(__name__)

#: Signals of the audio, as stored in the span and the segments table (pipeline/records.py).
AUDIO_SIGNALS = AUDIO_SIGNAL_FIELDS
#: Signals of the words' probabilities (the segment stage).
WORD_SIGNALS = WORD_SIGNAL_FIELDS

FRAME = 320  # 20 ms at 16 kHz: energy frames
NFFT = 512  # 32 ms: spectrum frames (31.25 Hz bins)
CLIP_LEVEL = 0.98  # |sample| at or above this is counted as clipped (resampling smears a hard 1.0)
LOW_WORD = 0.5  # a word under this probability counts as unsure
POWER_FLOOR = 1e-10  # -100 dBFS: digital silence reads as this, not as -inf
BANDWIDTH_RANGE_DB = 60.0  # bandwidth: bins within this of the spectrum's peak count (corpus: README)
MIN_NOISE_S = 0.5  # non-speech audio needed to measure the noise floor from VAD's gaps

# DNSMOS P.835 (Reddy et al. 2022) as shipped in the `speechmos` wheel (MIT, microsoft/DNS-Challenge).
DNSMOS_FILE = ("speechmos", "dnsmos_models/sig_bak_ovr.onnx")
DNSMOS_SHA256 = "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd"
DNSMOS_SAMPLES = int(9.01 * SAMPLE_RATE)  # the model's fixed input
MOS_BATCH = 16  # utterances per DNSMOS call (9 MB of input)
_OVR_POLY = np.poly1d([-0.06766283, 1.11546468, 0.04602535])  # raw -> MOS (speechmos' non-personalised fit)

#: (signal, bound in QualityRules, kind, reason): a bound left at None is no rule.
_RULES = (
    ("snr_db", "min_snr_db", "min", "low_snr"),
    ("bandwidth_hz", "min_bandwidth_hz", "min", "narrowband"),
    ("clipped_share", "max_clipped_share", "max", "clipped"),
    ("level_dbfs", "min_level_dbfs", "min", "too_quiet"),
    ("mos", "min_mos", "min", "low_mos"),
    ("min_word_confidence", "min_word_confidence", "min", "unsure_word"),
    ("low_word_share", "max_low_word_share", "max", "unsure_words"),
    ("avg_logprob", "min_avg_logprob", "min", "low_avg_logprob"),
)


# -- one function per signal --------------------------------------------------------------------------
def frame_power(audio: np.ndarray) -> np.ndarray:
    """Mean square of every 20 ms frame (the tail shorter than a frame is left out; at least one frame)."""
    n = len(audio) // FRAME
    if n == 0:
        return np.array([float(np.mean(np.square(audio, dtype=np.float64))) if len(audio) else 0.0])
    return np.mean(np.square(audio[: n * FRAME].reshape(n, FRAME), dtype=np.float64), axis=1)


def level_dbfs(clip: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale square wave is 0)."""
    return round(float(10 * np.log10(max(float(np.mean(np.square(clip, dtype=np.float64))), POWER_FLOOR))), 2)


def clipped_share(clip: np.ndarray) -> float:
    """Share of samples at or above `CLIP_LEVEL` of full scale."""
    return round(float(np.count_nonzero(np.abs(clip) >= CLIP_LEVEL)) / max(len(clip), 1), 5)


def noise_floor(audio: np.ndarray, regions: Sequence[Span]) -> float:
    """Noise power of a recording: the median frame power outside its speech regions, when VAD left
    at least `MIN_NOISE_S` of them; else (speech wall to wall) the 5th percentile of all frames."""
    power = frame_power(audio)
    speech = np.zeros(len(power), dtype=bool)
    for r in regions:
        speech[int(r.start * SAMPLE_RATE) // FRAME : int(np.ceil(r.end * SAMPLE_RATE / FRAME))] = True
    quiet = power[~speech]
    if len(quiet) * FRAME >= MIN_NOISE_S * SAMPLE_RATE:
        return max(float(np.median(quiet)), POWER_FLOOR)
    return max(float(np.percentile(power, 5)), POWER_FLOOR)


def snr_db(clip: np.ndarray, noise_power: float) -> float:
    """Speech-to-noise ratio of a clip against the recording's noise power, dB (-20..80)."""
    signal = float(np.mean(np.square(clip, dtype=np.float64))) - noise_power
    return round(float(np.clip(10 * np.log10(max(signal, POWER_FLOOR) / noise_power), -20.0, 80.0)), 2)


def bandwidth_hz(clip: np.ndarray) -> float:
    """The highest frequency whose mean power is within `BANDWIDTH_RANGE_DB` of the spectrum's peak, over
    the clip's louder half of frames (speech, not pauses). A telephone band or an 8 kHz file read at
    16 kHz ends near 3.6-4 kHz (the resampler leaves ~100 dB less above it); wideband speech at 6-8 kHz;
    noise fills the band (the bandwidth of what is there, not of the speech)."""
    n = len(clip) // NFFT
    if n == 0:
        return 0.0
    frames = clip[: n * NFFT].reshape(n, NFFT).astype(np.float32)
    loud = np.mean(np.square(frames), axis=1)
    frames = frames[loud >= np.median(loud)]
    spec = np.mean(np.abs(np.fft.rfft(frames * np.hanning(NFFT).astype(np.float32), axis=1)) ** 2, axis=0)
    db = 10 * np.log10(np.maximum(spec, POWER_FLOOR))
    above = np.nonzero(db > db.max() - BANDWIDTH_RANGE_DB)[0]
    return float(round(above[-1] * SAMPLE_RATE / NFFT))


@lru_cache(maxsize=1)
def dnsmos_session() -> Any | None:
    """The DNSMOS ONNX session (one per process), or None with one warning when the weights are absent
    or not the pinned ones."""
    package, name = DNSMOS_FILE
    try:
        blob = (resources.files(package) / name).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        log.warning("audio quality: no MOS (%s: %s); `pip install speechmos==0.0.1.1`", type(exc).__name__, exc)
        return None
    if hashlib.sha256(blob).hexdigest() != DNSMOS_SHA256:
        log.warning("audio quality: no MOS (%s/%s is not the pinned sha256 %s)", package, name, DNSMOS_SHA256)
        return None
    import onnxruntime as ort  # heavy: ONNX Runtime's native library, only where MOS is computed

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1  # the stage's share of a core
    return ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])


def mos(clips: Sequence[np.ndarray]) -> list[float | None]:
    """DNSMOS overall MOS of each clip, in one batched call: each clip's first 9.01 s (a shorter one
    repeated to fill them, as DNSMOS does). None for every clip when the model is absent."""
    session = dnsmos_session()
    if session is None or not clips:
        return [None] * len(clips)
    raw = []
    for k in range(0, len(clips), MOS_BATCH):
        chunk = clips[k : k + MOS_BATCH]
        batch = np.zeros((len(chunk), DNSMOS_SAMPLES), dtype=np.float32)
        for i, c in enumerate(chunk):
            if len(c):
                batch[i] = np.resize(np.clip(c, -1.0, 1.0), DNSMOS_SAMPLES)  # np.resize repeats the clip
        raw += list(session.run(None, {"input_1": batch})[0][:, 2])
    return [round(float(v), 3) if len(c) else None for v, c in zip(_OVR_POLY(np.array(raw)), clips)]


# -- per utterance ------------------------------------------------------------------------------------
def span_signals(
    audio: np.ndarray, regions: Sequence[Span], clips: Sequence[np.ndarray], with_mos: bool = False
) -> list[dict[str, Any]]:
    """The audio signals (`AUDIO_SIGNALS`) of each utterance `clips[i]` of a recording `audio` whose
    speech `regions` VAD found (the rest is its noise)."""
    noise = noise_floor(audio, regions)
    scores = mos(clips) if with_mos else [None] * len(clips)
    return [
        {
            "snr_db": snr_db(c, noise),
            "bandwidth_hz": bandwidth_hz(c),
            "clipped_share": clipped_share(c),
            "level_dbfs": level_dbfs(c),
            "mos": m,
        }
        for c, m in zip(clips, scores)
    ]


def word_signals(confidences: Sequence[float | None]) -> dict[str, Any]:
    """`min_word_confidence` and `low_word_share` of a segment's word probabilities (None: no words)."""
    p = [c for c in confidences if c is not None]
    if not p:
        return {"min_word_confidence": None, "low_word_share": None}
    return {
        "min_word_confidence": round(min(p), 4),
        "low_word_share": round(sum(1 for c in p if c < LOW_WORD) / len(p), 4),
    }


def segment_signals(span: dict[str, Any], confidences: Sequence[float | None]) -> dict[str, Any]:
    """A segment's audio signals (from its span, the recording stage's) and word signals."""
    return {**{k: span.get(k) for k in AUDIO_SIGNALS}, **word_signals(confidences)}


#: Histogram bins of the run report (report.html): signal -> (low, high, bins); values outside go to the ends.
HISTOGRAMS = {"snr_db": (0.0, 60.0, 12), "bandwidth_hz": (0.0, 8000.0, 16), "mos": (1.0, 5.0, 16)}


def histograms(segments: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """Counts of segments per bin of each `HISTOGRAMS` signal, accepted and rejected apart
    ("snr_db:accepted" -> counts); segments without the signal are left out."""
    out = {f"{k}:{v}": [0] * HISTOGRAMS[k][2] for k in HISTOGRAMS for v in ("accepted", "rejected")}
    for seg in segments:
        verdict = "accepted" if seg.get("accepted") else "rejected"
        for name, (lo, hi, n) in HISTOGRAMS.items():
            value = seg.get(name)
            if value is not None:
                out[f"{name}:{verdict}"][min(n - 1, max(0, int((value - lo) / (hi - lo) * n)))] += 1
    return out


def histograms_of(segments: pa.ChunkedArray) -> dict[str, list[int]]:
    """`histograms` of a `segments` column (list<SEGMENT_TYPE> per recording), reading only the fields
    it needs."""
    flat = pc.list_flatten(segments).combine_chunks() if len(segments) else None
    if flat is None or not len(flat):
        return histograms([])
    names = [n for n in ("accepted", *HISTOGRAMS) if flat.type.get_field_index(n) >= 0]
    cols = {n: flat.field(n).to_pylist() for n in names}
    return histograms([dict(zip(cols, v)) for v in zip(*cols.values())])


def reasons(seg: dict[str, Any], rules: QualityRules) -> list[str]:
    """Reject reasons from the audio and word signals of `seg` (a segments row) under `rules`; a signal
    an older output lacks (missing or null) or a bound left at None rejects nothing."""
    out = []
    if "min_word_confidence" not in seg and seg.get("words"):
        seg = {**word_signals([w["confidence"] for w in seg["words"]]), **seg}
    for signal, bound, kind, reason in _RULES:
        value, limit = seg.get(signal), getattr(rules, bound)
        if value is not None and limit is not None and (value < limit if kind == "min" else value > limit):
            out.append(reason)
    return out
