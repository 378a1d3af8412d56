"""A store that accepts connections and never answers, with the DEFAULT timeouts: how long until
`scriptorium run` gives up, with what exit code and how many lines (issue 32's target: one line,
exit 2, within 120 s). Both ways a run meets a store: as `input.storage.endpoint_url` (S3) and as the
host of an `http://` input.

    .venv/bin/python bench/stalled_store.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def silent_server() -> tuple[socket.socket, int, list]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list = []

    def serve() -> None:
        while True:
            try:
                held.append(sock.accept()[0])  # kept open, never answered
            except OSError:
                return

    threading.Thread(target=serve, daemon=True).start()
    return sock, sock.getsockname()[1], held


def main() -> None:
    sock, port, held = silent_server()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
    cases = {
        "s3 endpoint_url": ["input.uri=s3://stalled/in/", f"input.storage={{endpoint_url: 'http://127.0.0.1:{port}'}}"],
        "http input": [f"input.uri=http://127.0.0.1:{port}/in/a.wav"],
    }
    print(f"{'store':<18} {'exit':>4} {'seconds':>8} {'stderr lines':>12}  last line")
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in cases.items():
            t0 = time.monotonic()
            res = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pipeline.cli",
                    "run",
                    str(REPO / "conf/local.yaml"),
                    f"output.uri={tmp}/out",
                    *args,
                ],
                capture_output=True,
                text=True,
                cwd=REPO,
                env=env,
            )
            took = time.monotonic() - t0
            lines = res.stderr.strip().splitlines()
            print(f"{name:<18} {res.returncode:>4} {took:>8.1f} {len(lines):>12}  {(lines or [''])[-1][:120]}")
    sock.close()
    for c in held:
        c.close()


if __name__ == "__main__":
    main()
