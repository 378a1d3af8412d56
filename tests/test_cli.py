"""What a person sees at the command line: one line and exit 2 for a setting that cannot work, before
Ray or any model starts; --version; options in any order. (Progress lines: tests/test_progress.py.)"""

from __future__ import annotations

import os
import subprocess
import time

from tests.helpers import LOCAL_CONF
from tests.helpers.cli import run_cli
from tests.helpers.faults import free_port

CONF = str(LOCAL_CONF)


def _cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cli(*args, env=env, timeout=timeout)


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
    _one_line_exit_2(
        _cli("run", CONF, f"input.uri={tmp_path / 'in'}", f"output.uri={tmp_path / 'out'}"),
        "no audio files found",
        ".wav",
    )


def test_missing_input_and_unwritable_output_before_anything_starts(tmp_path):
    _one_line_exit_2(
        _cli("run", CONF, f"input.uri={tmp_path / 'nope'}", f"output.uri={tmp_path / 'out'}"), "input", "does not exist"
    )
    (tmp_path / "in").mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should be")
    _one_line_exit_2(
        _cli("run", CONF, f"input.uri={tmp_path / 'in'}", f"output.uri={blocker / 'out'}"), "output", "not writable"
    )


def test_unknown_model_is_one_line_before_any_model_loads(tmp_path):
    (tmp_path / "in").mkdir()
    t = time.monotonic()
    res = _cli(
        "run",
        CONF,
        f"input.uri={tmp_path / 'in'}",
        f"output.uri={tmp_path / 'out'}",
        "segment_stage.asr.model=large-v3",
    )
    _one_line_exit_2(res, "asr.model='large-v3'", "not an embedded model")
    # it names what ships and how to use another Whisper size offline (a CTranslate2 folder)
    assert "what ships in the pip packages: base" in res.stderr and "segment_stage.asr.model=/models/" in res.stderr
    assert not (tmp_path / "out" / "segments").exists()
    assert time.monotonic() - t < 60  # no Ray, no model: seconds (generous on a loaded machine)


def test_s3_without_credentials_or_endpoint_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_EC2_METADATA_DISABLED="true"
    )
    _one_line_exit_2(
        _cli("run", CONF, "input.uri=s3://bucket/audio/", f"output.uri={tmp_path / 'out'}", env=env),
        "s3://bucket/audio/",
        "NoCredentialsError",
    )
    port = free_port()  # a port nobody listens on
    env.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_DEFAULT_REGION="us-east-1")
    res = _cli(
        "run",
        CONF,
        "input.uri=s3://bucket/audio/",
        f"input.storage.endpoint_url=http://127.0.0.1:{port}",
        "input.storage.connect_timeout_s=1",
        f"output.uri={tmp_path / 'out'}",
        env=env,
    )
    _one_line_exit_2(res, "cannot be listed", "EndpointConnectionError")


def test_status_takes_options_in_any_order(tmp_path):
    out = tmp_path / "out"
    a = _cli("status", str(out), "--config", CONF, f"input.uri={tmp_path}")
    b = _cli("status", str(out), f"input.uri={tmp_path}", "--config", CONF)
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout
    res = _cli("status", str(out), "--bogus")
    assert res.returncode == 2 and "unrecognized arguments: --bogus" in res.stderr


def test_cli_config_error_names_key_and_choices(tmp_path):
    res = _cli("run", CONF, f"input.uri={tmp_path}", "output.uri=/tmp/x", "segment_stage.asr.backend=kaldi")
    assert res.returncode == 2
    assert "segment_stage.asr.backend" in res.stderr and "'whisper', 'nemo'" in res.stderr
    res = _cli("run", CONF, "inptu.uri=/x")
    assert res.returncode == 2 and "unknown key 'inptu'" in res.stderr and "input" in res.stderr
