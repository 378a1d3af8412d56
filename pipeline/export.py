"""Committed transcripts -> training data and archives, readable without our code.

Formats (`scriptorium export OUTPUT --format F --to DEST`):
    nemo          manifest.jsonl: (audio_filepath, offset, duration, text, lang, ...) into the SOURCE file;
                  `--with-audio` cuts each segment to a 16 kHz mono WAV under DEST/audio/ and points the
                  manifest there (relative paths, which NeMo resolves against the manifest's folder), so an
                  S3 corpus becomes trainable by NeMo's standard datasets; `--split-by-language` writes
                  manifest_<lang>.jsonl per language.
    lhotse        cuts.jsonl.gz: one cut per segment; each recording's sampling rate, channels and length
                  are what `lhotse.Recording.from_file` sees (Opus/WebM report their container rate, not
                  48 kHz), so `load_audio()` and `lhotse.qa.validate(read_data=True)` hold.
    lhotse-shar   Shar shards (cuts + FLAC audio per cut) that `CutSet.from_shar` reads back.
    srt, vtt      subtitles per input, named after the input's path relative to the input root; cues wrap at
                  42 characters x 2 lines, long segments split at word timestamps, VTT speakers as <v> tags,
                  rejected segments marked (VTT NOTE / SRT "[?]") or left out with --drop-rejected.
    txt, json     transcript per input, same naming.

Pseudo-label formats (nemo, lhotse, lhotse-shar) keep only `accepted` segments unless `--all`. Fields an
input manifest carried (reference text, ...) are recorded by each run (`record_input_fields`) and travel
into `json` (`input_fields`) and Lhotse cuts (`cut.custom["input_fields"]`).

Every export reads only committed rows, streams them (the segments table is scanned with a Delta/Arrow
filter CHUNK_RECORDINGS recordings at a time, so memory is bounded by a chunk, not the output), and is
idempotent: the same output exports to the same bytes. A missing, empty or mistyped output, an export that
would hold nothing, or a non-empty destination without `--overwrite` raise ExportError (exit 2).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
import textwrap
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator, Literal

import pyarrow.compute as pc

from pipeline.config import OutputConfig, StorageOptions
from pipeline.ledger import Ledger
from pipeline.storage import filesystem, is_local, put_atomic, with_retries

log = logging.getLogger(__name__)

Format = Literal["nemo", "lhotse", "lhotse-shar", "srt", "vtt", "txt", "json"]
FORMATS = ("nemo", "lhotse", "lhotse-shar", "srt", "vtt", "txt", "json")
CHUNK_RECORDINGS = 1000
MARKER = ".scriptorium-export"  # what this export holds; tells --overwrite the folder is ours
#: Longest file name written (bytes); longer names keep a prefix and a hash of the whole name.
MAX_NAME_BYTES = 200
CUE_LINE_CHARS = 42
CUE_MAX_LINES = 2
CUE_MAX_SECONDS = 7.0
_REC_COLUMNS = ["recording_id", "uri", "duration", "source_sample_rate", "source_channels", "status",
                "language", "fingerprint", "write_id"]


class ExportError(RuntimeError):
    """The export cannot be made as asked (no such output, nothing to export, destination in use): exit 2."""


# -- fields an input manifest carried (reference text, ...) ------------------------------------------
INPUTS_TABLE = "_scriptorium/inputs"


def record_input_fields(output: OutputConfig, files: list) -> int:
    """Keep the extra fields of manifest lines (`InputFile.extra`: reference `text`, `lang`, ...) with the
    output, in the Delta table `_scriptorium/inputs` (recording_id, uri, fields as JSON), so exports and
    `eval` carry them. One predicate overwrite per 5,000 recordings; files without fields are skipped."""
    import pyarrow as pa
    from deltalake import write_deltalake

    rows = [{"recording_id": f.recording_id, "uri": f.uri, "fields": json.dumps(f.extra, sort_keys=True, default=str)}
            for f in files if getattr(f, "extra", None)]
    if not rows:
        return 0
    led = Ledger(output)
    uri = led.table_uri(INPUTS_TABLE)
    schema = pa.schema([("recording_id", pa.string()), ("uri", pa.string()), ("fields", pa.string())])
    for k in range(0, len(rows), 5000):
        part = rows[k : k + 5000]
        quoted = ", ".join("'" + r["recording_id"].replace("'", "''") + "'" for r in part)
        exists = led.table(INPUTS_TABLE) is not None
        write_deltalake(uri, pa.Table.from_pylist(part, schema=schema), mode="overwrite" if exists else "append",
                        predicate=f"recording_id IN ({quoted})" if exists else None, storage_options=led.options)
    return len(rows)


def input_fields(led: Ledger, recording_ids: list[str]) -> dict[str, dict]:
    """recording_id -> the manifest fields recorded for it (empty when none were)."""
    dt = led.table(INPUTS_TABLE)
    if dt is None:
        return {}
    t = dt.to_pyarrow_dataset().to_table(filter=pc.field("recording_id").isin(recording_ids),
                                         columns=["recording_id", "fields"])
    return {rid: json.loads(f) for rid, f in zip(t.column("recording_id").to_pylist(), t.column("fields").to_pylist())}


# -- reading ---------------------------------------------------------------------------------------
def _open(output: OutputConfig) -> tuple[Ledger, list[dict]]:
    led = Ledger(output)
    if led.table("recordings") is None or led.table("segments") is None:
        raise ExportError(f"no Scriptorium output at {output.uri!r} (no committed recordings/segments tables; "
                          "is the URI right?)")
    recs = led.read("recordings", _REC_COLUMNS).to_pylist()
    if not recs:
        raise ExportError(f"output {output.uri!r} is empty: no recording was committed")
    return led, sorted(recs, key=lambda r: r["uri"])


def iter_recordings(output: OutputConfig, accepted_only: bool, drop_rejected: bool = False) -> Iterator[tuple[dict, list[dict]]]:
    """(recording row, its committed segments with text, by start), in URI order, chunk by chunk."""
    led, recs = _open(output)
    for k in range(0, len(recs), CHUNK_RECORDINGS):
        chunk = {r["recording_id"]: r for r in recs[k : k + CHUNK_RECORDINGS]}
        dt = led.table("segments")
        flt = pc.field("recording_id").isin(list(chunk))
        if accepted_only or drop_rejected:
            flt = flt & (pc.field("accepted") == True)  # noqa: E712 - an Arrow expression
        by_rec: dict[str, list[dict]] = {}
        for batch in dt.to_pyarrow_dataset().to_batches(filter=flt, batch_size=8192):
            for s in batch.to_pylist():
                r = chunk[s["recording_id"]]
                if s["text"] and (s["fingerprint"], s["write_id"]) == (r["fingerprint"], r["write_id"]):
                    by_rec.setdefault(s["recording_id"], []).append(s)
        fields = input_fields(led, list(chunk))
        for rid, r in chunk.items():  # chunk keeps URI order
            if by_rec.get(rid):
                yield {**r, "input_fields": fields.get(rid, {})}, sorted(by_rec[rid], key=lambda s: (s["start"], s["segment_index"]))


def _input_root(led: Ledger, recs: list[dict]) -> str:
    """Where input paths are relative to: the last run's input folder (a manifest's folder), else the
    longest common folder of the URIs."""
    try:
        last = json.loads(with_retries(lambda: led.fs.cat_file(led.path("report.json"))))
        base = str(last.get("input_uri") or "")
    except (FileNotFoundError, ValueError):
        base = ""
    if base.endswith((".json", ".jsonl")):
        base = base.rsplit("/", 1)[0]
    base = base.rstrip("/")
    uris = [r["uri"] for r in recs]
    if base and all(u.startswith(base + "/") for u in uris):
        return base
    common = posixpath.commonprefix([u.rsplit("/", 1)[0] + "/" for u in uris])
    return common[: common.rfind("/")] if "/" in common else ""


def _safe_component(name: str, suffix: str = "") -> str:
    """`name + suffix` as a path component no file system refuses: no NUL, not '.'/'..', at most
    MAX_NAME_BYTES bytes (a longer name keeps its start, a hash of the whole name, and `suffix`)."""
    name = name.replace("\x00", "_")
    if name in ("", ".", ".."):
        name = name.replace(".", "_") or "_"
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) + len(suffix.encode()) <= MAX_NAME_BYTES:
        return name + suffix
    digest = hashlib.sha1(raw).hexdigest()[:12]
    keep = MAX_NAME_BYTES - 13 - len(suffix.encode())
    return raw[:keep].decode("utf-8", "ignore") + "-" + digest + suffix


def relative_name(uri: str, root: str, suffix: str) -> str:
    """`root/a/x.wav` -> `a/x.wav.<suffix>` (extension kept: a.wav and a.mp3 must not collide)."""
    rel = uri[len(root) + 1 :] if root and uri.startswith(root + "/") else uri.split("://", 1)[-1].lstrip("/")
    parts = [p for p in rel.split("/") if p]
    return "/".join([*(_safe_component(p) for p in parts[:-1]), _safe_component(parts[-1], "." + suffix)])


# -- destination -----------------------------------------------------------------------------------
class _Dest:
    """DEST on any fsspec file system; files are staged locally and put in place when complete."""

    def __init__(self, dest: str, storage: StorageOptions, overwrite: bool):
        self.fs, root = filesystem(dest, storage)
        self.root = root.rstrip("/")
        self.local = is_local(self.fs)
        if self.fs.exists(self.root):
            if not self.fs.isdir(self.root):
                raise ExportError(f"destination {dest!r} is a file, not a folder")
            if self.fs.ls(self.root):
                if not overwrite:
                    raise ExportError(f"destination {dest!r} is not empty; pass --overwrite to replace it")
                names = [e.rstrip("/").rsplit("/", 1)[-1] for e in self.fs.ls(self.root, detail=False)]
                shar = all(re.match(r"^(cuts|recording)\.\d{6}\.", n) for n in names)
                if MARKER in names or shar:  # our own earlier export: replaced as a whole
                    self.fs.rm(self.root, recursive=True)
        self.fs.makedirs(self.root, exist_ok=True)
        self.written: list[str] = []
        self.tmp = tempfile.TemporaryDirectory(prefix="scriptorium-export-")

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def put_bytes(self, rel: str, data: bytes) -> None:
        path = self.path(rel)
        if "/" in rel:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        put_atomic(self.fs, path, data)
        self.written.append(path)

    def staging(self, rel: str) -> Path:
        p = Path(self.tmp.name) / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def put_file(self, rel: str, local: Path) -> None:
        path = self.path(rel)
        if "/" in rel:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        if self.local:
            shutil.move(str(local), path + ".part")
            os.replace(path + ".part", path)
        else:
            with_retries(lambda: self.fs.put_file(str(local), path))
            local.unlink()
        self.written.append(path)

    def finish(self, meta: dict[str, Any]) -> list[str]:
        if meta["format"] != "lhotse-shar":  # CutSet.from_shar(in_dir) reads every file of the folder
            self.put_bytes(MARKER, json.dumps(meta, sort_keys=True, indent=1).encode())
            self.written.pop()
        self.tmp.cleanup()
        return self.written


# -- lhotse ------------------------------------------------------------------------------------------
def lhotse_recording(rec: dict, storage: StorageOptions, tmpdir: str):
    """The recording as `lhotse.Recording.from_file` sees it (a remote one is fetched once to probe it)."""
    from lhotse import AudioSource, Recording

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
    return Recording(id=r.id, sources=[AudioSource(type="url", channels=r.channel_ids, source=uri)],
                     sampling_rate=r.sampling_rate, num_samples=r.num_samples, duration=r.duration,
                     channel_ids=r.channel_ids)


def _cut(rec, s: dict, fields: dict | None = None):
    """One cut per segment; supervision and word alignment relative to the cut, clamped to the audio."""
    from lhotse import MonoCut, MultiCut, SupervisionSegment
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
        words.append(AlignmentItem(symbol=w["word"].strip(), start=round(ws - start, 3),
                                   duration=round(max(0.0, we - ws), 3), score=w["confidence"]))
    sup = SupervisionSegment(
        id=cid, recording_id=rec.id, start=0.0, duration=dur,
        channel=rec.channel_ids[0] if mono else list(rec.channel_ids), text=s["text"], language=s["language"],
        speaker=f"{s['recording_id']}-{s['speaker']}" if s["speaker"] else None,
        custom={"confidence": s["confidence"], "language_prob": s["language_prob"], "accepted": s["accepted"],
                "reject_reasons": list(s["reject_reasons"] or [])},
        alignment={"word": words},
    )
    custom = {"input_fields": fields} if fields else None  # what the input manifest said of the whole file
    if mono:
        return MonoCut(id=cid, start=start, duration=dur, channel=rec.channel_ids[0], supervisions=[sup], recording=rec,
                       custom=custom)
    return MultiCut(id=cid, start=start, duration=dur, channel=list(rec.channel_ids), supervisions=[sup], recording=rec,
                    custom=custom)


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
    from lhotse import CutSet

    return CutSet.from_cuts(iter_cuts(output, accepted_only))


# -- subtitles and transcripts -----------------------------------------------------------------------
def _join(words: list[str]) -> str:
    if any(w.startswith(" ") for w in words):
        return "".join(words).strip()
    return " ".join(w.strip() for w in words).strip()


def cues(s: dict) -> list[tuple[float, float, str]]:
    """(start, end, text) cues of one segment: at most CUE_LINE_CHARS x CUE_MAX_LINES characters and
    CUE_MAX_SECONDS each, cut between words at their timestamps (a segment without words is one cue)."""
    limit = CUE_LINE_CHARS * CUE_MAX_LINES
    text = " ".join(s["text"].split())
    words = [w for w in (s["words"] or []) if w["word"].strip()]
    if (len(text) <= limit and s["end"] - s["start"] <= CUE_MAX_SECONDS) or not words:
        return [(s["start"], s["end"], text)]
    out, cur = [], []
    for w in words:
        trial = _join([x["word"] for x in cur + [w]])
        if cur and (len(trial) > limit or w["end"] - cur[0]["start"] > CUE_MAX_SECONDS):
            out.append(cur)
            cur = []
        cur.append(w)
    if cur:
        out.append(cur)
    res = []
    for k, ws in enumerate(out):
        start = s["start"] if k == 0 else ws[0]["start"]
        end = s["end"] if k == len(out) - 1 else max(ws[-1]["end"], start + 0.001)
        res.append((start, end, _join([x["word"] for x in ws])))
    return res


def _wrap(text: str) -> str:
    return "\n".join(textwrap.wrap(text, CUE_LINE_CHARS, break_long_words=False, break_on_hyphens=False)) or text


def _ts(t: float, fmt: str) -> str:
    ms = int(round(t * 1000))
    h, ms = divmod(ms, 3600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    sep = "," if fmt == "srt" else "."
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def subtitle_text(segs: list[dict], fmt: Literal["srt", "vtt"]) -> str:
    blocks = ["WEBVTT\n"] if fmt == "vtt" else []
    n = 0
    for s in segs:
        rejected = not s["accepted"]
        if fmt == "vtt" and rejected:
            blocks.append(f"NOTE rejected: {', '.join(s['reject_reasons'] or [])}\n")
        for start, end, text in cues(s):
            n += 1
            times = f"{_ts(start, fmt)} --> {_ts(end, fmt)}"
            body = _wrap(text)
            if fmt == "vtt":
                body = body.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                if s["speaker"]:
                    body = f"<v {s['speaker']}>{body}</v>"
                blocks.append(f"{n}\n{times}\n{body}\n")
            else:
                who = f"[{s['speaker']}] " if s["speaker"] else ""
                blocks.append(f"{n}\n{times}\n{'[?] ' if rejected else ''}{who}{body}\n")
    return "\n".join(blocks)


def subtitles(output: OutputConfig, fmt: Literal["srt", "vtt"]) -> dict[str, str]:
    """recording uri -> subtitle text (every segment with text; rejected ones marked)."""
    return {r["uri"]: subtitle_text(segs, fmt) for r, segs in iter_recordings(output, accepted_only=False)}


def _transcript_json(rec: dict, segs: list[dict]) -> bytes:
    keep = ["segment_index", "start", "end", "speaker", "language", "text", "confidence", "accepted",
            "reject_reasons", "words"]
    doc = {"uri": rec["uri"], "recording_id": rec["recording_id"], "duration": rec["duration"],
           "language": rec["language"], "input_fields": rec.get("input_fields") or {},
           "segments": [{k: s[k] for k in keep} for s in segs]}
    return json.dumps(doc, ensure_ascii=False, indent=1).encode()


# -- NeMo --------------------------------------------------------------------------------------------
def nemo_line(s: dict, audio_filepath: str, offset: float | None, duration: float) -> str:
    """One NeMo manifest line; ensure_ascii so U+2028 and friends stay inside the line."""
    d: dict[str, Any] = {"audio_filepath": audio_filepath}
    if offset is not None:
        d["offset"] = offset
    d.update(duration=duration, text=s["text"], lang=s["language"], speaker=s["speaker"],
             confidence=s["confidence"])
    return json.dumps(d, ensure_ascii=True)


def nemo_manifest(output: OutputConfig, accepted_only: bool = True) -> str:
    """NeMo JSONL in memory (small outputs; the export streams to a file)."""
    lines = [nemo_line(s, r["uri"], s["start"], round(s["end"] - s["start"], 3))
             for r, segs in iter_recordings(output, accepted_only) for s in segs]
    return "\n".join(lines) + ("\n" if lines else "")


def _segment_wav(rec, s: dict) -> tuple[bytes, int] | None:
    """The segment as 16 kHz mono 16-bit WAV (channels averaged), and its number of samples."""
    import numpy as np
    import soundfile as sf

    cut = _cut(rec, s)
    if cut is None:
        return None
    audio = cut.resample(16000).load_audio()
    mono = audio.mean(axis=0) if audio.ndim == 2 else audio
    buf = io.BytesIO()
    sf.write(buf, np.clip(mono, -1, 1), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue(), int(mono.shape[-1])


# -- export --------------------------------------------------------------------------------------------
def export(output: OutputConfig, fmt: Format, dest: str, accepted_only: bool = True, overwrite: bool = False,
           with_audio: bool = False, split_by_language: bool = False, drop_rejected: bool = False,
           shard_size: int = 1000) -> list[str]:
    """Write an export under `dest` (any fsspec URI); returns the paths written."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: {' | '.join(FORMATS)}")
    led, recs = _open(output)  # fails before the destination is touched
    out = _Dest(dest, output.storage, overwrite)
    n = 0
    if fmt == "nemo":
        n = _export_nemo(output, out, accepted_only, with_audio, split_by_language)
    elif fmt == "lhotse":
        from lhotse import CutSet

        local = out.staging("cuts.jsonl.gz")
        with CutSet.open_writer(local) as w:
            for cut in iter_cuts(output, accepted_only):
                w.write(cut)
                n += 1
        if n:
            out.put_file("cuts.jsonl.gz", local)
    elif fmt == "lhotse-shar":
        from lhotse.shar import SharWriter

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
    else:
        root = _input_root(led, recs)
        for rec, segs in iter_recordings(output, accepted_only=False, drop_rejected=drop_rejected):
            name = relative_name(rec["uri"], root, fmt)
            if fmt in ("srt", "vtt"):
                data = subtitle_text(segs, fmt).encode()
            elif fmt == "txt":
                data = "".join(f"{'[' + s['speaker'] + '] ' if s['speaker'] else ''}{s['text']}\n" for s in segs).encode()
            else:
                data = _transcript_json(rec, segs)
            out.put_bytes(name, data)
            n += 1
    if n == 0:
        out.tmp.cleanup()
        raise ExportError(f"nothing to export from {output.uri!r}: {len(recs)} recordings, no "
                          f"{'accepted ' if accepted_only and fmt in ('nemo', 'lhotse', 'lhotse-shar') else ''}"
                          "segment with text" + (" (--all includes rejected ones)" if accepted_only else ""))
    return out.finish({"format": fmt, "output": output.uri, "items": n, "accepted_only": accepted_only})


