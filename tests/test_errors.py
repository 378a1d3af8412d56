"""pipeline/errors.py: every error a user can act on derives from `UserError` (the CLI's exit 2)."""

from __future__ import annotations

from pipeline.errors import ClusterTooSmall, UserError


def test_every_user_error_derives_from_the_base_and_keeps_its_builtin():
    from pipeline.config import ConfigError
    from pipeline.discover import DiscoveryError
    from pipeline.engine import ClusterTooSmall as FromEngine
    from pipeline.eval import EvalError
    from pipeline.export import ExportError
    from pipeline.filter import OutputMissingError
    from pipeline.ledger import LegacyOutputError, OutputError, OutputLockedError
    from pipeline.models import ModelIntegrityError, ModelLoadError
    from pipeline.preflight import PreflightError
    from pipeline.vocabulary import VocabularyError

    assert FromEngine is ClusterTooSmall  # importable from where it was
    builtin = {ConfigError: ValueError, VocabularyError: ValueError, DiscoveryError: ValueError,
               ClusterTooSmall: RuntimeError, ModelLoadError: RuntimeError, PreflightError: RuntimeError,
               ExportError: RuntimeError, OutputMissingError: RuntimeError, EvalError: RuntimeError,
               OutputError: RuntimeError, OutputLockedError: RuntimeError, LegacyOutputError: RuntimeError}
    for cls, base in builtin.items():
        assert issubclass(cls, UserError) and issubclass(cls, base), cls
    # not the user's to fix: a corrupt or tampered model file is refused, and it is not a usage error
    assert not issubclass(ModelIntegrityError, UserError)
