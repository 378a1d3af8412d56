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

import io
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable, Iterator

import fsspec.asyn
import pyarrow as pa
import s3fs

from pipeline.audio import DecodeError, StreamInfo, decode_windows, finished
from pipeline.config import DecodeConfig, StorageOptions
from pipeline.discover import _input_file, not_regular
from pipeline.errors import is_transient, spend_retry
from pipeline.pieces import cut
from pipeline.records import DECODED_SCHEMA, INPUT_SCHEMA, audio_column, peak_rss_mb, rows_to_table
from pipeline.storage import filesystem, is_local, unreachable_cause
from pipeline.text import redact

#: Attempts at a file on transient storage errors (as `pipeline.errors.with_retries`).
RETRIES = 4


def _version(fs, path: str, f) -> dict:
    """size/etag/mtime of the object as opened (s3fs keeps the HEAD result in `f.details`)."""
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
    """A "not found" that is really a refused connection or a timeout (worth retrying), or None for a
    true 404 (`pipeline.storage.unreachable_cause`: botocore's ClientError has no `.status`, so a
    deleted S3 key was once retried 4 times)."""
    return unreachable_cause(exc)


def decode_one(
    uri: str, cfg: DecodeConfig, storage: StorageOptions, listed_size: int | None = None, channel_energy: bool = False
) -> dict:
    """The recording decoded whole, as one row (never in pieces), or its error row."""
    return next(decode_rows(uri, cfg.model_copy(update={"piece_s": 0.0}), storage, listed_size, channel_energy))


def _fetch(fs, path: str) -> tuple[dict, bytes]:
    """A whole object and what the store says of it (what `_version` reads), on a prefetch thread.
    On S3 one GET answers both (its headers hold the size, ETag and modification time); elsewhere it
    is fsspec's `info` and then `cat_file`."""
    try:
        if isinstance(fs, s3fs.S3FileSystem):
            return fsspec.asyn.sync(fs.loop, _s3_get, fs, path)
        return fs.info(path), fs.cat_file(path)
    except FileNotFoundError as exc:
        cause = _unreachable(exc)  # a missing key (s3fs's translation of a 404) stays missing
        if cause is not None:
            raise cause from None  # a refused connection or a timeout, not a missing file: retry
        raise


async def _s3_get(fs, path: str) -> tuple[dict, bytes]:
    """One GET of an S3 object: its bytes and its version, as `S3FileSystem.info` would give it
    (s3fs's own `cat_file` reads the same response and drops the headers). Errors as s3fs maps them
    (a missing key: FileNotFoundError), with its retries."""
    bucket, key, version = fs.split_path(path)

    async def call_and_read() -> tuple[dict, bytes]:
        resp = await fs._call_s3("get_object", Bucket=bucket, Key=key, **s3fs.core.version_id_kw(version), **fs.req_kw)
        try:
            body = await resp["Body"].read()
        finally:
            resp["Body"].close()
        info = {
            "name": path,
            "type": "file",
            "size": resp["ContentLength"],
            "ETag": resp.get("ETag"),
            "LastModified": resp.get("LastModified"),
        }
        return info, body

    return await s3fs.core._error_wrapper(call_and_read, retries=fs.retries)


class _Fetched(io.BytesIO):
    """A prefetched object, readable as the opened file would be; `details` as s3fs's file has them."""

    def __init__(self, info: dict, body: bytes):
        super().__init__(body)
        self.details = info


def decode_rows(
    uri: str,
    cfg: DecodeConfig,
    storage: StorageOptions,
    listed_size: int | None = None,
    channel_energy: bool = False,
    prefetched: Future | None = None,
) -> Iterator[dict]:
    """The recording's decoded row, or, for a recording longer than `cfg.piece_s`, its pieces' rows
    one by one as they decode (pipeline/pieces.py). A failure is an error row; once pieces have gone
    on, it is the last piece's row, so the sink records the whole recording as failed.

    `channel_energy` (diarization.backend=channels) keeps the recording whole: the envelope is made
    for the whole stream at its end."""
    fs, path = filesystem(uri, storage)
    version: dict = {}
    local = is_local(fs)
    piece_s = 0.0 if channel_energy else cfg.piece_s
    sent = 0  # pieces already yielded: a retry decodes again from the start and skips them

    def opened():
        nonlocal prefetched
        if local:
            return _open_local(path)
        if prefetched is not None:  # fetched ahead by `decode_stream`; a retry reads the store again
            fetch, prefetched = prefetched, None
            return _Fetched(*fetch.result())
        try:
            return fs.open(path, "rb")
        except FileNotFoundError as exc:
            cause = _unreachable(exc)
            if cause is not None:
                raise cause from None  # a refused connection or a timeout, not a missing file: retry
            raise

    def attempt() -> Iterator[dict]:
        nonlocal sent
        with opened() as f:
            v = _version(fs, path, f)
            if listed_size is not None and v["size"] != listed_size:
                version.update(v)  # changed since listing: commit what was actually read
            reader = _Reader(f)
            info = StreamInfo()
            try:
                windows = decode_windows(reader, 30.0, cfg.max_duration_s, info, channel_energy)
                for piece in cut(windows, piece_s, cfg.piece_overlap_s):
                    if reader.error is not None:  # decoding "stopped early" because a read failed: retry
                        raise reader.error
                    if piece.index is not None and piece.index < sent:
                        continue
                    warnings = finished(info) if piece.last else []
                    yield {
                        **version,
                        "duration": piece.core_end - piece.core_start,
                        "source_sample_rate": info.source_sample_rate,
                        "source_channels": info.source_channels,
                        "status": "ok",
                        "error": redact("; ".join(warnings)) or None,  # warnings of an ok row (see pipeline/audio.py)
                        "audio": piece.buffer,
                        "channel_energy": info.channel_energy if piece.last else None,
                        **piece.row(),
                    }
                    sent += piece.index is not None
            except DecodeError:
                if reader.error is not None:
                    raise reader.error from None  # a storage error, not bad audio: retry
                raise

    def failed(message: str, **extra) -> dict:
        row = {**extra, "status": "error", "error": message}
        if sent:  # the pieces before it went on: this row ends the recording (pipeline/pieces.py)
            row.update(piece=sent, last_piece=True)
        return row

    # Written out rather than `with_retries`: a retry must resume after the pieces already sent,
    # which a decorator around a generator cannot do. Same policy: 4 attempts, exponential backoff.
    for tries in range(1, RETRIES + 1):
        try:
            yield from attempt()
            return
        except DecodeError as exc:
            yield failed(redact(f"decode: {exc}"), **version)
        except NotRegularFile as exc:
            yield failed(str(exc))
        except FileNotFoundError:
            yield failed("input file not found (deleted after listing?)")
        except Exception as exc:  # noqa: BLE001 - any failure of one file must become its error row
            if is_transient(exc) and tries < RETRIES and spend_retry(exc):
                time.sleep(min(5.0, 0.2 * 2**tries))
                continue
            kind = "storage (gave up after retries)" if is_transient(exc) else "decode"
            yield failed(redact(f"{kind}: {type(exc).__name__}: {exc}"), **version)
        return


