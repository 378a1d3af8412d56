"""Decode stage (CPU tasks): URI -> 16 kHz mono float32 samples, or an error row.

Reads through fsspec (streaming, with bounded retries on transient storage errors) and decodes with
PyAV (pipeline/audio.py). A file that fails never stops the job: it leaves as a row with
status="error" and a message a person can act on.

The row carries the input version seen at listing time (size, etag, mtime) to the ledger, which
commits it. If the object's size at read time differs (replaced between listing and reading), the
read-time version is recorded instead, so the ledger never claims the listed version was processed.

Untrusted input: only regular files are read (a local file is opened non-blocking and checked with
fstat before a byte is read, so a FIFO swapped in after listing cannot hang the worker); an entry
discovery refused (`refused`) becomes its error row without any read; remote reads are bounded by the
storage timeouts (`input.storage.connect_timeout_s` / `read_timeout_s`, S3 and HTTP) and
`with_retries`' attempts, so a stalled source costs at most about 4 x (connect + 2 x read timeout) +
3 s before it is that recording's error row. Messages are redacted (pipeline/text.py) before they
are stored.

Memory: one decoded recording is held once, as a float32 buffer that becomes the Arrow `audio`
value without a copy (one Arrow chunk per row), so a 2-hour file costs ~460 MB here, not 3x that.
"""

from __future__ import annotations

import os
import time

import pyarrow as pa

from pipeline.audio import DecodeError, decode
from pipeline.config import DecodeConfig, StorageOptions
from pipeline.records import DECODED_SCHEMA, INPUT_SCHEMA, audio_column, peak_rss_mb, rows_to_table
from pipeline.storage import filesystem, is_local, is_transient, with_retries
from pipeline.text import redact

def _version(fs, path: str, f) -> dict:
    """size/etag/mtime of the object as opened (s3fs keeps the HEAD result in `f.details`)."""
    from pipeline.discover import _input_file

    info = getattr(f, "details", None) or fs.info(path)
    v = _input_file("", info)
    return {"size": v.size, "etag": v.etag, "mtime": v.mtime}


class _Reader:
    """File-like wrapper that remembers a storage error raised inside PyAV's read callback. FFmpeg
    turns such an error into "invalid data" or an early end of stream; without this, a network
    hiccup would become a permanent "not audio" error or a silently truncated transcript."""

    def __init__(self, f):
        self.f, self.error = f, None

    def read(self, n=-1):
        try:
            return self.f.read(n)
        except Exception as exc:
            self.error = exc
            raise

    def seek(self, *args):
        try:
            return self.f.seek(*args)
        except Exception as exc:
            self.error = exc
            raise

    def tell(self):
        return self.f.tell()

    def seekable(self):
        return self.f.seekable()


class NotRegularFile(ValueError):
    """A local path that is not a regular file (FIFO, socket, device, directory): never read."""


def _open_local(path: str):
    """Open a local file for reading without ever blocking on it: O_NONBLOCK makes opening a FIFO
    return at once, fstat then refuses anything that is not a regular file."""
    from pipeline.discover import not_regular

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        why = not_regular(os.fstat(fd).st_mode)
        if why is not None:
            raise NotRegularFile(why)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _unreachable(exc: FileNotFoundError) -> BaseException | None:
    """fsspec's HTTP filesystem turns ANY failure of its HEAD/GET (refused connection, timeout) into
    FileNotFoundError; the real cause, unless it was a 404/410, is a storage error worth retrying."""
    cause = exc.__cause__
    if cause is None or isinstance(cause, FileNotFoundError):
        return None
    if getattr(cause, "status", None) in (404, 410):
        return None
    return cause


def decode_one(
    uri: str, cfg: DecodeConfig, storage: StorageOptions, listed_size: int | None = None, channel_energy: bool = False
) -> dict:
    fs, path = filesystem(uri, storage)
    version: dict = {}
    local = is_local(fs)

    def opened():
        if local:
            return _open_local(path)
        try:
            return fs.open(path, "rb")
        except FileNotFoundError as exc:
            cause = _unreachable(exc)
            if cause is not None:
                raise cause from None  # a refused connection or a timeout, not a missing file: retry
            raise

    def attempt():
        with opened() as f:
            v = _version(fs, path, f)
            if listed_size is not None and v["size"] != listed_size:
                version.update(v)  # changed since listing: commit what was actually read
            reader = _Reader(f)
            try:
                audio = decode(reader, cfg.max_duration_s, channel_energy=channel_energy)
            except DecodeError:
                if reader.error is not None:
                    raise reader.error from None  # a storage error, not bad audio: retry
                raise
            if reader.error is not None:  # decoding "stopped early" because a read failed: retry
                raise reader.error
            return audio

    try:
        audio = with_retries(attempt)
    except DecodeError as exc:
        return {**version, "status": "error", "error": redact(f"decode: {exc}")}
    except NotRegularFile as exc:
        return {"status": "error", "error": str(exc)}
    except FileNotFoundError:
        return {"status": "error", "error": "input file not found (deleted after listing?)"}
    except Exception as exc:  # noqa: BLE001 - any failure of one file must become its error row
        kind = "storage (gave up after retries)" if is_transient(exc) else "decode"
        return {**version, "status": "error", "error": redact(f"{kind}: {type(exc).__name__}: {exc}")}
    return {
        **version,
        "duration": audio.duration,
        "source_sample_rate": audio.source_sample_rate,
        "source_channels": audio.source_channels,
        "status": "ok",
        "error": redact("; ".join(audio.warnings)) or None,  # warnings of an ok row (see pipeline/audio.py)
        "audio": audio.buffer,
        "channel_energy": audio.channel_energy,
    }


def decode_batch(
    batch: pa.Table, cfg: DecodeConfig, storage: StorageOptions, channel_energy: bool = False
) -> pa.Table:
    """Ray Data function: a batch of discovery rows -> decoded rows (one out per row in).

    `channel_energy` (the runner sets it for `diarization.backend=channels`): each ok row also carries
    its per-channel energy envelope (pipeline/audio.py) in the `channel_energy` column, float32 bytes
    of (source_channels, frames); null otherwise."""
    rows, audio, energy = [], [], []
    names = [n for n in INPUT_SCHEMA.names if n in batch.column_names]
    for row in batch.select(names).to_pylist():
        t0 = time.perf_counter()
        out = {"duration": None, "source_sample_rate": None, "source_channels": None}
        refused = row.pop("refused", None)
        if refused:  # discovery refused it (containment, not a regular file, unreachable): never read
            out.update(status="error", error=redact(refused))
        else:
            out.update(decode_one(row["uri"], cfg, storage, row.get("size"), channel_energy))
        audio.append(out.pop("audio", None))
        energy.append(out.pop("channel_energy", None))
        rows.append({"mtime": None, **row, **out, "decode_wall_seconds": time.perf_counter() - t0})
    rss = peak_rss_mb()
    for row in rows:
        row["decode_peak_rss_mb"] = rss
    table = rows_to_table(rows, DECODED_SCHEMA, audio)
    i = DECODED_SCHEMA.get_field_index("channel_energy")
    return table.set_column(i, DECODED_SCHEMA.field(i), audio_column(energy))  # the envelopes' memory, no copy
