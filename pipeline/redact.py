"""One redaction for everything a run prints, at every verbosity: `install()` (the CLI calls it once).

`pipeline.text.redact` knows what a secret looks like (a URL's user info, a presigned query string) and
every credential this process has seen (`remember_secret`). Here it is applied where our own calls to
`safe` cannot reach:

* every record of every logger (botocore's, s3fs's and Ray's too) through a filter on the root
  handlers, its message AND its traceback (`exc_info`, `stack_info`), which a plain message filter
  leaves as it is;
* every byte written to stdout and stderr (`RedactingStream`): an uncaught exception's traceback
  under `--debug`, Ray's copies of its workers' log lines, a library's print.

Tables and report files are kept clean at the source (URIs are stored without their user info,
`pipeline.storage.split_userinfo`; error messages go through `redact`), and the report files through
`redact` once more before they are written (`pipeline.runner`).
"""

from __future__ import annotations

import io
import logging
import sys
import traceback
from typing import TextIO

from pipeline.text import SafeLogFilter, redact


class RedactingFilter(SafeLogFilter):
    """`SafeLogFilter` (message redacted and escaped), plus the record's traceback and stack redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        super().filter(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class RedactingStream(io.TextIOBase):
    """A text stream that writes through `redact` to the stream it wraps (line-buffered: a secret is
    never split between two writes of one line)."""

    def __init__(self, inner: TextIO):
        self.inner = inner
        self._pending = ""

    def write(self, s: str) -> int:
        self._pending += s
        if "\n" in self._pending:
            head, self._pending = self._pending.rsplit("\n", 1)
            self.inner.write(redact(head + "\n"))
        if len(self._pending) > 65536:  # no newline for long: let it out (a progress bar, a huge line)
            self.flush()
        return len(s)

    def flush(self) -> None:
        if self._pending:
            self.inner.write(redact(self._pending))
            self._pending = ""
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")

    def __getattr__(self, name: str):
        return getattr(self.inner, name)  # what a library asks of a real stream (`errors`, `reconfigure`)


def install() -> None:
    """Redact every log handler of the root logger and the process's stdout and stderr (idempotent)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))
