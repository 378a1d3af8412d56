"""Diarization by channel: each channel of a stereo (or multichannel) recording is one party, as in
call-centre recordings and some interviews. Exact and free: no model, no clustering.

Decode keeps the energy of every 10 ms of each source channel (pipeline/audio.py, only when
`diarization.backend=channels`); here each speech frame (inside the VAD regions) goes to the loudest
channel:
  * levels are in dB and median-smoothed over `SMOOTH_S` per channel, so crosstalk (the other party
    bleeding into a microphone, quieter than in its own channel) and short gaps do not flip it;
  * a frame decides only where the loudest channel is at least `ACTIVE_DB` above its own noise floor
    (a low percentile of its level) and `MARGIN_DB` above every other channel; the other frames
    (pauses, a noisier line's hiss, evenly overlapped speech) take the speaker of the nearest frame
    that decides;
  * `pipeline.timeline.exclusive_turns` makes the turns (runs shorter than 0.3 s are absorbed).
Overlapped speech is where two or more channels are active at once: each at least `ACTIVE_DB` above
its own floor and within `OVERLAP_DB` of the loudest (a line's crosstalk, the other party bleeding
into it, lies further down than that), for at least 0.1 s.
Channel k is speaker "ch<k>" (ch0 = left). A mono recording, or one whose channels carry the same
audio (no frame decides), is all "ch0", with a warning the recording stage puts in the row's `error`
column (the row stays ok)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.audio import ENERGY_FRAME_S as FRAME_S
from pipeline.backends.base import Diarization
from pipeline.records import Span
from pipeline.timeline import exclusive_turns, overlapped_speech, speaker_per_frame

#: Median window of the per-channel levels, seconds.
SMOOTH_S = 0.31
#: A frame decides where the loudest channel is this far above its own noise floor ...
ACTIVE_DB = 6.0
#: ... and this far above every other channel.
MARGIN_DB = 3.0
#: A second channel is a second voice (overlap) only within this many dB of the loudest one.
OVERLAP_DB = 15.0
#: The noise floor of a channel: this percentile of its smoothed level over the recording.
FLOOR_PERCENTILE = 5.0
#: Levels are clipped here (digital silence).
SILENCE_DB = -100.0
#: Fewer deciding frames than this (seconds) in the speech: the channels carry the same audio.
MIN_DECIDED_S = 0.3


def channel_names(n: int) -> list[str]:
    return [f"ch{k}" for k in range(max(n, 1))]


def levels(channel_energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(channels, frames) mean squares -> smoothed levels in dB (channels, frames), and each
    channel's noise floor (channels,)."""
    from scipy.ndimage import median_filter  # heavy: SciPy takes about a second to import

    level = 10.0 * np.log10(np.maximum(np.asarray(channel_energy, dtype=np.float64), 10.0 ** (SILENCE_DB / 10)))
    width = max(1, int(round(SMOOTH_S / FRAME_S)) | 1)  # odd: centred
    if level.shape[1] > 1:
        level = median_filter(level, size=(1, width), mode="nearest")
    return level, np.percentile(level, FLOOR_PERCENTILE, axis=1)


def active_channels(channel_energy: np.ndarray) -> np.ndarray:
    """(channels, frames) mean squares -> (frames, channels) 1.0 where a channel carries a voice of
    its own: `ACTIVE_DB` above its floor and within `OVERLAP_DB` of the loudest channel."""
    level, floor = levels(channel_energy)
    on = (level >= floor[:, None] + ACTIVE_DB) & (level >= level.max(axis=0, keepdims=True) - OVERLAP_DB)
    return on.T.astype(np.float32)


def frame_channels(channel_energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(channels, frames) mean squares -> (loudest channel, whether the frame decides) per frame."""
    level, floor = levels(channel_energy)
    top2 = np.sort(level, axis=0)[-2:]  # (2, frames): the second loudest, the loudest
    loudest = level.argmax(axis=0)
    decides = (top2[1] >= floor[loudest] + ACTIVE_DB) & (top2[1] - top2[0] >= MARGIN_DB)
    return loudest, decides


class ChannelDiarizer:
    """Speaker turns from the per-channel energy envelope (`channel_energy`, (channels, frames))."""

    def __init__(self, cfg=None):
        self.cfg = cfg

    def model_id(self) -> str:
        return "channels"

    def speaker_turns(
        self, audio: np.ndarray, regions: Sequence[Span], channel_energy: np.ndarray | None = None
    ) -> list[Span]:
        return self.turns_and_warning(regions, channel_energy)[0]

    def diarize(
        self, audio: np.ndarray, regions: Sequence[Span], channel_energy: np.ndarray | None = None
    ) -> Diarization:
        """Turns, overlapped speech (both channels loud at once), and why a file is one speaker.
        A file whose channels cannot be told apart reports no overlaps (None: cannot tell)."""
        turns, warning = self.turns_and_warning(regions, channel_energy)
        if warning is not None or not turns:
            return Diarization(turns, None if warning else [], warning)
        assert channel_energy is not None
        spans = sorted(regions, key=lambda r: r.start)
        overlaps = overlapped_speech(
            active_channels(channel_energy), FRAME_S, spans, names=channel_names(channel_energy.shape[0])
        )
        return Diarization(turns, overlaps, None)

    def turns_and_warning(
        self, regions: Sequence[Span], channel_energy: np.ndarray | None
    ) -> tuple[list[Span], str | None]:
        """The turns, and why they are all "ch0" when the channels cannot tell the speakers apart."""
        regions = [r for r in sorted(regions, key=lambda r: r.start) if r.end > r.start]
        one = [Span(r.start, r.end, "ch0") for r in regions]
        if not regions:
            return [], None
        why = "diarization.backend=channels: {}, so one speaker (ch0)"
        if channel_energy is None or channel_energy.ndim != 2 or not channel_energy.shape[1]:
            return one, why.format("decode kept no channel energy for this recording")
        if channel_energy.shape[0] < 2:
            return one, why.format("the recording is mono")
        loudest, decides = frame_channels(channel_energy)
        speech = np.zeros(len(loudest), dtype=bool)
        for r in regions:
            speech[int(r.start / FRAME_S) : int(np.ceil(r.end / FRAME_S))] = True
        decides &= speech
        if decides.sum() < MIN_DECIDED_S / FRAME_S:
            return one, why.format(f"its channels carry the same audio (none is {MARGIN_DB:g} dB louder in the speech)")
        n = channel_energy.shape[0]
        votes = np.zeros((len(loudest), n), dtype=np.float32)
        votes[decides, loudest[decides]] = 1.0
        labels = speaker_per_frame(votes)  # frames that do not decide: the nearest one that does
        onehot = np.zeros_like(votes)
        onehot[np.arange(len(labels)), labels] = 1.0
        return exclusive_turns(onehot, FRAME_S, regions, names=channel_names(n)), None
