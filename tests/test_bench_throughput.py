"""Smoke test of the throughput benchmark (bench/throughput.py): a tiny corpus (3 clips of 2-6 s) and one
long file of 20-30 s, rows 2 (per-file batching) and 3 (Scriptorium, bucketing on), the Markdown tables
(with both rows' WER on the long file, from its joined references) and a JSON file with every row.

Takes ~2.5 min on 2 cores (Ray start-ups and Whisper model loads dominate). A second test runs row 7
(NeMo's own transcribe()) on the same sizes with the smallest NeMo model, without Ray."""

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
        sys.executable,
        str(REPO / "bench" / "throughput.py"),
        "--quick",
        "--short-clips",
        "3",
        "--short-max-s",
        "6",
        "--rows",
        "2,3",
        "--corpora",
        "short,long",
        "--long-files",
        "1",
        "--long-min-s",
        "20",
        "--long-max-s",
        "30",
        "--scale",
        "0",
        "--corpus",
        str(corpus),
        "--cache",
        str(tmp_path / "cache"),
        "--json",
        str(out_json),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    split = next(k for k, line in enumerate(lines) if line.startswith("| # | corpus | WER all |"))
    table, wer_table = lines[:split], lines[split + 1 :]
    assert table[0].startswith("| # | system | corpus | files | audio s | wall s | x real time | vs row 2 |")
    body = {line.split("|")[1].strip(): line for line in table[1:] if not line.startswith("|---")}
    assert set(body) == {"2", "3"}, table
    assert [line.split("|")[1:3] for line in wer_table] == [[" 2 ", " long "], [" 3 ", " long "]], wer_table
    assert "## Targets" in proc.stdout
    assert "long, Whisper: row 3 WER (row 2: " in proc.stdout

    res = json.loads(out_json.read_text())
    long = {r["row"]: r for r in res["rows"] if r["corpus"] == "long"}
    for r in long.values():  # the long file joins whole corpus recordings; its references are their texts
        assert r["wer"]["all"] < 0.5 and set(r["wer"]) - {"all"}, r["wer"]
    rows = {r["row"]: r for r in res["rows"] if r["corpus"] == "short"}
    assert set(rows) == {2, 3} and set(long) == {2, 3}
    assert rows[2].get("wer") is None  # the short clips are cut anywhere: no reference text
    audio = res["corpora"]["short"]["audio_seconds"]
    for r in rows.values():
        # every row saw the whole corpus, produced text, and took measurable time and memory
        assert r["audio_seconds"] == pytest.approx(audio, rel=0.01)
        assert r["wall_seconds"] > 0 and r["rtf"] > 0 and r["peak_rss_mb"] > 100
        assert r["chars"] > 0
    assert rows[3]["ok"] == 3 and rows[3]["error"] == 0
    assert rows[3]["tree_processes_at_peak"] > 1  # Ray's processes were sampled, not just the driver
    assert 0 <= rows[3]["padding_ratio"] < 1


@pytest.mark.slow
def test_bench_row_7_nemo_transcribe(tmp_path: Path, corpus: Path) -> None:
    """Row 7 (NeMo's own transcribe() on the bench's NeMo model) at the smallest model size, on the
    short clips (batched) and one long file (local attention, one file per call). No Ray: ~40 s."""
    out_json = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        str(REPO / "bench" / "throughput.py"),
        "--short-clips",
        "3",
        "--short-max-s",
        "6",
        "--rows",
        "7",
        "--corpora",
        "short,long",
        "--long-files",
        "1",
        "--long-min-s",
        "20",
        "--long-max-s",
        "30",
        "--scale",
        "0",
        "--nemo-size",
        "toy",
        "--corpus",
        str(corpus),
        "--cache",
        str(tmp_path / "cache"),
        "--json",
        str(out_json),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    body = [line for line in proc.stdout.splitlines() if line.startswith("| 7 | NeMo transcribe()")]
    assert [line.split("|")[3].strip() for line in body] == ["short", "long"], body

    res = json.loads(out_json.read_text())
    rows = {r["corpus"]: r for r in res["rows"]}
    assert set(rows) == {"short", "long"} and res["asr_threads"] >= 1
    for label, r in rows.items():
        assert r["row"] == 7 and r["files"] == res["corpora"][label]["files"]
        assert r["audio_seconds"] == pytest.approx(res["corpora"][label]["audio_seconds"], rel=0.01)
        assert r["wall_seconds"] > r["transcribe_seconds"] > 0 and r["peak_rss_mb"] == r["self_peak_rss_mb"] > 100
        assert r["torch_threads"] == res["asr_threads"] and r["warm_seconds"] > 0
        assert r["segments"] == r["files"] and r["model_calls"] >= 1 and 0 <= r["padding_ratio"] < 1
    assert rows["short"]["batch_size"] == 16 and rows["short"]["model_calls"] == 1  # 3 clips, one batch
    assert rows["long"]["batch_size"] == 1 and rows["long"]["padding_ratio"] == 0  # one file per call
    assert rows["short"]["wer"] is None and rows["long"]["wer"] is not None  # only the long file has references
