"""What can go wrong, in two kinds: errors the user can act on, and errors worth another attempt.

* `UserError`: the config, the input, the output, a model reference or the cluster is wrong. The
  message says what and what to do; the CLI prints it as one line and exits 2 (`EXIT_USAGE`). Each
  such error keeps its own class where it always lived (`ConfigError` in `pipeline.config`,
  `DiscoveryError` in `pipeline.discover`, `OutputError` and `OutputLockedError` in
  `pipeline.ledger`, `ModelLoadError`, `PreflightError`, `ExportError`, `OutputMissingError`,
  `EvalError`, and `ClusterTooSmall` here) and derives from `UserError` as well as from the builtin it
  always was (`ValueError` or `RuntimeError`), so `except ValueError` elsewhere still holds.
* `is_transient(exc)` and `with_retries(fn)`: the one definition of "retrying may help" (a network
  error, a timeout, throttling, a 5xx, a commit lost to a concurrent writer) and the one bounded,
  backed-off retry (tenacity) that every read, write, fetch and commit goes through.

This module imports nothing of the pipeline, so every layer, `pipeline.config` included, may import it.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Callable, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Something the user can fix (a setting, an input, an output, a model file, the cluster's size);
    the message names it. The CLI prints it as one line and exits 2."""


class ClusterTooSmall(UserError, RuntimeError):
    """A stage asks for more than the cluster can ever offer: it would wait for resources forever."""


# -- transient errors ----------------------------------------------------------------------------

