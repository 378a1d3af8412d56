"""bench/fleet.py at its smallest: every part runs (pipeline runs on the simulated accelerator through
the 20 ms store, the sustained commits, the duty cycle), the table names each, and the JSON adds up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.s3]


def test_fleet_smallest_configuration(corpus, tmp_path):
    out = tmp_path / "fleet.json"
    cmd = [
        sys.executable,
        str(REPO / "bench" / "fleet.py"),
        "--parts",
        "a,b,c,d",
        "--corpora",
        "short",
        "--poolings",
        "8x",
        "--clips",
        "4",
        "--small-clips",
        "2",
        "--d-clips",
        "5",
        "--writers",
        "2",
        "--recordings-per-commit",
        "4",
        "--commit-seconds",
        "2",
        "--corpus",
        str(corpus),
        "--cache",
        str(tmp_path / "cache"),
        "--json",
        str(out),
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("| part | measured |") :]
    for label in (
        "audio s per CPU s",
        "object-store requests per 1,000 recordings",
        "Delta commits per 1,000",
        "recordings committed per second",
        "accelerator busy share",
    ):
        assert label in table, label
    res = json.loads(out.read_text())
    runs = {r["name"]: r for r in res["runs"]}
    assert set(runs) == {"a-short-8x-small", "a-short-8x-large"}
    for r, files in ((runs["a-short-8x-small"], 2), (runs["a-short-8x-large"], 4)):
        assert r["report"]["ok"] == r["report"]["processed"] == files
        assert r["cpu_seconds"] > 0 and r["requests_total"] > 0
        assert sum(r["delta_versions"].values()) >= 4  # each table: its creation and at least one commit
    m = res["marginal"]["short/8x"]
    assert m["recordings"] == 2 and m["audio_seconds"] > 0
    c = res["c"]
    assert c["writers"] == 2 and c["recordings_committed"] > 0 and c["exactly_once"], c
    (d,) = res["d"]  # decode in tasks, the GPU presets' layout
    assert d["decode"] == "tasks"
    assert d["report"]["ok"] == 5 and d["rtfx"] == 310 and d["asr_calls"] >= 1
    # the holds are the calls the stage recorded: their padded seconds add up to the report's
    assert d["asr_padded_seconds"] == pytest.approx(d["report"]["asr_padded_seconds"], abs=0.01)
    assert d["report"]["asr_padded_seconds"] >= d["report"]["asr_audio_seconds"] > 0
    assert 0 < d["busy_share_of_wall"] <= d["busy_share_of_span"] <= 1.0
