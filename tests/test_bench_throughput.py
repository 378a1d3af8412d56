"""Smoke test of the throughput benchmark (bench/throughput.py): a tiny corpus (3 clips of 2-6 s), rows 2
(per-file batching) and 3 (Scriptorium, bucketing on), one Markdown table and a JSON file with both rows.

Takes ~1.5 min on 2 cores (Ray start-up and two Whisper model loads dominate)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.mark.ray
@pytest.mark.slow
def test_bench_quick_rows_2_3(tmp_path: Path, corpus: Path) -> None:
    out_json = tmp_path / "bench.json"
    cmd = [
        sys.executable, str(REPO / "bench" / "throughput.py"), "--quick", "--short-clips", "3", "--short-max-s", "6",
        "--rows", "2,3", "--corpora", "short", "--scale", "0",
        "--corpus", str(corpus), "--cache", str(tmp_path / "cache"), "--json", str(out_json),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| # | system | corpus | files | audio s | wall s | x real time | vs row 2 |")
    body = {line.split("|")[1].strip(): line for line in table[1:] if not line.startswith("|---")}
    assert set(body) == {"2", "3"}, table
    assert "## Targets" in proc.stdout

    res = json.loads(out_json.read_text())
    rows = {r["row"]: r for r in res["rows"]}
    assert set(rows) == {2, 3}
    audio = res["corpora"]["short"]["audio_seconds"]
    for r in rows.values():
        # every row saw the whole corpus, produced text, and took measurable time and memory
        assert r["audio_seconds"] == pytest.approx(audio, rel=0.01)
        assert r["wall_seconds"] > 0 and r["rtf"] > 0 and r["peak_rss_mb"] > 100
        assert r["chars"] > 0
    assert rows[3]["ok"] == 3 and rows[3]["error"] == 0
    assert rows[3]["tree_processes_at_peak"] > 1  # Ray's processes were sampled, not just the driver
    assert 0 <= rows[3]["padding_ratio"] < 1