def decode_stream(
    batch: pa.Table, cfg: DecodeConfig, storage: StorageOptions, channel_energy: bool = False
) -> Iterator[pa.Table]:
    """Ray Data function: a pooling window of discovery rows -> decoded rows. The window's whole
    recordings leave together, at the end; each piece of a long recording leaves on its own as soon
    as it is decoded (a window of its own downstream), so the stages after decode start on it at once.

    `channel_energy` (the runner sets it for `diarization.backend=channels`): each ok row also carries
    its per-channel energy envelope (pipeline/audio.py) in the `channel_energy` column, float32 bytes
    of (source_channels, frames); null otherwise."""
    whole: list[dict] = []
    names = [n for n in INPUT_SCHEMA.names if n in batch.column_names]
    rows = batch.select(names).to_pylist()
    ahead = _Prefetcher(rows, cfg, storage)
    try:
        for i, row in enumerate(rows):
            t0 = time.perf_counter()
            blank = {"duration": None, "source_sample_rate": None, "source_channels": None}
            refused = row.pop("refused", None)
            if refused:  # discovery refused it (containment, not a regular file, unreachable): never read
                outs: Iterable[dict] = [{"status": "error", "error": redact(refused)}]
            else:
                outs = decode_rows(row["uri"], cfg, storage, row.get("size"), channel_energy, ahead.take(i))
            for out in outs:
                decoded = {"mtime": None, **row, **blank, **out, "decode_wall_seconds": time.perf_counter() - t0}
                if decoded.get("piece") is None:
                    whole.append(decoded)
                    continue
                yield _table([decoded])
                t0 = time.perf_counter()
    finally:
        ahead.close()
    if whole:
        yield _table(whole)


class _Prefetcher:
    """Fetches the next `cfg.prefetch_files` objects of a window on threads while one decodes: a store
    answers in tens of milliseconds, and a window of short clips read one after another would wait
    that long per file, twice (HEAD, GET), with the CPU idle. At most `prefetch_files` objects of at
    most `prefetch_max_mb` each are held at once; local files and longer objects are read as before."""

    def __init__(self, rows: list[dict], cfg: DecodeConfig, storage: StorageOptions):
        self.rows, self.cfg, self.storage = rows, cfg, storage
        self.futures: dict[int, Future] = {}
        self.next = 0
        self.pool = None
        remote = [r for r in rows if not r.get("refused")]
        if cfg.prefetch_files and remote and not is_local(filesystem(remote[0]["uri"], storage)[0]):
            self.pool = ThreadPoolExecutor(max_workers=cfg.prefetch_files, thread_name_prefix="prefetch")
            self._fill(0)

    def _fill(self, current: int) -> None:
        limit = self.cfg.prefetch_max_mb * 1024 * 1024
        while self.next < len(self.rows) and self.next <= current + self.cfg.prefetch_files:
            row = self.rows[self.next]
            if not row.get("refused") and row.get("size") is not None and row["size"] <= limit:
                fs, path = filesystem(row["uri"], self.storage)
                self.futures[self.next] = self.pool.submit(_fetch, fs, path)
            self.next += 1

    def take(self, i: int) -> Future | None:
        """Row i's fetch (None: read it as it decodes), and the next one started."""
        if self.pool is None:
            return None
        self._fill(i + 1)
        return self.futures.pop(i, None)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def decode_batch(batch: pa.Table, cfg: DecodeConfig, storage: StorageOptions, channel_energy: bool = False) -> pa.Table:
    """`decode_stream` as one table (tests and benchmarks that want every row at once)."""
    return pa.concat_tables(list(decode_stream(batch, cfg, storage, channel_energy)))


def _table(rows: list[dict]) -> pa.Table:
    """Decoded rows -> a DECODED_SCHEMA table whose audio and envelopes share the rows' buffers."""
    audio = [r.pop("audio", None) for r in rows]
    energy = [r.pop("channel_energy", None) for r in rows]
    rss = peak_rss_mb()
    for r in rows:
        r["decode_peak_rss_mb"] = rss
    table = rows_to_table(rows, DECODED_SCHEMA, audio)
    i = DECODED_SCHEMA.get_field_index("channel_energy")
    return table.set_column(i, DECODED_SCHEMA.field(i), audio_column(energy))  # the envelopes' memory, no copy
