"""Shared fixtures: the real-speech corpus beside the repo, an isolated Ray temp dir, an S3 server."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"

# One Ray session per pytest process, with its files (and auth token) under a private temp dir.
os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="ray-tests-"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "references.jsonl").exists():
        pytest.fail(f"the shared speech corpus is missing at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto's threaded HTTP server) on 127.0.0.1, with throwaway credentials."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ[key] = value
    from faults import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
