"""Faults and secrets (issue 32): a pinned Whisper folder covers every file, credentials never reach
what a run writes or prints, a stalled store fails fast, damaged tables are noticed."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from tests.helpers import LOCAL_CONF
from tests.helpers.cli import cli_inproc


def _flip(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))


def _folder_digest_by_shell(folder: Path) -> str:
    """The documented command (pipeline.models.FOLDER_SHA256_COMMAND), run by the shell, not by us."""
    from pipeline.models import FOLDER_SHA256_COMMAND

    out = subprocess.run(
        ["bash", "-c", FOLDER_SHA256_COMMAND.replace("DIR", f"'{folder}'")], capture_output=True, text=True, check=True
    )
    return out.stdout.split()[0]


def test_require_sha256_covers_whisper_folders(tmp_path, monkeypatch, corpus):
    """A copy of the Whisper folder with one byte flipped: unpinned under models.require_sha256 it is
    refused (exit 2, one line, with the digest to pin); pinned to the original folder it is refused as a
    mismatch; the digest is the documented shell command's. A flipped tokenizer byte is caught too."""
    from pipeline.backends.whisper import EMBEDDED, embedded_model_dir

    monkeypatch.setenv("SCRIPTORIUM_DIGEST_CACHE", str(tmp_path / "digests"))
    original = embedded_model_dir("base")
    pin = _folder_digest_by_shell(original)
    assert pin == EMBEDDED["base"]["folder_sha256"]
    copy = tmp_path / "whisper-copy"
    shutil.copytree(original, copy)
    audio = tmp_path / "in"
    audio.mkdir()
    shutil.copy(corpus / "speech" / "whisper_jfk.flac", audio)

    def run(*extra: str):
        return cli_inproc(
            "run", str(LOCAL_CONF), f"input.uri={audio}", f"output.uri={tmp_path / 'out'}",
            f"segment_stage.asr.model={copy}", *extra,
        )  # fmt: skip

    # an intact copy, pinned to the folder digest: preflight passes the models (the run itself is not needed)
    from pipeline.backends.whisper import resolve_whisper_model
    from pipeline.config import AsrConfig, ModelsConfig

    strict = ModelsConfig(require_sha256=True)
    assert resolve_whisper_model(AsrConfig(model=str(copy), sha256=pin.upper()), strict) == str(copy)
    _flip(copy / "model.bin", 4096)
    res = run("models.require_sha256=true")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no sha256" in lines[0] and "require_sha256" in lines[0], lines
    assert _folder_digest_by_shell(copy) in lines[0]  # the digest to pin, if the folder is trusted
    res = run("models.require_sha256=true", f"segment_stage.asr.sha256={pin}")
    assert res.returncode == 2 and "does not match its sha256" in res.stderr and pin in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    # the older pin (model.bin's digest alone) is not enough where every file must be covered
    _flip(copy / "model.bin", 4096)  # back to the original weights
    _flip(copy / "tokenizer.json", 100)
    res = run("models.require_sha256=true", f"segment_stage.asr.sha256={EMBEDDED['base']['sha256']}")
    assert res.returncode == 2 and "pins" in res.stderr and "model.bin only" in res.stderr, res.stderr
    res = run(f"segment_stage.asr.sha256={pin}")
    assert res.returncode == 2 and "does not match its sha256" in res.stderr, res.stderr
    assert hashlib.sha256((copy / "model.bin").read_bytes()).hexdigest() == EMBEDDED["base"]["sha256"]
