"""Decode any common audio file (bytes or file-like, e.g. an S3 stream) to 16 kHz mono float32.

Why PyAV: it bundles FFmpeg's decoders (WAV, FLAC, MP3, Ogg Vorbis/Opus, M4A/AAC, MP4, WebM), reads
from file-like objects, and its resampler downmixes and resamples in one pass. faster-whisper's own
`decode_audio` silently skips undecodable frames and goes through 16-bit integers; we want float32
and an honest error when a file is not audio, so the loop is written out here (it is short).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

SAMPLE_RATE = 16000


class DecodeError(ValueError):
    """The file is not decodable audio; the message is shown to the user as the recording's error."""


@dataclass
class DecodedAudio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    source_sample_rate: int
    source_channels: int
    warnings: list[str]

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def decode(source: str | BinaryIO, max_duration_s: float | None = None) -> DecodedAudio:
    """Decode, downmix and resample. Raises DecodeError with a human-readable reason."""
    import av

    warnings: list[str] = []
    chunks: list[np.ndarray] = []
    total = 0
    limit = int(max_duration_s * SAMPLE_RATE) if max_duration_s else None
    bad_frames = 0
    try:
        container = av.open(source, mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not a decodable audio file ({_reason(exc)})") from None
    with container:
        if not container.streams.audio:
            raise DecodeError("file has no audio stream")
        stream = container.streams.audio[0]
        src_rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        src_channels = int(stream.codec_context.channels or 0)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    bad_frames += 1
                    continue
                for frame in frames:
                    for out in resampler.resample(frame):
                        arr = out.to_ndarray().reshape(-1)
                        chunks.append(arr)
                        total += len(arr)
                if limit is not None and total > limit:
                    raise DecodeError(
                        f"longer than decode.max_duration_s={max_duration_s:.0f} s; raise it to process this file"
                    )
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            if not chunks:
                raise DecodeError(f"not a decodable audio file ({_reason(exc)})") from None
            warnings.append(f"decoding stopped early ({_reason(exc)}); kept the first part")
        del resampler
    gc.collect()  # PyAV resampler objects are only freed by the collector (faster-whisper#390)
    if bad_frames:
        warnings.append(f"{bad_frames} corrupt packet(s) skipped")
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise DecodeError("file holds no audio samples (empty or truncated before the first frame)")
    bad = ~np.isfinite(samples)
    if bad.any():
        frac = float(bad.mean())
        if frac > 0.01:
            raise DecodeError(f"{frac:.1%} of the samples are NaN or infinite")
        samples = np.where(bad, 0.0, samples).astype(np.float32)
        warnings.append(f"{int(bad.sum())} NaN/inf samples set to 0")
    return DecodedAudio(samples, src_rate, src_channels, warnings)


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text.split("] ", 1)[-1] if "] " in text else text
