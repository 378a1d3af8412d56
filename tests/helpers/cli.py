"""The public CLI, as a user runs it (`python -m pipeline.cli`, a subprocess) or in-process
(`pipeline.cli.main`, same stdout, stderr and exit code, no interpreter start-up)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import LOCAL_CONF, REPO


def run_argv(inp: object, out: object, *overrides: str) -> list[str]:
    """The argv of `python -m pipeline.cli run conf/local.yaml input.uri=INP output.uri=OUT OVERRIDES`,
    for the tests that start a run as a process of its own (to kill it, cut its network, fill its disk)."""
    return [
        sys.executable,
        "-m",
        "pipeline.cli",
        "run",
        str(LOCAL_CONF),
        f"input.uri={inp}",
        f"output.uri={out}",
        *overrides,
    ]


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m pipeline.cli ARGS` from the repository root; stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


def cli_inproc(*args: str):
    """`pipeline.cli.main(ARGS)` in this process: .returncode, .stdout, .stderr as a subprocess gives."""
    import contextlib
    import io
    import types

    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return types.SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())
