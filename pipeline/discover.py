"""Discovery: list the input (folder/prefix or NeMo-style JSONL manifest) without reading audio.

Each object comes back with its size and etag/mtime, so the plan (pipeline/ledger/) can tell done
from new from changed BEFORE anything is downloaded. Manifest lines are resolved concurrently, or
trusted where the line already gives `size` and `duration`. Work is ordered in the driver, longest
first (duration from the manifest, else file size as a proxy): cheap, and long files start early
instead of straggling.

Streaming: listings are read page by page (an S3 prefix one `list_objects_v2` page at a time, a
manifest in 8 MB ranges) and every PAGE entries become one Arrow table, so the driver never holds a
million-file corpus as Python objects (~1 KB each), only as Arrow rows (~100 bytes each).
`discover_table` is what the job uses; `discover` gives the same as `InputFile` objects, for small
inputs and tests.

Containment (input is untrusted): a folder's symlinks must resolve inside the folder, a manifest's
local entries inside the manifest's folder, its remote entries on the manifest's own protocol and
bucket (or host); `input.allowed_roots` / `input.allowed_buckets` widen that. Only regular files are
read: a FIFO, socket or device is never opened (a FIFO blocks its reader forever). An entry that is
refused, or cannot be reached, is not dropped: it becomes an `InputFile` with `error` set, which the
job records as a `status=error` row with that reason while the files beside it are processed.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
from fsspec.utils import get_protocol

from pipeline.config import InputConfig
from pipeline.errors import UserError, with_retries
from pipeline.records import LISTED_SCHEMA, InputFile, input_files, input_table
from pipeline.storage import filesystem, full_uri, is_local, keep_credentials, unreachable_cause
from pipeline.text import redact, safe


class DiscoveryError(UserError, ValueError):
    """The input cannot be listed (missing folder, unreadable manifest line)."""


#: Entries per Arrow page of a listing: the most InputFile objects alive at once.
PAGE = 10_000


def discover_table(cfg: InputConfig) -> pa.Table:
    """The input as a LISTED_SCHEMA table, longest first (then by URI), cut to `input.limit`.

    Credentials in `input.uri` (`s3://KEY:SECRET@bucket/...`) are taken out of it here, for good: the
    config, the listing and every table and report keep the URI without them (`keep_credentials`)."""
    cfg.uri = keep_credentials(cfg.uri, cfg.storage)
    entries = _from_manifest(cfg) if cfg.uri.endswith((".jsonl", ".json")) else _from_listing(cfg)
    t = pa.concat_tables([LISTED_SCHEMA.empty_table(), *_pages(entries)])
    est = pc.coalesce(t.column("duration_hint"), pc.divide(pc.cast(t.column("size"), pa.float64()), 32000.0))
    order = pc.sort_indices(
        pa.table({"est": est, "uri": t.column("uri")}), sort_keys=[("est", "descending"), ("uri", "ascending")]
    )
    t = t.take(order)
    return t.slice(0, cfg.limit) if cfg.limit else t


def discover(cfg: InputConfig) -> list[InputFile]:
    """`discover_table` as InputFile objects (small inputs, tests, the Python API)."""
    return input_files(discover_table(cfg))


def _pages(entries: Iterable[InputFile]) -> Iterator[pa.Table]:
    page: list[InputFile] = []
    for f in entries:
        page.append(f)
        if len(page) >= PAGE:
            yield input_table(page)
            page = []
    if page:
        yield input_table(page)


def _from_listing(cfg: InputConfig) -> Iterator[InputFile]:
    fs, root = filesystem(cfg.uri, cfg.storage)
    if is_local(fs):
        yield from _list_local(cfg, root)
        return
    if not with_retries(lambda: fs.exists(root)):
        raise DiscoveryError(f"input.uri {safe(cfg.uri)!r} does not exist")
    exts = tuple(e.lower() for e in cfg.extensions)
    found = _s3_objects(fs, root) if hasattr(fs, "call_s3") else _found(fs, root)
    for path, info in found:
        if info.get("type") == "directory" or not path.lower().endswith(exts):
            continue
        error = None if info.get("type", "file") == "file" else f"refused: not a regular file ({info.get('type')})"
        yield _input_file(full_uri(fs, path), info, error=error)


def _found(fs, root: str) -> Iterator[tuple[str, dict]]:
    """Other object stores: fsspec's `find` (one call; the store's client pages it)."""
    yield from sorted(with_retries(lambda: fs.find(root, detail=True)).items())


#: Keys per S3 listing request (1,000 is the most S3 returns).
LIST_PAGE_KEYS = 1000


def _s3_objects(fs, root: str) -> Iterator[tuple[str, dict]]:
    """(path, info) of every object under an S3 prefix, one `list_objects_v2` page at a time, each page retried on its own. Not s3fs's `find`: it collects the whole listing (and a
    second copy in its directory cache) before returning."""
    bucket, key, _ = fs.split_path(root)
    prefix = key.rstrip("/") + "/" if key else ""
    kwargs: dict = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": LIST_PAGE_KEYS}
    listed = 0
    while True:
        page = with_retries(lambda: fs.call_s3("list_objects_v2", **kwargs))
        for c in page.get("Contents", []):
            if c["Key"].endswith("/"):  # a folder placeholder
                continue
            listed += 1
            yield (
                f"{bucket}/{c['Key']}",
                {"type": "file", "size": c["Size"], "ETag": c.get("ETag"), "LastModified": c.get("LastModified")},
            )
        if not page.get("IsTruncated"):
            break
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
    if not listed and key:  # the input is one object, not a prefix
        yield root, with_retries(lambda: fs.info(root))


_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


def not_regular(mode: int) -> str | None:
    """Why a file of this st_mode is refused (None for a regular file): reading a FIFO blocks until a
    writer comes, a device never ends."""
    if stat.S_ISREG(mode):
        return None
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return f"refused: {kind}, not a regular file; only regular files are read"


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _local_roots(cfg: InputConfig, first: str) -> list[str]:
    """Real (symlink-resolved) local folders inputs may lie in: `first` and input.allowed_roots."""
    roots = [os.path.realpath(first)]
    for r in cfg.allowed_roots:
        if get_protocol(r) in ("file", "local"):
            roots.append(os.path.realpath(os.path.expanduser(r.split("://", 1)[1] if "://" in r else r)))
    return roots


def _local_entry(
    path: str,
    roots: list[str],
    uri: str | None = None,
    duration: float | None = None,
    extra: dict | None = None,
    what: str = "the input folder",
) -> InputFile:
    """A local file as an InputFile, lstat/stat only (never opened): refused (error set) when it
    resolves outside `roots` or is not a regular file."""
    uri = uri or path
    real = os.path.realpath(path)
    if not _inside(real, roots):
        how = "a symlink that resolves" if os.path.islink(path) else "resolves"
        return _input_file(
            uri,
            {},
            duration,
            extra,
            error=f"refused: {how} outside {what} (to {real}); add its folder to input.allowed_roots to allow it",
        )
    try:
        st = os.stat(path)  # follows a symlink whose target is inside
    except FileNotFoundError:
        if os.path.islink(path):
            return _input_file(uri, {}, duration, extra, error="refused: a symlink whose target does not exist")
        return _input_file(uri, {}, duration, extra)  # decode says "not found"
    except OSError as exc:
        return _input_file(
            uri,
            {},
            duration,
            extra,
            error=f"cannot be read: {type(exc).__name__}: {exc.strerror or exc}",
        )
    why = not_regular(st.st_mode)
    info = {"size": st.st_size if why is None else 0, "mtime": st.st_mtime}
    return _input_file(uri, info, duration, extra, error=why)


def _list_local(cfg: InputConfig, root: str) -> Iterator[InputFile]:
    """Walk a local folder without following symlinked folders and without opening anything."""
    if os.path.isfile(root):  # one file given as the input
        yield _local_entry(root, [os.path.realpath(root)])
        return
    if not os.path.isdir(root):
        raise DiscoveryError(f"input.uri {safe(cfg.uri)!r} does not exist")
    exts = tuple(e.lower() for e in cfg.extensions)
    roots = _local_roots(cfg, root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        # symlinked folders are listed in dirnames and not walked into; one named like audio is checked
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            if name.lower().endswith(exts):
                yield _local_entry(os.path.join(dirpath, name), roots)


def _input_file(
    uri: str, info: dict, duration: float | None = None, extra: dict | None = None, error: str | None = None
) -> InputFile:
    etag = info.get("ETag") or info.get("etag")
    mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
    if mtime is not None and not isinstance(mtime, (int, float)):
        mtime = mtime.timestamp()
    return InputFile(
        uri=uri,
        size=int(info.get("size") or 0),
        etag=str(etag).strip('"') if etag else None,
        mtime=float(mtime) if mtime is not None else None,
        duration_hint=duration,
        extra=extra or {},
        error=error,
    )


#: Object HEADs in flight while a manifest is resolved (one serial HEAD per line cost 5.8 s per
#: 1,000 lines on the loopback server, hours per million on a real store).
MANIFEST_CONCURRENCY = 64


#: Attempts at one manifest entry's HEAD (`_resolve`) before it becomes an error row.
STALLED_ENTRY_ATTEMPTS = 2

#: Bytes of a manifest read per request: the manifest is never held whole.
MANIFEST_RANGE = 8 << 20


def _manifest_lines(cfg: InputConfig, fs, path: str) -> Iterator[str]:
    """The manifest's lines, read MANIFEST_RANGE bytes at a time (each range retried on its own).
    Split at "\\n" only, not splitlines(): U+2028 may stand raw inside a JSON string."""

    def fail(why: str) -> DiscoveryError:
        return DiscoveryError(f"manifest {safe(cfg.uri)!r} {why}")

    try:
        size = with_retries(lambda: fs.size(path))
        rest = b""
        # a server that gives no size (HTTP without Content-Length): one read of the whole manifest
        starts = range(0, size, MANIFEST_RANGE) if size is not None else [None]
        for start in starts:
            chunk = with_retries(
                lambda: (
                    fs.cat_file(path)
                    if start is None
                    else fs.cat_file(path, start=start, end=min(start + MANIFEST_RANGE, size))
                )
            )
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                yield line.decode("utf-8")
        if rest:
            yield rest.decode("utf-8")
    except FileNotFoundError:
        raise fail("does not exist") from None
    except UnicodeDecodeError:
        raise fail("is not UTF-8 text") from None
    except DiscoveryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a stalled or refused server: one line, exit 2
        raise fail(f"cannot be read ({type(exc).__name__}: {safe(exc)})") from None


def _from_manifest(cfg: InputConfig) -> Iterator[InputFile]:
    """One InputFile per manifest line. A line that gives both `size` and `duration` is trusted as
    is (no request at all; its optional `etag`/`mtime` are kept for change detection); the others
    are resolved with a HEAD each, MANIFEST_CONCURRENCY at a time."""
    fs, path = filesystem(cfg.uri, cfg.storage)
    lines = _manifest_lines(cfg, fs, path)
    first = next(lines, None)  # a missing or unreadable manifest fails here, before any thread starts
    base = cfg.uri.rsplit("/", 1)[0]
    policy = _Containment(cfg, fs, path)
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(MANIFEST_CONCURRENCY, thread_name_prefix="manifest") as pool:
        for n, line in enumerate(_chain(first, lines), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                audio = row.pop("audio_filepath")
            except (json.JSONDecodeError, KeyError, AttributeError):
                raise DiscoveryError(f"{safe(cfg.uri)} line {n}: not a JSON object with 'audio_filepath'") from None
            if not isinstance(audio, str) or not audio:
                raise DiscoveryError(f"{safe(cfg.uri)} line {n}: 'audio_filepath' is not a non-empty string")
            audio = keep_credentials(audio, cfg.storage)  # stored without them; kept in memory for the read
            uri = audio if ("://" in audio or audio.startswith("/")) else posixpath.join(base, audio)
            dur = row.pop("duration", None)
            try:
                dur = float(dur) if dur is not None else None
            except (TypeError, ValueError):
                raise DiscoveryError(f"{safe(cfg.uri)} line {n}: 'duration' is not a number") from None
            refused = policy.check(audio, uri)  # containment: no I/O
            if dur is not None and isinstance(row.get("size"), int):
                mtime = row.pop("mtime", None)
                info = {
                    "size": row.pop("size"),
                    "etag": row.pop("etag", None),
                    "mtime": mtime if isinstance(mtime, (int, float)) else None,
                }
                yield _input_file(uri, info, dur, row, error=refused)
                continue
            if refused is not None:  # an error row with the reason; nothing is asked of its store
                yield _input_file(uri, {}, dur, row, error=refused)
                continue
            # the filesystem is made here, in this thread: fsspec caches instances per thread, and 64
            # S3 clients (one per pool thread) would cost seconds and hundreds of MB to set up
            afs, apath = filesystem(uri, cfg.storage)
            pending.append(pool.submit(_resolve, afs, apath, uri, dur, row))
            if len(pending) >= MANIFEST_CONCURRENCY:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _chain(first: str | None, rest: Iterator[str]) -> Iterator[str]:
    if first is not None:
        yield first
        yield from rest


def _resolve(afs, apath: str, uri: str, duration: float | None, extra: dict) -> InputFile:
    if is_local(afs):  # stat only (never opened); containment was checked on the real path already
        return _local_entry(apath, [os.path.realpath(apath)], uri, duration, extra)
    try:
        # two attempts: a host that stalls costs this entry 2 read timeouts (60 s by default), then it is
        # an error row and the rest of the run goes on
        info = with_retries(lambda: afs.info(apath), STALLED_ENTRY_ATTEMPTS)
    except FileNotFoundError as exc:
        cause = unreachable_cause(exc)  # fsspec's HTTP says "not found" for a timeout too
        if cause is not None:
            why = f"storage: cannot be reached: {type(cause).__name__}: {redact(cause)}"
            return _input_file(uri, {}, duration, extra, error=why)
        info = {"size": 0}  # kept: decode turns it into an error row instead of losing it silently
    except Exception as exc:  # noqa: BLE001 - unreachable after bounded retries: this entry's error row
        why = f"storage: cannot be reached (gave up after retries): {type(exc).__name__}: {redact(exc)}"
        return _input_file(uri, {}, duration, extra, error=why)
    t = info.get("type", "file")
    error = None if t == "file" else f"refused: not a regular file ({t})"
    return _input_file(uri, info, duration, extra, error=error)


def _bucket(protocol: str, path: str) -> str:
    """The bucket (object stores) or host (http) of a stripped path."""
    if protocol in ("http", "https"):
        return path.split("://", 1)[-1].split("/", 1)[0]
    return path.split("/", 1)[0]


_SAME = {"s3a": "s3", "gcs": "gs", "https": "http", "abfs": "az", "abfss": "az"}


class _Containment:
    """Where a manifest's entries may point: its own folder (local) or its own protocol and bucket
    (remote), plus input.allowed_roots / input.allowed_buckets. `check` returns why an entry is
    refused, or None."""

    def __init__(self, cfg: InputConfig, fs, manifest_path: str):
        self.cfg = cfg
        self.protocol = get_protocol(cfg.uri)
        self.local = is_local(fs)
        if self.local:
            self.roots = _local_roots(cfg, os.path.dirname(os.path.realpath(manifest_path)))
        else:
            self.bucket = _bucket(self.protocol, manifest_path)
            self.buckets = {self.bucket, *cfg.allowed_buckets}
        self.remote_roots = [r for r in cfg.allowed_roots if get_protocol(r) not in ("file", "local")]

    def _allowed_remote_root(self, uri: str) -> bool:
        proto = get_protocol(uri)
        rest = posixpath.normpath(uri.split("://", 1)[1])
        for r in self.remote_roots:
            if _SAME.get(get_protocol(r), get_protocol(r)) == _SAME.get(proto, proto) and _inside(
                rest, [r.split("://", 1)[1].rstrip("/")]
            ):
                return True
        return False

    def check(self, audio: str, uri: str) -> str | None:
        proto = get_protocol(audio) if "://" in audio else None
        if self.local:
            if proto is not None and proto not in ("file", "local"):
                if self._allowed_remote_root(audio):
                    return None
                return (
                    f"refused: a local manifest names a {proto}:// entry; add its prefix to "
                    "input.allowed_roots to allow it"
                )
            path = os.path.normpath(uri.split("://", 1)[1] if "://" in uri else uri)
            real = os.path.realpath(path)
            if not _inside(real, self.roots):
                return (
                    f"refused: resolves outside the manifest's folder (to {real}); add its folder to "
                    "input.allowed_roots to allow it"
                )
            return None
        # a remote manifest: same protocol, same bucket (or an allowed one), never a local path
        if proto is None and audio.startswith("/") or proto in ("file", "local"):
            return (
                f"refused: a local path in a {self.protocol}:// manifest (entries must stay on "
                f"{self.protocol}://{self.bucket})"
            )
        if self._allowed_remote_root(uri):
            return None
        eproto = get_protocol(uri)
        if _SAME.get(eproto, eproto) != _SAME.get(self.protocol, self.protocol):
            return (
                f"refused: a {eproto}:// entry in a {self.protocol}:// manifest; add its prefix to "
                "input.allowed_roots to allow it"
            )
        rest = uri.split("://", 1)[1]
        bucket = _bucket(eproto, rest)
        if bucket not in self.buckets:
            return (
                f"refused: entry in bucket {bucket!r}, outside the manifest's bucket {self.bucket!r}; "
                "add it to input.allowed_buckets to allow it"
            )
        if ".." in rest.split("/")[1:]:
            return "refused: '..' in an object key (the store would read it literally)"
        return None
