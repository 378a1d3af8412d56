"""What a person sees at the command line: one line and exit 2 for a setting that cannot work, before
Ray or any model starts; --version; options in any order; progress lines in a log."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from faults import free_port  # noqa: E402

from pipeline.progress import STAGES, Counts, Reporter, line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONF = str(REPO / "conf/local.yaml")


def _cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def _one_line_exit_2(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, res.stdout[-1000:] + res.stderr[-2000:]
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("scriptorium: "), res.stderr
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_version():
    res = _cli("--version")
    assert res.returncode == 0 and res.stdout.strip().startswith("scriptorium 0.")


def test_empty_input_says_so(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not audio by name")
    _one_line_exit_2(_cli("run", CONF, f"input.uri={tmp_path / 'in'}", f"output.uri={tmp_path / 'out'}"),
                     "no audio files found", ".wav")


def test_missing_input_and_unwritable_output_before_anything_starts(tmp_path):
    _one_line_exit_2(_cli("run", CONF, f"input.uri={tmp_path / 'nope'}", f"output.uri={tmp_path / 'out'}"),
                     "input", "does not exist")
    (tmp_path / "in").mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should be")
    _one_line_exit_2(_cli("run", CONF, f"input.uri={tmp_path / 'in'}", f"output.uri={blocker / 'out'}"),
                     "output", "not writable")


def test_unknown_model_is_one_line_before_any_model_loads(tmp_path):
    (tmp_path / "in").mkdir()
    t = time.monotonic()
    res = _cli("run", CONF, f"input.uri={tmp_path / 'in'}", f"output.uri={tmp_path / 'out'}", "segment_stage.asr.model=large-v3")
    _one_line_exit_2(res, "asr.model='large-v3'", "not an embedded model")
    assert not (tmp_path / "out" / "segments").exists()
    assert time.monotonic() - t < 60  # no Ray, no model: seconds (generous on a loaded machine)


def test_s3_without_credentials_or_endpoint_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_EC2_METADATA_DISABLED="true")
    _one_line_exit_2(_cli("run", CONF, "input.uri=s3://bucket/audio/", f"output.uri={tmp_path / 'out'}", env=env),
                     "s3://bucket/audio/", "NoCredentialsError")
    port = free_port()  # a port nobody listens on
    env.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_DEFAULT_REGION="us-east-1")
    res = _cli("run", CONF, "input.uri=s3://bucket/audio/", f"input.storage.endpoint_url=http://127.0.0.1:{port}",
               "input.storage.connect_timeout_s=1", f"output.uri={tmp_path / 'out'}", env=env)
    _one_line_exit_2(res, "cannot be listed", "EndpointConnectionError")


def test_status_takes_options_in_any_order(tmp_path):
    out = tmp_path / "out"
    a = _cli("status", str(out), "--config", CONF, f"input.uri={tmp_path}")
    b = _cli("status", str(out), f"input.uri={tmp_path}", "--config", CONF)
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout
    res = _cli("status", str(out), "--bogus")
    assert res.returncode == 2 and "unrecognized arguments: --bogus" in res.stderr


def test_progress_counts_and_log_line():
    c = Counts()
    c.add("decoded", 3, 7200.0)
    c.add("committed", 1, 3600.0)
    snap = c.snapshot()
    assert list(snap) == list(STAGES) and snap["decoded"] == (3, 7200.0)
    text = line(snap, total_files=4, elapsed=120.0)
    assert "decoded 3/4 (2.00 h)" in text and "committed 1/4 (1.00 h)" in text
    assert "1/4" in text and "file/s" in text or "s/file" in text  # tqdm's rate, with an ETA


def test_progress_reporter_logs_without_a_terminal(caplog):
    c = Counts()
    rep = Reporter(c.snapshot, total_files=2, interval_s=0.05, live=False, poll_s=0.01)
    with caplog.at_level(logging.INFO, logger="scriptorium.progress"):
        rep.start()
        c.add("decoded", 1, 10.0)
        time.sleep(0.4)
        c.add("committed", 2, 20.0)
        rep.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) >= 2 and all(x.startswith("progress: ") for x in lines)
    assert "committed 2/2" in lines[-1]  # the final state is always shown