def _export_nemo(output: OutputConfig, out: _Dest, accepted_only: bool, with_audio: bool, split: bool) -> int:
    n = 0
    names: dict[str, str] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="scriptorium-probe-") as tmp:
        files: dict[str, Any] = {}

        def handle(lang: str | None):
            key = (lang or "unknown") if split else ""
            if key not in files:
                names[key] = f"manifest_{_safe_component(key)}.jsonl" if split else "manifest.jsonl"
                files[key] = stack.enter_context(open(out.staging(names[key]), "w", encoding="ascii"))
            return files[key]

        for rec_row, segs in iter_recordings(output, accepted_only):
            rec = lhotse_recording(rec_row, output.storage, tmp) if with_audio else None
            for s in segs:
                if with_audio:
                    got = _segment_wav(rec, s)
                    if got is None:
                        continue
                    rel = f"audio/{s['recording_id']}/{s['segment_index']:05d}.wav"
                    out.put_bytes(rel, got[0])
                    line = nemo_line(s, rel, None, round(got[1] / 16000, 4))
                else:
                    line = nemo_line(s, s["uri"], s["start"], round(s["end"] - s["start"], 3))
                handle(s["language"]).write(line + "\n")
                n += 1
    for key, name in sorted(names.items()):
        out.put_file(name, out.staging(name))
    return n
