"""fsspec access to local folders and object stores, with bounded retries for transient errors.

Credentials never pass through here: s3fs finds them in the standard AWS chain (environment,
~/.aws, instance role). Only the endpoint and anonymity come from config.
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

import fsspec

from pipeline.config import StorageOptions

T = TypeVar("T")


def filesystem(uri: str, storage: StorageOptions) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path without protocol) for a URI or a plain local path."""
    protocol = fsspec.utils.get_protocol(uri)
    fs = fsspec.filesystem(protocol, **storage.fsspec_kwargs(protocol))
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


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: network, throttling, 5xx. Missing files and bad data are permanent."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, ValueError)):
        return False
    name = type(exc).__name__
    return isinstance(exc, (OSError, TimeoutError, ConnectionError)) or name in (
        "ClientError", "ClientOSError", "ServerDisconnectedError", "EndpointConnectionError", "ReadTimeoutError",
    )


def with_retries(fn: Callable[[], T], attempts: int = 4) -> T:
    """Run `fn` with exponential backoff on transient storage errors (tenacity, as s3fs users do)."""
    from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

    wrapped = retry(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.2, max=5),
        reraise=True,
    )(fn)
    return wrapped()



def put_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write an object that readers see whole or not at all.

    An object-store PUT already is; a local write is made so by writing a temp file and renaming."""
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    if protocol in ("file", "local"):
        tmp = f"{parent}/.tmp-{os.getpid()}-{os.urandom(4).hex()}-{path.rsplit('/', 1)[-1]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)
