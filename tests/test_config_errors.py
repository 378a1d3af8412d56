"""A config the YAML parser cannot read is one line naming the file, line, column and what was
expected (exit 2); a run that fails its preflight creates nothing in the output (issue 32)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import LOCAL_CONF
from tests.helpers.cli import cli_inproc

BROKEN = {
    "indent.yaml": ("input:\n  uri: ./a\n output:\n  uri: x\n", "line 3, column 2", "expected <block end>"),
    "flow.yaml": ("input: {uri: [a, b}\n", "line 1, column 19", "expected ',' or ']'"),
    "tab.yaml": ("input:\n\turi: a\n", "line 2, column 1", "cannot start any token"),
    "quote.yaml": ('output:\n  uri: "x\n', "line 3, column 1", "end of stream"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_malformed_yaml_names_file_line_column_and_what_was_expected(tmp_path, name):
    text, where, expected = BROKEN[name]
    conf = tmp_path / name
    conf.write_text(text)
    res = cli_inproc("run", str(conf))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scriptorium: config file"), res.stderr
    assert str(conf) in lines[0] and where in lines[0] and expected in lines[0], lines[0]
    assert "Traceback" not in res.stderr and "ParserError" not in res.stderr


def test_malformed_override_and_unreadable_config_are_one_line(tmp_path):
    res = cli_inproc("run", str(LOCAL_CONF), "pooling.max_files=[1")
    assert res.returncode == 2 and "override 'pooling.max_files=[1', line 1, column 3" in res.stderr, res.stderr
    res = cli_inproc("run", str(tmp_path))  # a folder given as the config
    assert res.returncode == 2 and f"config file {str(tmp_path)!r} cannot be read" in res.stderr, res.stderr


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_a_failed_preflight_creates_nothing_in_the_output(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.wav").write_bytes(b"RIFF")
    new_out = tmp_path / "new" / "out"
    res = cli_inproc(
        "run", str(LOCAL_CONF), f"input.uri={inp}", f"output.uri={new_out}", "segment_stage.asr.model=/no/such"
    )
    assert res.returncode == 2 and "/no/such" in res.stderr, res.stderr
    assert not (tmp_path / "new").exists()
    # an existing output: nothing added (no _scriptorium/ folder, no probe)
    old_out = tmp_path / "old"
    old_out.mkdir()
    (old_out / "keep.txt").write_text("x")
    res = cli_inproc("run", str(LOCAL_CONF), f"input.uri={tmp_path / 'nope'}", f"output.uri={old_out}")
    assert res.returncode == 2 and "does not exist" in res.stderr, res.stderr
    assert _tree(old_out) == ["keep.txt"]
    # preflight passes but the input holds no audio: still nothing in the output
    res = cli_inproc("run", str(LOCAL_CONF), f"input.uri={tmp_path / 'old'}", f"output.uri={new_out}")
    assert res.returncode == 2 and "no audio files found" in res.stderr, res.stderr
    assert not (tmp_path / "new").exists()
