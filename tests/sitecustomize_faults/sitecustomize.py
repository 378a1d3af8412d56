"""Test-only fault injection, loaded by every Python process of a CLI run the crash tests start.

tests/test_runner_resume.py puts this folder on PYTHONPATH of the CLI subprocess; the driver, the raylet's
workers and every Ray task/actor process inherit it, so each imports this module at startup (Python's
`site` imports the first `sitecustomize` on sys.path). Production code knows nothing of it.

With SCRIPTORIUM_TEST_HOLD_DIR=<dir> set, `pipeline.sink._commit` is wrapped as soon as
`pipeline.sink` is imported: after a write task has committed its block to the `segments` Delta
table (the first of its two transactions) it creates `<dir>/<write_id>` and waits there (up to
10 min, until that file is removed) before its `recordings` commit, so a test can SIGKILL the job
between the two tables.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import time

_TARGET = "pipeline.sink"


def _hold(part: str, folder: str) -> None:
    marker = os.path.join(folder, part)
    with open(marker, "w"):
        pass
    deadline = time.time() + 600
    while os.path.exists(marker) and time.time() < deadline:
        time.sleep(0.1)


def _patch(mod) -> None:
    folder = os.environ["SCRIPTORIUM_TEST_HOLD_DIR"]
    commit = mod._commit

    def _commit_then_hold(ledger, name, rows, ids, write_id):
        done = commit(ledger, name, rows, ids, write_id)
        if name == "segments":
            _hold(write_id, folder)
        return done

    mod._commit = _commit_then_hold


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        _patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Post-import hook for `pipeline.sink` (imported lazily, often long after startup)."""

    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


if os.environ.get("SCRIPTORIUM_TEST_HOLD_DIR"):
    if _TARGET in sys.modules:
        _patch(sys.modules[_TARGET])
    else:
        sys.meta_path.insert(0, _Finder())
