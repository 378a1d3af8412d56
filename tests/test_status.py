"""`scriptorium status OUTPUT`: committed / failed counts, last run, what a rerun would do (no Ray)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.cli import main
from pipeline.config import OutputConfig
from pipeline.fingerprint import job_fingerprint
from pipeline.vocabulary import resolve as resolve_vocabulary
from tests.helpers import REPO
from tests.helpers.committed import commit_files


def _commit(out: Path, files: list[Path], fingerprint: str, status: str = "ok", error: str | None = None) -> None:
    commit_files(OutputConfig(uri=str(out)), files, fingerprint, status=status, error=error)


def test_status_counts_failures_and_rerun_plan(tmp_path, capsys):
    from pipeline.config import load_config

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    files = [inp / f"{n}.wav" for n in ("a", "b", "c", "d")]
    for f in files:
        f.write_bytes(b"RIFF" + os.urandom(100))
    cfg = load_config(REPO / "conf" / "local.yaml", [f"input.uri={inp}", f"output.uri={out}"])
    fp = job_fingerprint(cfg, resolve_vocabulary(cfg.segment_stage.vocabulary))
    _commit(out, files[:2], fp)
    _commit(out, files[2:3], fp, status="error", error="decode: not a decodable audio file (Invalid data)")
    (out / "report.json").write_text(
        json.dumps(
            {
                "run_id": "20260101T000000-abcdef",
                "input_uri": str(inp),
                "fingerprint": fp,
                "new": 3,
                "changed": 0,
                "skipped": 0,
                "ok": 2,
                "no_speech": 0,
                "error": 1,
                "audio_seconds": 3.0,
                "wall_seconds": 9.0,
            }
        )
    )
    # d is new; b changes (mtime)
    os.utime(files[1], (1, 1))
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert (
        "3 recordings committed (Delta table version 2, 2 data files)" in text
        and "ok 2" in text
        and "failed (error) 1" in text
    ), text
    assert "c.wav: decode: not a decodable audio file" in text, text
    assert "last run 20260101T000000-abcdef" in text, text
    assert "would process 1 new, 1 changed, 1 failed before (retried); skip 1 done" in text, text
    # with an explicit config whose fingerprint differs, everything committed is "changed"
    assert (
        main(
            [
                "status",
                str(out),
                f"input.uri={inp}",
                "recording_stage.vad.pad_s=0.3",
                "--config",
                str(REPO / "conf" / "local.yaml"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "would process 1 new, 2 changed, 1 failed before (retried); skip 0 done" in text, text


def test_status_of_an_empty_output(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nothing")]) == 0
    text = capsys.readouterr().out
    assert "0 recordings committed" in text and "version" not in text, text
