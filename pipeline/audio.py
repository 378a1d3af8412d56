"""Decode any common audio file (bytes or file-like, e.g. an S3 stream) to 16 kHz mono float32.

Why PyAV: it bundles FFmpeg's decoders (WAV, FLAC, MP3, Ogg Vorbis/Opus, M4A/AAC, MP4, WebM), reads
from file-like objects, and its resampler downmixes and resamples in one pass. faster-whisper's own
`decode_audio` silently skips undecodable frames and goes through 16-bit integers; we want float32
and an honest error when a file is not audio, so the loop is written out here (it is short).

Memory is bounded: `decode_windows` streams fixed-size windows (the input is read as a stream, one
packet at a time), and `decode` appends each window to ONE growing buffer (a bytearray, which glibc
grows in place with mremap for large sizes), so a long file costs ~1x its float32 samples (2 h:
460 MB), never the 2-3x of "list of chunks -> concatenate -> astype -> tobytes".

Headers are not trusted: limits apply to what decodes. A file whose header declares more than
`max_duration_s` is refused at once only when a seek to the limit finds audio there (a real long
file costs one seek, not an hour of decoding); otherwise the header lied (a 100 KB WAV "of 4 GB", a
FLAC "of 100 h") and the file is decoded for what it holds, with a warning. Decoding stops with an
error as soon as it passes the limit, so `max_duration_s` x 64 KB/s bounds the decoded buffer
whatever the file claims or compresses to (4 h: 922 MB). A file that decodes to less than its header
declares is kept with a warning saying how much is missing; an Ogg stream (Opus, Vorbis), whose
header declares no length, is "truncated" when it ends without its end-of-stream page.

Channel energy (only when asked, for `diarization.backend=channels`): every 10 ms of the decoded
frames (source rate, each channel) becomes its mean square per channel, so a 4 h stereo file costs a
~12 MB envelope (channels x frames float32), never its channel samples.

It stays one module of ~330 lines on purpose: everything below `decode` is a private header check of
`decode_windows` (the policy of the paragraph above, used nowhere else), so it changes with it.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

import numpy as np

from pipeline.records import SAMPLE_RATE

#: A file whose decoded length falls short of what its header declares by more than this is "truncated".
TRUNCATION_TOLERANCE = 0.02
#: Above this share of NaN/inf samples the file is refused; below, they are zeroed with a warning.
MAX_NONFINITE_FRACTION = 0.01
#: Channel energy: one value per channel every ENERGY_FRAME_S (10 ms).
ENERGY_FRAMES_PER_S = 100
ENERGY_FRAME_S = 1 / ENERGY_FRAMES_PER_S
#: More channels than this get no envelope (a warning instead): it bounds the envelope's memory.
MAX_ENERGY_CHANNELS = 8


class DecodeError(ValueError):
    """The file is not decodable audio; the message is shown to the user as the recording's error."""


@dataclass
class DecodedAudio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE (a view of `buffer` when decoded by `decode`)
    source_sample_rate: int
    source_channels: int
    warnings: list[str]
    buffer: bytearray | None = field(default=None, repr=False)  # the samples' bytes (little-endian float32)
    # (channels, frames) float32: mean square of every ENERGY_FRAME_S per source channel, frame 0 at
    # sample 0; None unless asked for (`decode(..., channel_energy=True)`)
    channel_energy: np.ndarray | None = field(default=None, repr=False)

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass
class StreamInfo:
    """What the container says, filled in by `decode_windows` before the first window."""

    source_sample_rate: int = 0
    source_channels: int = 0
    declared_seconds: float | None = None  # from the header; None if the container does not say
    warnings: list[str] = field(default_factory=list)
    samples: int = 0  # decoded so far (16 kHz)
    nonfinite: int = 0  # NaN/inf samples seen (and zeroed)
    channel_energy: np.ndarray | None = None  # (channels, frames) float32, once the stream ends (if asked)


