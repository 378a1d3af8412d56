"""Shared fixtures: the real-speech corpus beside the repo, an isolated Ray temp dir, an S3 server,
the tiny NeMo models, one real pipeline output. Helpers that are not fixtures live in tests/helpers/.

Markers (registered in pyproject.toml): `ray` (starts a Ray cluster), `s3` (an embedded S3 server),
`slow` (over ~20 s on 2 cores). A test gets them from the fixtures it uses (`FIXTURE_MARKS`: the
first test that asks for an expensive fixture pays for it), or from its own decorators.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.helpers import CORPUS

# One Ray session per pytest process, with its files (and auth token) under a private temp dir.
os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="ray-tests-"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Throwaway S3 credentials (every S3 here is moto on 127.0.0.1), set before any test starts Ray so
# that its workers inherit them.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
for _k, _v in S3_CREDENTIALS.items():
    os.environ.setdefault(_k, _v)


#: Marks a test gets from a fixture it uses, directly or through another fixture.
FIXTURE_MARKS = {
    "s3_endpoint": ("s3",),
    "shared_output": ("ray", "slow"),  # a pipeline run (~40 s)
    "tiny": ("slow",),  # NeMo's import and the tiny models' build (~30-60 s)
}


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, marks in FIXTURE_MARKS.items():
            if fixture in item.fixturenames:
                for mark in marks:
                    item.add_marker(mark)


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

    from tests.helpers.faults import free_port

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    os.environ.update(S3_CREDENTIALS)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def tiny() -> dict[str, Path]:
    """Every tiny NeMo model (tests/helpers/nemo_models.py), built once per session: {kind: .nemo path}."""
    from tests.helpers.nemo_models import session_models

    return session_models()


@pytest.fixture(scope="session")
def shared_output() -> tuple[Path, Path]:
    """(input folder, output folder) of ONE run of conf/local.yaml over clips chosen to break exports
    (tests/helpers/pl_output.py), shared by the export, filter and eval tests; a test that changes
    the output copies it first."""
    from tests.helpers.pl_output import pipeline_output

    return pipeline_output()
