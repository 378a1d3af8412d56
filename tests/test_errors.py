"""pipeline/errors.py: every error a user can act on derives from `UserError` (the CLI's exit 2), and one
predicate tells a transient error from a permanent one for every retry."""

from __future__ import annotations

import errno

import pytest

from pipeline.errors import ClusterTooSmall, UserError, is_transient, with_retries


def test_every_user_error_derives_from_the_base_and_keeps_its_builtin():
    from pipeline.config import ConfigError
    from pipeline.discover import DiscoveryError
    from pipeline.eval import EvalError
    from pipeline.execution.cluster import ClusterTooSmall as FromEngine
    from pipeline.export import ExportError
    from pipeline.filter import OutputMissingError
    from pipeline.ledger import LegacyOutputError, OutputError, OutputLockedError
    from pipeline.models import ModelIntegrityError, ModelLoadError
    from pipeline.preflight import PreflightError
    from pipeline.vocabulary import VocabularyError

    assert FromEngine is ClusterTooSmall  # importable from where it was
    builtin = {
        ConfigError: ValueError,
        VocabularyError: ValueError,
        DiscoveryError: ValueError,
        ClusterTooSmall: RuntimeError,
        ModelLoadError: RuntimeError,
        PreflightError: RuntimeError,
        ExportError: RuntimeError,
        OutputMissingError: RuntimeError,
        EvalError: RuntimeError,
        OutputError: RuntimeError,
        OutputLockedError: RuntimeError,
        LegacyOutputError: RuntimeError,
    }
    for cls, base in builtin.items():
        assert issubclass(cls, UserError) and issubclass(cls, base), cls
        assert not is_transient(cls("x"))
    # not the user's to fix: a corrupt or tampered model file is refused, and it is not a usage error
    assert not issubclass(ModelIntegrityError, UserError)


def test_transient_errors_are_the_passing_ones():
    from botocore.exceptions import ConnectionClosedError
    from deltalake.exceptions import CommitFailedError, DeltaError, SchemaMismatchError

    slow_down = OSError(
        errno.EIO, "An error occurred (SlowDown) when calling the GetObject operation: Please reduce your request rate."
    )
    for exc in (
        slow_down,
        ConnectionResetError("reset by peer"),
        TimeoutError("read timed out"),
        CommitFailedError("concurrent transaction"),
        DeltaError("Generic S3 error: 503 Service Unavailable"),
        ConnectionClosedError(endpoint_url="http://127.0.0.1:9/audio?delete"),  # a dropped connection
    ):
        assert is_transient(exc), exc
    for exc in (
        SchemaMismatchError("Cannot cast schema, number of fields does not match: 3 vs 4"),
        FileNotFoundError("s3://b/k"),
        PermissionError("Access Denied"),
        ValueError("bad data"),
        DeltaError("Invalid table version"),
        RuntimeError("boom"),
        KeyError("x"),
    ):
        assert not is_transient(exc), exc


def test_with_retries_retries_transient_errors_only(monkeypatch):
    import tenacity

    monkeypatch.setattr(tenacity, "wait_exponential", lambda **kw: tenacity.wait_none())
    monkeypatch.setattr(tenacity, "wait_random_exponential", lambda **kw: tenacity.wait_none())
    for jitter in (False, True):
        calls = []

        def flaky():
            calls.append(1)
            if len(calls) < 3:
                raise ConnectionResetError("reset")
            return "ok"

        assert with_retries(flaky, jitter=jitter) == "ok" and len(calls) == 3

    calls = []

    def dead():
        calls.append(1)
        raise TimeoutError("timed out")

    with pytest.raises(TimeoutError):
        with_retries(dead, attempts=5)
    assert len(calls) == 5

    calls = []

    def missing():
        calls.append(1)
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError):
        with_retries(missing)
    assert len(calls) == 1