class _ChannelEnergy:
    """Per-channel mean square of every ENERGY_FRAME_S of the decoded frames, read as they come out of
    the decoder (source rate and layout: a second resampler would double the decode time). Squares
    are reduced to frames about once a second, so it holds the envelope plus at most a second of them."""

    def __init__(self) -> None:
        self.rate = 0  # the stream's, from its first frame
        self.channels = 0
        self.done = 0  # envelope frames made; frame k covers source samples [start(k), start(k + 1))
        self.pending: list[np.ndarray] = []  # squares, (channels, n) float32, from start(done) on
        self.pending_n = 0
        self.chunks: list[np.ndarray] = []

    def start(self, k: int) -> int:
        return k * self.rate // ENERGY_FRAMES_PER_S

    def add(self, frame) -> None:
        """One decoded frame."""
        channels, rate = len(frame.layout.channels), int(frame.sample_rate)
        if not self.rate:
            self.rate, self.channels = rate, channels
        if (rate, channels) != (self.rate, self.channels) or not channels or rate < ENERGY_FRAMES_PER_S:
            return  # parameters changing mid-stream: the mono resampler refuses such a stream anyway
        arr = frame.to_ndarray()
        if not frame.format.is_planar:
            arr = arr.reshape(-1, channels).T  # interleaved -> (channels, n)
        if arr.dtype.kind == "u":  # u8: offset binary
            arr = (arr.astype(np.float32) - 128.0) / 128.0
        elif arr.dtype.kind == "i":  # full scale is 1.0, as in the float formats
            arr = arr.astype(np.float32) / float(2 ** (8 * arr.dtype.itemsize - 1))
        else:
            arr = arr.astype(np.float32)
        arr = np.where(np.isfinite(arr), arr, np.float32(0.0))
        self.pending.append(arr * arr)
        self.pending_n += arr.shape[1]
        if self.pending_n >= self.rate:
            self._reduce(final=False)

    def _reduce(self, final: bool) -> None:
        if not self.pending:
            return
        sq = np.concatenate(self.pending, axis=1) if len(self.pending) > 1 else self.pending[0]
        base, n = self.start(self.done), sq.shape[1]
        end = (base + n) * ENERGY_FRAMES_PER_S // self.rate  # the frames that end inside `sq`
        if final and self.start(end) < base + n:
            end += 1  # the last frame, partial
        if end > self.done:
            bounds = np.minimum([self.start(k) - base for k in range(self.done, end + 1)], n)
            sums = np.add.reduceat(sq[:, : bounds[-1]], bounds[:-1], axis=1, dtype=np.float64)
            self.chunks.append((sums / np.diff(bounds)).astype(np.float32))
            sq = sq[:, bounds[-1] :]
            self.done = end
        self.pending = [sq] if sq.shape[1] else []
        self.pending_n = sq.shape[1]

    def result(self, channels: int) -> np.ndarray | None:
        """The envelope, (channels, frames); None if the frames did not hold the header's `channels`."""
        self._reduce(final=True)
        if self.channels and self.channels != channels:
            return None
        if not self.chunks:
            return np.zeros((channels, 0), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(self.chunks, axis=1), dtype="<f4")