#: Never worth retrying: the object is missing or forbidden, or the data is wrong.
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, ValueError)
#: ... nor delta-rs's refusals of a write that can never succeed as it is (checked by name, so that this
#: module need not import deltalake).
_PERMANENT_NAMES = frozenset({"SchemaMismatchError", "DeltaProtocolError"})
#: Worth retrying whatever their text: a commit lost to a concurrent writer (delta-rs), and the network
#: errors of the S3/HTTP clients (botocore, aiohttp), most of which are not OSErrors. Exact class
#: names: a subclass of botocore's ClientError such as NoSuchKey is not one of them.
_TRANSIENT_NAMES = frozenset(
    {
        "CommitFailedError",
        "ClientError",
        "ClientOSError",
        "ServerDisconnectedError",
        "EndpointConnectionError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ConnectionClosedError",  # botocore: the store dropped the connection before answering
    }
)
#: What a delta-rs error's text says when the condition passes (it has no class for them): a race with
#: another committer, or a storage error that outlived object_store's own retries.
_TRANSIENT_WORDS = (
    "conflict",
    "concurrent",
    "already exists",
    "timeout",
    "timed out",
    "connection",
    "503",
    "500",
    "slowdown",
    "slow down",
    "internalerror",
    "generic s3 error",
)


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt may succeed: network errors, timeouts, throttling, 5xx responses, and a
    Delta commit that lost a race. Missing or forbidden objects, bad data, schema or protocol
    mismatches, and a full disk or store (`storage_full`) are permanent."""
    if isinstance(exc, _PERMANENT) or type(exc).__name__ in _PERMANENT_NAMES or storage_full(exc):
        return False
    if type(exc).__name__ in _TRANSIENT_NAMES or isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return True
    if any(c.__name__ == "DeltaError" for c in type(exc).__mro__):
        text = str(exc).lower()
        return any(w in text for w in _TRANSIENT_WORDS)
    return False


#: Retries one process may spend in all (`with_retries`, decode's own loop), on top of each call's
#: attempts: a store that stalls for good costs a bounded number of timeouts, then every call fails on
#: its first error instead of waiting out its own backoff again and again.
RUN_RETRY_BUDGET = 200
_retries_spent = 0


_STALL_NAMES = frozenset(
    {"ReadTimeoutError", "ConnectTimeoutError", "EndpointConnectionError", "ServerDisconnectedError", "ClientOSError"}
)


def _stalled(exc: BaseException) -> bool:
    """A timeout or a failed connection: what a store that is down or stalled gives."""
    if isinstance(exc, (TimeoutError, ConnectionError)) or type(exc).__name__ in _STALL_NAMES:
        return True
    text = str(exc).lower()
    return "timeout" in text or "timed out" in text


def spend_retry(exc: BaseException | None = None) -> bool:
    """Whether `exc` may be retried as far as this process's budget goes: a timeout or a failed
    connection takes one retry from `RUN_RETRY_BUDGET` (False once it is spent); throttling, a 5xx or
    a lost commit race cost nothing from it (each call's attempts bound them)."""
    global _retries_spent
    if exc is not None and not _stalled(exc):
        return True
    if _retries_spent >= RUN_RETRY_BUDGET:
        return False
    _retries_spent += 1
    return True


def with_retries(
    fn: Callable[[], T],
    attempts: int = 4,
    *,
    wait_s: float = 0.2,
    max_wait_s: float = 5.0,
    jitter: bool = False,
    retry_stalls: bool = True,
) -> T:
    """Call `fn` and return what it returns; on a transient error (`is_transient`) call it again, up to
    `attempts` calls in all, waiting `wait_s`, then twice as long each time, at most `max_wait_s`. The
    last error is raised as it is. `jitter`: each wait is drawn at random below that bound, so that
    writers racing for one commit spread out instead of colliding again. Each retry is taken from the
    process's budget (`spend_retry`): once it is spent, the first error is raised. `retry_stalls=False`:
    a timeout or a failed connection is raised at once (a check that must answer within its timeouts)."""
    # imported here: `pipeline.config` imports this module for `UserError`, and needs no more than the stdlib
    from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential, wait_random_exponential

    wait = (wait_random_exponential if jitter else wait_exponential)(multiplier=wait_s, max=max_wait_s)
    return retry(
        retry=retry_if_exception(
            lambda exc: is_transient(exc) and (retry_stalls or not _stalled(exc)) and spend_retry(exc)
        ),
        stop=stop_after_attempt(attempts),
        wait=wait,
        reraise=True,
    )(fn)()


# -- a full disk or store ------------------------------------------------------------------------

#: errno values of a full disk, and what a full store says (delta-rs's text keeps the OS's words;
#: object_store says an HTTP 507's reason; MinIO names a full drive its own way).
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_WORDS = (
    "no space left on device",
    "disk quota exceeded",
    "insufficient storage",
    "insufficientstorage",
    "quotaexceeded",
    "xminiostoragefull",
    "minimum free drive threshold",
)


class StorageFullError(RuntimeError):
    """A disk or store the run writes to is full (or over its quota). Not a `UserError`: the config
    is right, the run failed (exit 1); the message says what was kept and what to do."""


def storage_full(exc: BaseException | None) -> str | None:
    """What says that the storage is full, when `exc` or an exception it came from (its cause or
    context, a Ray task's `cause`) does: "No space left on device", "Insufficient Storage", ...; None
    otherwise."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return os.strerror(exc.errno)
        text = str(exc).lower()
        for words in _FULL_WORDS:
            if words in text:
                return {"insufficientstorage": "insufficient storage", "quotaexceeded": "quota exceeded"}.get(
                    words, words
                ).capitalize()
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


class QuietStorageFull(logging.Filter):
    """For a terminal's log handler: drop the records that report a full disk or store with a
    traceback (the run ends with one line that says it: `StorageFullError`), and Ray Data's generic
    "internal error, please open an issue" lines that follow one. Log files keep everything."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if storage_full(exc) or (record.levelno >= logging.WARNING and storage_full(_Text(record.getMessage()))):
            self.seen = True
            return False
        return not (self.seen and record.name.startswith("ray.data") and record.levelno >= logging.ERROR)


class _Text(Exception):
    """A log message, looked at by `storage_full` as an exception's text is."""
