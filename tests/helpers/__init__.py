"""Code the test modules share (import it as `tests.helpers...`; nothing here is a test).

    tests.helpers            REPO, CORPUS (../shared/corpus beside the repo), LOCAL_CONF, sha256_of,
                             load_audio
    tests.helpers.cli        the public CLI as a subprocess (`run_cli`) or in-process (`cli_inproc`)
    tests.helpers.faults     S3 behind a fault-injecting proxy, free_port, process-tree utilities
    tests.helpers.badcorpus  the generated bad-input corpus (decode/discover robustness)
    tests.helpers.pl_output  one real pipeline output shared by the export, filter and eval tests
    tests.helpers.committed  an output committed without a run (status, plan: no Ray, no model)
    tests.helpers.nemo_models  the tiny NeMo models, built once per session (bench/nemo_models.py's builder)

tests/sitecustomize_faults/ is not a module: a folder put on PYTHONPATH of a CLI subprocess (see
tests/test_runner_resume.py).
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus"
LOCAL_CONF = REPO / "conf" / "local.yaml"


def sha256_of(path: Path) -> str:
    """The file's sha256, hex (computed here, not by the code under test)."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_audio(path: Path):
    """Any codec -> 16 kHz mono float32 samples, with the project's own decoder (pipeline.audio)."""
    from pipeline.audio import decode

    return decode(str(path)).samples