def decode_windows(
    source: str | BinaryIO,
    window_s: float = 30.0,
    max_duration_s: float | None = None,
    info: StreamInfo | None = None,
    channel_energy: bool = False,
) -> Iterator[np.ndarray]:
    """Stream 16 kHz mono float32 windows of `window_s` seconds (the last may be shorter).

    Raises DecodeError (not audio, too long, nothing decodable). NaN/inf samples are zeroed as they
    pass and counted in `info.nonfinite`; warnings (corrupt packets, early stop, truncation) are
    appended to `info.warnings` once the stream ends. With `channel_energy`, `info.channel_energy`
    holds the per-channel envelope once the stream ends (see `_ChannelEnergy`)."""
    import av  # heavy: FFmpeg's libraries; only the processes that decode load them

    info = info if info is not None else StreamInfo()
    wav_declared = _wav_declared_seconds(source)
    ogg_eos = _ogg_has_eos(source)
    window = max(1, int(window_s * SAMPLE_RATE))
    limit = int(max_duration_s * SAMPLE_RATE) if max_duration_s else None
    pending: list[np.ndarray] = []
    pending_n = 0
    bad_frames = 0
    header_lied = False
    container = _open(source)
    if not container.streams.audio:
        container.close()
        raise DecodeError("file has no audio stream")
    stream = container.streams.audio[0]
    declared = wav_declared or _declared_seconds(container, stream)
    if max_duration_s and declared and declared > max_duration_s * 1.01:
        # the header says "too long": believe it only if there is audio where the limit lies
        past = _audio_past(container, stream, max_duration_s)
        if past:
            container.close()
            raise DecodeError(
                f"{declared:.0f} s long, more than decode.max_duration_s={max_duration_s:.0f} s; "
                "raise it to process this file"
            )
        header_lied = past is False
        container.close()
        _rewind(source)
        container = _open(source)
        stream = container.streams.audio[0]
    with container:
        info.source_sample_rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        info.source_channels = int(stream.codec_context.channels or 0)
        info.declared_seconds = declared
        if info.source_channels <= 0:
            raise DecodeError("the header declares 0 audio channels: the file is corrupt, nothing can be decoded")
        if info.source_sample_rate <= 0:
            raise DecodeError("the header declares no sample rate: the file is corrupt, nothing can be decoded")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        energy = None
        if channel_energy:
            if info.source_channels <= MAX_ENERGY_CHANNELS:
                energy = _ChannelEnergy()
            else:
                info.warnings.append(
                    f"{info.source_channels} channels: no channel energy (at most {MAX_ENERGY_CHANNELS} channels)"
                )

        def take(frames) -> Iterator[np.ndarray]:
            nonlocal pending, pending_n
            for out in frames:
                arr = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                bad = ~np.isfinite(arr)
                if bad.any():
                    info.nonfinite += int(bad.sum())
                    arr = np.where(bad, np.float32(0.0), arr)
                pending.append(arr)
                pending_n += len(arr)
                info.samples += len(arr)
                if limit is not None and info.samples > limit:
                    raise DecodeError(
                        f"longer than decode.max_duration_s={max_duration_s:.0f} s; raise it to process this file"
                    )
                while pending_n >= window:
                    joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
                    yield joined[:window]
                    rest = joined[window:]
                    pending, pending_n = ([rest] if len(rest) else []), len(rest)

        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    bad_frames += 1
                    continue
                for frame in frames:
                    if energy is not None:
                        energy.add(frame)
                    yield from take(resampler.resample(frame))
            yield from take(resampler.resample(None))
        except av.error.FFmpegError as exc:
            if info.samples == 0:
                raise DecodeError(f"not a decodable audio file ({_reason(exc)})") from None
            info.warnings.append(f"decoding stopped early ({_reason(exc)}); kept the first part")
        if energy is not None:
            info.channel_energy = energy.result(info.source_channels)
            if info.channel_energy is None:
                info.warnings.append(
                    f"no channel energy: the frames do not hold the {info.source_channels} channels the header declares"
                )
        if pending_n:
            yield np.concatenate(pending) if len(pending) > 1 else pending[0]
        del resampler, energy
    # No gc.collect() here (faster-whisper calls one per file for older PyAV's resampler cycles,
    # faster-whisper#390): with PyAV 18, 4 x 384 decodes and 4 x 24 min files kept RSS flat without
    # it, and in a Ray worker a full collection cost ~30 ms per file, most of decoding a short clip.
    if bad_frames:
        info.warnings.append(f"{bad_frames} corrupt packet(s) skipped")
    decoded_s = info.samples / SAMPLE_RATE
    declared = info.declared_seconds
    if info.samples and declared and decoded_s < declared * (1 - TRUNCATION_TOLERANCE) - 0.05:
        lost = declared - decoded_s
        if header_lied or decoded_s < 0.5 * declared:
            info.warnings.append(
                f"header declares {declared:.2f} s but only {decoded_s:.2f} s decode: the header is wrong or the "
                f"file is truncated ({lost:.2f} s missing); kept what decodes"
            )
        else:
            info.warnings.append(
                f"file looks truncated: decoded {decoded_s:.2f} s of the {declared:.2f} s its header declares "
                f"({lost:.2f} s lost)"
            )
    elif info.samples and ogg_eos is False:
        info.warnings.append(
            f"file looks truncated: its Ogg stream ends without an end-of-stream page; decoded {decoded_s:.2f} s, "
            "what followed is lost (an Ogg header declares no length, so how much is unknown)"
        )


def decode(
    source: str | BinaryIO, max_duration_s: float | None = None, window_s: float = 30.0, channel_energy: bool = False
) -> DecodedAudio:
    """Decode, downmix and resample the whole file into one buffer. Raises DecodeError with a reason.
    `channel_energy`: also keep the per-channel energy envelope (`DecodedAudio.channel_energy`)."""
    info = StreamInfo()
    buf = bytearray()
    for win in decode_windows(source, window_s, max_duration_s, info, channel_energy):
        buf += memoryview(np.ascontiguousarray(win, dtype="<f4")).cast("B")
    warnings = finished(info)
    samples = np.frombuffer(buf, dtype="<f4")
    return DecodedAudio(
        samples, info.source_sample_rate, info.source_channels, warnings, buffer=buf, channel_energy=info.channel_energy
    )


