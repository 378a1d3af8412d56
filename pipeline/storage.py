"""fsspec access to local folders and object stores. Calls that may meet a transient error go through
`with_retries` (pipeline/errors.py; importable from here too).

Credentials never pass through here: s3fs finds them in the standard AWS chain (environment,
~/.aws, instance role). Only the endpoint and anonymity come from config.
"""

from __future__ import annotations

import os
from typing import Any

import fsspec

from pipeline.config import StorageOptions
from pipeline.errors import is_transient, with_retries  # noqa: F401 - importable from here, as before


def fsspec_kwargs(storage: StorageOptions, protocol: str) -> dict[str, Any]:
    """fsspec's filesystem arguments for `protocol` under `storage` (timeouts, endpoint, anonymity)."""
    if protocol in ("http", "https"):
        # aiohttp's default is 5 minutes in total and nothing per read: a server that accepts and
        # never answers would hold discovery for minutes per manifest line
        import aiohttp  # heavy: aiohttp, only for HTTP(S) URIs

        return {
            "client_kwargs": {
                "timeout": aiohttp.ClientTimeout(
                    total=None,
                    connect=storage.connect_timeout_s,
                    sock_connect=storage.connect_timeout_s,
                    sock_read=storage.read_timeout_s,
                )
            }
        }
    if protocol not in ("s3", "s3a"):
        return {}
    # botocore's defaults (60 s connect, 60 s read, several retries) made an unreachable endpoint
    # cost minutes before its first error line
    kw: dict[str, Any] = {
        "anon": storage.anon,
        "config_kwargs": {
            "connect_timeout": storage.connect_timeout_s,
            "read_timeout": storage.read_timeout_s,
            "retries": {"max_attempts": 3, "mode": "standard"},
        },
    }
    if storage.endpoint_url:
        kw["client_kwargs"] = {"endpoint_url": storage.endpoint_url}
    return kw


def filesystem(uri: str, storage: StorageOptions) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path without protocol) for a URI or a plain local path."""
    protocol = fsspec.utils.get_protocol(uri)
    fs = fsspec.filesystem(protocol, **fsspec_kwargs(storage, protocol))
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
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)
