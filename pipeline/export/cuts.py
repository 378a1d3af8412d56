"""Lhotse: one cut per committed segment (`lhotse`, `lhotse-shar` exports), and the segment's audio cut
out of its recording as 16 kHz mono WAV (`nemo --with-audio`)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from pipeline.config import OutputConfig, StorageOptions
from pipeline.errors import with_retries
from pipeline.export.read import iter_recordings
from pipeline.storage import filesystem, is_local

if TYPE_CHECKING:
    from pipeline.export.dest import _Dest


def lhotse_recording(rec: dict, storage: StorageOptions, tmpdir: str):
    """The recording as `lhotse.Recording.from_file` sees it (a remote one is fetched once to probe it)."""
    from lhotse import AudioSource, Recording  # heavy: Lhotse takes seconds to import

    uri = rec["uri"]
    fs, path = filesystem(uri, storage)
    if is_local(fs):
        return Recording.from_file(path, recording_id=rec["recording_id"])
    local = Path(tmpdir) / ("probe" + Path(path).suffix)
    with_retries(lambda: fs.get_file(path, str(local)))
    try:
        r = Recording.from_file(local, recording_id=rec["recording_id"])
    finally:
        local.unlink(missing_ok=True)
    return Recording(
        id=r.id,
        sources=[AudioSource(type="url", channels=r.channel_ids, source=uri)],
        sampling_rate=r.sampling_rate,
        num_samples=r.num_samples,
        duration=r.duration,
        channel_ids=r.channel_ids,
    )


def _cut(rec, s: dict, fields: dict | None = None):
    """One cut per segment; supervision and word alignment relative to the cut, clamped to the audio."""
    from lhotse import MonoCut, MultiCut, SupervisionSegment  # heavy: Lhotse takes seconds to import
    from lhotse.supervision import AlignmentItem

    start = round(max(0.0, s["start"]), 3)
    end = min(s["end"], rec.duration)
    dur = round(end - start, 3)
    if dur <= 0:
        return None
    cid = f"{s['recording_id']}-{s['segment_index']:05d}"
    mono = len(rec.channel_ids) == 1
    words = []
    for w in s["words"] or []:
        ws, we = max(w["start"], start), min(w["end"], end)
        words.append(
            AlignmentItem(
                symbol=w["word"].strip(),
                start=round(ws - start, 3),
                duration=round(max(0.0, we - ws), 3),
                score=w["confidence"],
            )
        )
    sup = SupervisionSegment(
        id=cid,
        recording_id=rec.id,
        start=0.0,
        duration=dur,
        channel=rec.channel_ids[0] if mono else list(rec.channel_ids),
        text=s["text"],
        language=s["language"],
        speaker=f"{s['recording_id']}-{s['speaker']}" if s["speaker"] else None,
        custom={
            "confidence": s["confidence"],
            "language_prob": s["language_prob"],
            "accepted": s["accepted"],
            "reject_reasons": list(s["reject_reasons"] or []),
        },
        alignment={"word": words},
    )
    custom = {"input_fields": fields} if fields else None  # what the input manifest said of the whole file
    if mono:
        return MonoCut(
            id=cid,
            start=start,
            duration=dur,
            channel=rec.channel_ids[0],
            supervisions=[sup],
            recording=rec,
            custom=custom,
        )
    return MultiCut(
        id=cid,
        start=start,
        duration=dur,
        channel=list(rec.channel_ids),
        supervisions=[sup],
        recording=rec,
        custom=custom,
    )


def iter_cuts(output: OutputConfig, accepted_only: bool = True) -> Iterator[Any]:
    with tempfile.TemporaryDirectory(prefix="scriptorium-probe-") as tmp:
        for rec_row, segs in iter_recordings(output, accepted_only):
            rec = lhotse_recording(rec_row, output.storage, tmp)
            for s in segs:
                cut = _cut(rec, s, rec_row.get("input_fields"))
                if cut is not None:
                    yield cut


def lhotse_cuts(output: OutputConfig, accepted_only: bool = True):
    """A Lhotse CutSet (in memory: for tests and small outputs; exports stream with `iter_cuts`)."""
    from lhotse import CutSet  # heavy: Lhotse takes seconds to import

    return CutSet.from_cuts(iter_cuts(output, accepted_only))


def _segment_wav(rec, s: dict) -> tuple[bytes, int] | None:
    """The segment as 16 kHz mono 16-bit WAV (channels averaged), and its number of samples."""
    import soundfile as sf  # heavy: libsndfile, only for an export with audio

    cut = _cut(rec, s)
    if cut is None:
        return None
    audio = cut.resample(16000).load_audio()
    mono = audio.mean(axis=0) if audio.ndim == 2 else audio
    buf = io.BytesIO()
    sf.write(buf, np.clip(mono, -1, 1), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue(), int(mono.shape[-1])


def _export_lhotse(output: OutputConfig, out: _Dest, accepted_only: bool) -> int:
    """cuts.jsonl.gz, written as the cuts stream in; returns the number of cuts."""
    from lhotse import CutSet  # heavy: Lhotse takes seconds to import

    n = 0
    local = out.staging("cuts.jsonl.gz")
    with CutSet.open_writer(local) as w:
        for cut in iter_cuts(output, accepted_only):
            w.write(cut)
            n += 1
    if n:
        out.put_file("cuts.jsonl.gz", local)
    return n


def _export_shar(output: OutputConfig, out: _Dest, accepted_only: bool, shard_size: int) -> int:
    """Shar shards (cuts + FLAC audio per cut), written in place on a local destination, else staged and
    put; returns the number of cuts."""
    from lhotse.shar import SharWriter  # heavy: Lhotse takes seconds to import

    n = 0
    stage = Path(out.tmp.name) / "shar"
    target = Path(out.root) if out.local else stage
    with SharWriter(str(target), fields={"recording": "flac"}, shard_size=shard_size) as w:
        for cut in iter_cuts(output, accepted_only):
            w.write(cut)
            n += 1
    if n:
        if out.local:
            out.written += [out.path(p.name) for p in sorted(target.iterdir())]
        else:
            for p in sorted(stage.iterdir()):
                out.put_file(p.name, p)
    return n