def finished(info: StreamInfo) -> list[str]:
    """The verdict on a stream that `decode_windows` has run to its end: its warnings, or DecodeError
    (no samples at all; too many NaN/inf samples). `decode` and decode's pieces (pipeline/pieces.py)
    both end with it."""
    if info.samples == 0:
        raise DecodeError("file holds no audio samples (empty or truncated before the first frame)")
    warnings = list(info.warnings)
    if info.nonfinite:
        frac = info.nonfinite / info.samples
        if frac > MAX_NONFINITE_FRACTION:
            raise DecodeError(f"{frac:.1%} of the samples are NaN or infinite")
        warnings.append(f"{info.nonfinite} NaN/inf samples set to 0")
    return warnings


def _open(source):
    import av  # heavy: FFmpeg's libraries; only the processes that decode load them

    try:
        return av.open(source, mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, EOFError, ValueError) as exc:
        raise DecodeError(f"not a decodable audio file ({_reason(exc)})") from None


def _rewind(source) -> None:
    if not isinstance(source, str):
        source.seek(0)


def _audio_past(container, stream, seconds: float) -> bool | None:
    """Whether the stream holds audio at `seconds` (one seek and one packet, nothing decoded):
    True / False, or None when the container cannot seek (the limit then holds while decoding)."""
    import av  # heavy: FFmpeg's libraries; only the processes that decode load them

    try:
        if stream.time_base is None:
            return None
        container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            t = packet.pts if packet.pts is not None else packet.dts
            if t is None:
                return None
            # a backward seek lands on the last sync point before the target: allow that slack
            return float(t * stream.time_base) >= seconds * 0.9
        return False
    except (av.error.FFmpegError, OSError, ValueError, OverflowError):
        return None


def _ogg_has_eos(source) -> bool | None:
    """For an Ogg file: whether its last page carries the end-of-stream flag (a cut file's does not);
    None when the source is not Ogg or cannot be peeked at."""
    try:
        if isinstance(source, str):
            with open(source, "rb") as f:
                if f.read(4) != b"OggS":
                    return None
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - 65536))
                tail = f.read()
        elif source.seekable():
            pos = source.tell()
            magic = source.read(4)
            if magic != b"OggS":
                source.seek(pos)
                return None
            size = source.seek(0, 2)
            source.seek(max(0, size - 65536))
            tail = source.read()
            source.seek(pos)
        else:
            return None
    except (OSError, AttributeError, ValueError):
        return None
    i = tail.rfind(b"OggS")
    while i >= 0 and (i + 6 > len(tail) or tail[i + 4] != 0):  # version byte 0: a real page header
        i = tail.rfind(b"OggS", 0, i)
    if i < 0:
        return False
    return bool(tail[i + 5] & 0x04)


def _wav_declared_seconds(source) -> float | None:
    """Length a RIFF/WAVE header declares (FFmpeg trusts the file size instead, so a truncated WAV
    would otherwise pass silently). Peeks at the first bytes of a seekable source, then rewinds."""
    try:
        if isinstance(source, str):
            with open(source, "rb") as f:
                head = f.read(4096)
        elif source.seekable():
            pos = source.tell()
            head = source.read(4096)
            source.seek(pos)
        else:
            return None
    except (OSError, AttributeError, ValueError):
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    i, byte_rate = 12, None
    while i + 8 <= len(head):
        cid, size = head[i : i + 4], struct.unpack("<I", head[i + 4 : i + 8])[0]
        if cid == b"fmt " and i + 16 <= len(head):
            byte_rate = struct.unpack("<I", head[i + 16 : i + 20])[0] if i + 20 <= len(head) else None
        elif cid == b"data":
            if not byte_rate or size in (0, 0xFFFFFFFF):  # unknown length (streamed WAV)
                return None
            return size / byte_rate
        i += 8 + size + (size & 1)
    return None


def _declared_seconds(container, stream) -> float | None:
    try:
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / 1_000_000  # AV_TIME_BASE
    except Exception:  # noqa: BLE001 - metadata only
        return None
    return None


def _reason(exc: Exception) -> str:
    """FFmpeg's message without its errno prefix and the stream name (the row already has the URI)."""
    text = str(exc)
    text = text.split("] ", 1)[-1] if "] " in text else text
    return re.sub(r": '[^']*'$", "", text)
