"""Errors the user can act on.

* `UserError`: the config, the input, the output, a model reference or the cluster is wrong. The
  message says what and what to do; the CLI prints it as one line and exits 2 (`EXIT_USAGE`). Each
  such error keeps its own class where it always lived (`ConfigError` in `pipeline.config`,
  `DiscoveryError` in `pipeline.discover`, `OutputError` and `OutputLockedError` in
  `pipeline.ledger`, `ModelLoadError`, `PreflightError`, `ExportError`, `OutputMissingError`,
  `EvalError`, and `ClusterTooSmall` here) and derives from `UserError` as well as from the builtin it
  always was (`ValueError` or `RuntimeError`), so `except ValueError` elsewhere still holds.

This module imports nothing of the pipeline, so every layer, `pipeline.config` included, may import it.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix (a setting, an input, an output, a model file, the cluster's size);
    the message names it. The CLI prints it as one line and exits 2."""


class ClusterTooSmall(UserError, RuntimeError):
    """A stage asks for more than the cluster can ever offer: it would wait for resources forever."""
