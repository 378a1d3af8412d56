"""fsspec access to local folders and object stores. Calls that may meet a transient error go through
`with_retries` (pipeline/errors.py; importable from here too).

Credentials belong in the standard AWS chain (environment, ~/.aws, instance role), where s3fs and
delta-rs find them. A URI that carries them anyway (`s3://KEY:SECRET@bucket/...`, a manifest's
`https://user:pw@host/a.wav`) is split (`split_userinfo`): the URI is kept and stored without them,
they stay in the storage options' memory (`StorageOptions._userinfo`) and are given to the one
filesystem that needs them, and `pipeline.text.redact` replaces them wherever they would be printed.

Timeouts fail fast (`StorageOptions`: connect 10 s, read 30 s), and each request has a bounded budget
of attempts (`S3_ATTEMPTS` botocore attempts, `S3FS_RETRIES` s3fs passes): a store that accepts
connections and never answers costs one request about 2 x 30 s, not the ~15 x 120 s of the libraries'
defaults, before its error is raised (and `with_retries`' own, per-run budget applies above that).
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any
from urllib.parse import unquote

import fsspec

from pipeline.config import StorageOptions
from pipeline.errors import is_transient, with_retries  # noqa: F401 - importable from here, as before
from pipeline.text import remember_secret

#: botocore's attempts at one S3 request (standard mode: throttling, 5xx and timeouts are retried).
S3_ATTEMPTS = 2
#: s3fs's passes over one call (each of `S3_ATTEMPTS` botocore attempts); its default, 5, multiplied
#: botocore's attempts: 15 read timeouts in a row before one error.
S3FS_RETRIES = 1

#: `scheme://user:password@` (or `scheme://token@`) at the start of a URI
_USERINFO = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<info>[^/?#@]*)@")


def split_userinfo(uri: str) -> tuple[str, tuple[str, str] | None]:
    """(`uri` without the `user:password@` before its host, (user, password) or None). Both are
    remembered as secrets (`pipeline.text.remember_secret`), as written and percent-decoded."""
    m = _USERINFO.match(uri)
    if m is None:
        return uri, None
    user, _, password = m.group("info").partition(":")
    for part in (user, password):
        remember_secret(part)
        remember_secret(unquote(part))
    return m.group("scheme") + uri[m.end() :], (unquote(user), unquote(password))


def _location(uri: str) -> str:
    """ "protocol://bucket" or "protocol://host": whom a URI's credentials are for."""
    protocol = fsspec.utils.get_protocol(uri)
    rest = uri.split("://", 1)[1] if "://" in uri else uri
    return f"{protocol}://{rest.split('/', 1)[0]}"


def keep_credentials(uri: str, storage: StorageOptions) -> str:
    """`uri` without its user info; the credentials, if any, kept in `storage`'s memory for the
    bucket or host they were given with (`fsspec_kwargs` passes them to that one filesystem)."""
    clean, creds = split_userinfo(uri)
    if creds is not None:
        storage._userinfo[_location(clean)] = creds
    return clean


def fsspec_kwargs(storage: StorageOptions, protocol: str, uri: str | None = None) -> dict[str, Any]:
    """fsspec's filesystem arguments for `protocol` under `storage` (timeouts, endpoint, anonymity,
    and the credentials a URI gave for `uri`'s bucket or host, if any)."""
    creds = storage._userinfo.get(_location(uri)) if uri is not None else None
    if creds is not None:
        for part in creds:  # this process (a Ray worker too) redacts them from now on
            remember_secret(part)
    if protocol in ("http", "https"):
        # aiohttp's default is 5 minutes in total and nothing per read: a server that accepts and
        # never answers would hold discovery for minutes per manifest line
        import aiohttp  # heavy: aiohttp, only for HTTP(S) URIs

        client: dict[str, Any] = {
            "timeout": aiohttp.ClientTimeout(
                total=None,
                connect=storage.connect_timeout_s,
                sock_connect=storage.connect_timeout_s,
                sock_read=storage.read_timeout_s,
            )
        }
        if creds is not None:
            client["auth"] = aiohttp.BasicAuth(*creds)
        return {"client_kwargs": client}
    if protocol not in ("s3", "s3a"):
        return {}
    # botocore's defaults (60 s connect, 60 s read, several retries) made an unreachable endpoint
    # cost minutes before its first error line
    kw: dict[str, Any] = {
        "anon": storage.anon,
        "config_kwargs": {
            "connect_timeout": storage.connect_timeout_s,
            "read_timeout": storage.read_timeout_s,
            "retries": {"total_max_attempts": S3_ATTEMPTS, "mode": "standard"},
        },
    }
    if storage.endpoint_url:
        kw["client_kwargs"] = {"endpoint_url": storage.endpoint_url}
    if creds is not None:
        kw["key"], kw["secret"] = creds
    return kw


def make_filesystem(protocol: str, storage: StorageOptions, uri: str | None = None) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem for `protocol` (`fsspec_kwargs`), with s3fs's own retries bounded."""
    fs = fsspec.filesystem(protocol, **fsspec_kwargs(storage, protocol, uri))
    if protocol in ("s3", "s3a"):
        fs.retries = S3FS_RETRIES  # a class attribute in s3fs, not an argument
    return fs


def filesystem(uri: str, storage: StorageOptions) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path without protocol) for a URI or a plain local path. A URI's user info is
    taken out (`keep_credentials`): the filesystem gets it, the path never holds it."""
    uri = keep_credentials(uri, storage)
    protocol = fsspec.utils.get_protocol(uri)
    fs = make_filesystem(protocol, storage, uri)
    path = fs._strip_protocol(uri)
    if protocol in ("file", "local"):
        path = os.path.normpath(path)
    return fs, path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return protocol in ("file", "local")


def full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Path from `fs.find` -> the URI a user would write (s3://bucket/key, or the local path)."""
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def put_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write an object that readers see whole or not at all.

    An object-store PUT already is; a local write is made so by writing a temp file and renaming."""
    parent = path.rsplit("/", 1)[0]
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    if protocol in ("file", "local"):
        fs.makedirs(parent, exist_ok=True)  # an object store has no folders (s3fs would ask for the bucket)
        tmp = f"{parent}/.tmp-{os.getpid()}-{os.urandom(4).hex()}-{path.rsplit('/', 1)[-1]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:  # a full disk (or a kill) midway: no half-written temp file stays behind
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    else:
        fs.pipe_file(path, data)


def unreachable_cause(exc: FileNotFoundError) -> BaseException | None:
    """The real cause of a "not found", when the store never said so: fsspec's HTTP filesystem turns
    ANY failure of its HEAD/GET (a refused connection, a timeout) into FileNotFoundError, and s3fs
    keeps botocore's error as the cause. None for a true 404/410 (a missing key or page)."""
    cause = exc.__cause__
    if cause is None or isinstance(cause, FileNotFoundError):
        return None
    if getattr(cause, "status", None) in (404, 410):  # aiohttp (HTTP)
        return None
    # botocore's ClientError has no `.status`: its response says what the store answered
    response = getattr(cause, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    http = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ("NoSuchKey", "NotFound", "404", "410", "NoSuchBucket") or http in (404, 410):
        return None
    return cause
