"""Strings from inputs on their way to a terminal or a log: escaped and redacted.

File names, manifest lines, object keys and messages built from them are untrusted: a name holding
`ESC[2J` clears the screen when a summary prints it, CR/LF forge extra lines, OSC sequences retitle
the terminal, and right-to-left overrides make `evil\u202egnp.wav` read as something else. And URLs
carry secrets (`user:password@host`, presigned `X-Amz-Signature=` query strings, `?token=`).

* `printable(s)`: every control, format (bidi overrides and isolates, zero-width marks), line- and
  paragraph-separator character becomes a visible escape (`\\x1b`, `\\r`, `\\n`, `\\u202e`,
  `\\u2028`); everything else, accents and CJK included, is kept as it is.
* `redact(s)`: the password of a `scheme://user:password@host` and the values of secret-looking
  query parameters are replaced by `***`, wherever URLs occur in the text.
* `safe(s)`: both, what every message we print or log goes through.

Parquet and exports keep the true names; only what is shown to a person is escaped.
"""

from __future__ import annotations

import logging
import re
import unicodedata

#: Unicode categories shown as escapes: controls, format characters (bidi, zero-width), separators,
#: lone surrogates (undecodable bytes of a file name)
_ESCAPED_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}
#: Format characters that are harmless and common in real names (emoji joiners): kept.
_KEPT = {"\u200d"}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    cp = ord(ch)
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def printable(s: object) -> str:
    """`s` as text a terminal shows literally: control/bidi/separator characters as visible escapes."""
    text = s if isinstance(s, str) else str(s)
    if text.isprintable() and text.isascii():
        return text  # the common case, fast
    return "".join(
        _escape(ch) if ch not in _KEPT and unicodedata.category(ch) in _ESCAPED_CATEGORIES else ch for ch in text
    )


#: `scheme://user:password@` (and `scheme://token@`): the user info before the host.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<info>[^/\s@?#]+)@")
#: query parameters whose value is a secret (presigned S3/GCS/Azure URLs, API tokens)
_SECRET_PARAM = re.compile(
    r"(?P<key>(?<=[?&;])(?:x-amz-[a-z0-9\-]+|x-goog-[a-z0-9\-]+|signature|sig|token|access_token|"
    r"id_token|refresh_token|api_key|apikey|key|secret|password|passwd|pwd|credential|awsaccesskeyid|"
    r"security-token|se|sp|sv|skoid|sktid|code|auth|authorization)=)(?P<value>[^&#\s'\"]*)",
    re.IGNORECASE,
)


#: Credentials this process has seen (the user info of a URI, `pipeline.storage.split_userinfo`): replaced
#: wherever they occur, not only inside a URL (a library's debug line prints a bucket path or a key alone).
_SECRETS: set[str] = set()


def remember_secret(secret: str) -> None:
    """From now on `redact` replaces `secret` wherever it occurs (short ones too would hide ordinary words)."""
    if secret and len(secret) >= 4:
        _SECRETS.add(secret)


def redact(s: object) -> str:
    """`s` with the credentials of every URL in it, and every secret this process has seen, replaced by `***`."""
    text = s if isinstance(s, str) else str(s)
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: m.group("scheme") + "***@", text)
    return _SECRET_PARAM.sub(lambda m: m.group("key") + ("***" if m.group("value") else ""), text)


def safe(s: object) -> str:
    """What every message that names an input goes through before a terminal or a log: redacted,
    then escaped."""
    return printable(redact(s))


def safe_lines(s: object) -> str:
    """A multi-line message of ours, each line made safe (our own line breaks are kept)."""
    return "\n".join(safe(line) for line in str(s).split("\n"))


class SafeLogFilter(logging.Filter):
    """Redacts and escapes every log record a handler emits (our own and libraries' lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is the logger's problem, not ours
            return True
        clean = safe_lines(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True
