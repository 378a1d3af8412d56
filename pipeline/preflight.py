"""Checks that run before Ray starts or any model loads, so that a wrong setting costs seconds and one
line, not minutes of model loading and a page of tracebacks.

Each check returns the problems it found as one-line messages naming what and why; `preflight`
runs them all and raises `PreflightError` with every line, which the CLI prints and exits 2 on. The
cluster's resources are checked later, once Ray is up (`pipeline.execution.check_fits`).
"""

from __future__ import annotations

import os
import tempfile
import uuid

from pipeline.backends.whisper import resolve_whisper_model
from pipeline.config import InputConfig, JobConfig, OutputConfig
from pipeline.errors import UserError, with_retries
from pipeline.models import (
    ModelIntegrityError,
    ModelLoadError,
    cached_sha256,
    check_policy,
    is_file_ref,
    mismatch_message,
    model_refs,
    same_digest,
)
from pipeline.storage import filesystem, put_atomic, unreachable_cause
from pipeline.text import safe

#: Object written and removed under the output to prove it is writable.
PROBE_DIR = "_scriptorium"


class PreflightError(UserError, RuntimeError):
    """One or more settings cannot work; `str()` has one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _why(exc: BaseException) -> str:
    """An exception as a short clause: its type and first line (botocore messages are one line)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {safe(text)}" if text else type(exc).__name__


def check_input(cfg: InputConfig) -> list[str]:
    """The input exists and can be listed (or, for a manifest, read) with the credentials at hand."""
    try:
        fs, path = filesystem(cfg.uri, cfg.storage)
        # One metadata request (s3fs asks for at most one key under a prefix), never a listing: the
        # run lists the input anyway, and a second full listing doubled a no-op rerun's cost.
        info = with_retries(lambda: fs.info(path), attempts=3, retry_stalls=False)  # as the output's probe
        if not path.endswith((".jsonl", ".json")) and info.get("type") != "directory":
            return [f"input {safe(cfg.uri)}: not a folder or prefix (nor a .jsonl manifest)"]
    except FileNotFoundError as exc:
        cause = unreachable_cause(exc)  # fsspec's HTTP filesystem says "not found" for a timeout or a refusal too
        if cause is not None:
            return [f"input {safe(cfg.uri)}: cannot be reached ({_why(cause) if str(cause) else type(cause).__name__})"]
        return [f"input {safe(cfg.uri)}: does not exist"]
    except Exception as exc:  # noqa: BLE001 - anything here is a setup problem to report in one line
        return [f"input {safe(cfg.uri)}: cannot be listed ({_why(exc)})"]
    return []


def check_output(cfg: OutputConfig) -> list[str]:
    """The output can be written: a probe object is written and removed (S3 permissions, a read-only
    disk or a missing bucket show here instead of after the models ran). Nothing is left behind, not
    even a folder: a local output that does not exist yet is probed in its nearest existing parent
    (the run creates it once every check passed)."""
    try:
        fs, root = filesystem(cfg.uri, cfg.storage)
        protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        if protocol in ("file", "local"):
            return _probe_local(cfg.uri, root)
        probe = f"{root.rstrip('/')}/{PROBE_DIR}/probe-{uuid.uuid4().hex[:12]}"

        def write_and_remove() -> None:  # an object store: no folder to leave behind
            put_atomic(fs, probe, b"scriptorium write probe\n")
            fs.rm(probe)

        # a dropped connection or a 5xx is tried again (the run's own writes are too); a store that
        # times out is reported at once, within the storage timeouts (README "Faults and secrets")
        with_retries(write_and_remove, attempts=3, retry_stalls=False)
    except Exception as exc:  # noqa: BLE001
        return [f"output {safe(cfg.uri)}: not writable ({_why(exc)})"]
    return []


def _probe_local(uri: str, root: str) -> list[str]:
    """A temp file created and removed in the output folder, or in its nearest existing parent."""
    folder = os.path.abspath(root)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        return [f"output {safe(uri)}: not writable ({safe(folder)} is a file, not a folder)"]
    with tempfile.TemporaryFile(dir=folder, prefix=".scriptorium-probe-"):
        pass
    return []


def check_models(cfg: JobConfig) -> list[str]:
    """Every model the config names resolves without loading it: an embedded or local Whisper
    model exists (and matches its sha256); a NeMo reference obeys `models.*` rules, and a local
    `.nemo` file exists and matches its sha256. Remote files are verified where they are fetched."""
    problems = []
    asr = cfg.segment_stage.asr
    if asr.backend == "whisper":
        try:  # the embedded model too: its cached copy is re-verified (one stat when unchanged)
            resolve_whisper_model(asr, cfg.models)
        except (FileNotFoundError, ModelIntegrityError, ModelLoadError) as exc:
            problems.append(str(exc))
    lid = cfg.segment_stage.lid
    if lid.backend == "whisper" and lid.model not in (None, asr.model):  # a Whisper model of its own
        try:
            resolve_whisper_model(
                asr.model_copy(update={"model": lid.model, "sha256": lid.sha256}),
                cfg.models,
                key="segment_stage.lid.model",
            )
        except (FileNotFoundError, ModelIntegrityError, ModelLoadError) as exc:
            problems.append(str(exc))
    for key, ref, sha256 in model_refs(cfg):
        if not ref:
            problems.append(f"{key} is not set, but its stage uses the nemo backend")
            continue
        try:
            check_policy(ref, sha256, cfg.models)
        except ModelLoadError as exc:
            problems.append(f"{key}: {exc}")
            continue
        if is_file_ref(ref) and "://" not in ref:
            local = os.path.expanduser(ref)
            if not os.path.isfile(local):
                problems.append(f"{key}: model file {ref!r} does not exist")
            elif sha256 and not same_digest(sha256, found := cached_sha256(local)):
                problems.append(
                    f"{key}: "
                    + mismatch_message(f"model file {ref!r}", sha256, found)
                    + " (refused: a .nemo holds code)"
                )
    return problems


def preflight(cfg: JobConfig) -> None:
    """Run every check; raise `PreflightError` listing all problems at once."""
    problems = check_models(cfg) + check_input(cfg.input) + check_output(cfg.output)
    if problems:
        raise PreflightError(problems)
