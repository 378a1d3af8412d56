"""The tests' tiny NeMo models, built once per pytest process.

The builders are bench/nemo_models.py's (one builder for the benchmark's FastConformer sizes and the
tests' toys); this module only caches the set the test modules share."""

from __future__ import annotations

from pathlib import Path

from bench.nemo_models import LID_LABELS, build_all

__all__ = ["LID_LABELS", "build_all", "session_models", "some_models"]

_BUILT: dict[str, Path] = {}


def session_models() -> dict[str, Path]:
    """`build_all` once per process (test modules share it), into a temp dir removed at exit."""
    if not _BUILT:
        import atexit
        import shutil
        import tempfile

        out = Path(tempfile.mkdtemp(prefix="scriptorium-nemo-models-"))
        atexit.register(shutil.rmtree, out, True)
        _BUILT.update(build_all(out))
    return dict(_BUILT)


def some_models(out_dir: Path, kinds: tuple[str, ...]) -> dict[str, Path]:
    """The session's models when another module built them already, else only `kinds` into `out_dir`."""
    if _BUILT:
        return dict(_BUILT)
    return build_all(out_dir, kinds=kinds)
