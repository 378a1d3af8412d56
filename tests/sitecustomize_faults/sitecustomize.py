"""Test-only fault injection, loaded by every Python process of a CLI run the crash tests start.

tests/test_runner_resume.py puts this folder on PYTHONPATH of the CLI subprocess; the driver, the raylet's
workers and every Ray task/actor process inherit it, so each imports this module at startup (Python's
`site` imports the first `sitecustomize` on sys.path). Production code knows nothing of it.

With SCRIPTORIUM_TEST_HOLD_DIR=<dir> set, `pipeline.execution.sink._commit` is wrapped as soon as
`pipeline.execution.sink` is imported: after the driver's committer has committed a group of blocks
to the `segments` Delta table (the first of its two transactions) it creates `<dir>/<write_id>` for
every block of the group and waits (up to 10 min, until those files are removed) before the group's
`recordings` commit, so a test can SIGKILL the job between the two tables.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import time

_TARGET = "pipeline.execution.sink"


def _hold(parts: list[str], folder: str) -> None:
    markers = [os.path.join(folder, part) for part in parts]
    for marker in markers:
        with open(marker, "w"):
            pass
    deadline = time.time() + 600
    while any(os.path.exists(m) for m in markers) and time.time() < deadline:
        time.sleep(0.1)


def _patch(mod) -> None:
    folder = os.environ["SCRIPTORIUM_TEST_HOLD_DIR"]
    commit = mod._commit

    def _commit_then_hold(ledger, name, blocks, replacing, group_id, *rest):
        done = commit(ledger, name, blocks, replacing, group_id, *rest)
        if name == "segments" and done:
            _hold([b.write_id for b in blocks], folder)
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
    """Post-import hook for `pipeline.execution.sink` (imported lazily, often long after startup)."""

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
