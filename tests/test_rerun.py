"""A returning user's second hour, through the CLI: `pseudo-label` run twice and with a corrupt file
(and its shell wrapper), the rules `filter` recorded standing until a run's config sets its own, and
`plan` / the confirmation a run asks before it redoes most of an output.

Runs use the simulated accelerator (pipeline/backends/simulated.py: real decode, no model compute;
confidences 0.90-0.99) on real corpus speech, in this process's Ray session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tests.helpers import CORPUS, LOCAL_CONF, REPO
from tests.helpers.cli import cli_inproc as cli, run_cli

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SIM = [
    "recording_stage.vad.backend=simulated",
    "segment_stage.lid.backend=simulated",
    "segment_stage.asr.backend=simulated",
    "ray.num_cpus=2",
]
GOOD = ["speechbrain_spk1_snt1.wav", "speechbrain_spk2_snt1.wav"]


def _io(inp: Path, out: Path) -> list[str]:
    return [str(LOCAL_CONF), f"input.uri={inp}", f"output.uri={out}", *SIM]


def _manifest(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "export/nemo/manifest.jsonl").read_text().splitlines()]


def _segments(out: Path) -> list[dict]:
    from pipeline.config import OutputConfig
    from pipeline.ledger import read_output

    return read_output(OutputConfig(uri=str(out)), "segments").to_pylist()


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> types.SimpleNamespace:
    """`scriptorium pseudo-label` twice on two speech files and a corrupt one, then (the corrupt file
    removed) once more through jobs/pseudo_label.sh: the outputs of the three, and the folders."""
    root = tmp_path_factory.mktemp("pl")
    inp, out = root / "in", root / "out"
    inp.mkdir()
    for name in GOOD:
        shutil.copyfile(CORPUS / "speech" / name, inp / name)
    (inp / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(4000))
    first = cli("pseudo-label", *_io(inp, out))
    manifest1 = (out / "export/nemo/manifest.jsonl").read_bytes()
    second = cli("pseudo-label", *_io(inp, out))
    manifest2 = (out / "export/nemo/manifest.jsonl").read_bytes()
    (inp / "corrupt.wav").unlink()
    shim = root / "scriptorium"  # the wrapper calls $SCRIPTORIUM: this checkout's CLI
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m pipeline.cli "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "SCRIPTORIUM": str(shim)}
    third = subprocess.run(
        [str(REPO / "jobs/pseudo_label.sh"), str(inp), str(out), *SIM],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return types.SimpleNamespace(
        inp=inp, out=out, env=env, first=first, second=second, third=third, manifests=(manifest1, manifest2)
    )


def test_pseudo_label_twice_and_with_a_corrupt_file(labelled):
    first, second, third = labelled.first, labelled.second, labelled.third
    # one corrupt file: the others are labelled, the failed one is named, and the exit code says so
    assert first.returncode == 3, first.stdout + first.stderr
    assert "labels of the accepted segments of 2 recordings written to" in first.stdout
    assert "1 file of the 3 this run processed failed" in first.stdout and "corrupt.wav: decode:" in first.stdout
    rows = _manifest(labelled.out)
    assert rows and {Path(r["audio_filepath"]).name for r in rows} == set(GOOD)
    assert (labelled.out / "export/lhotse/cuts.jsonl.gz").stat().st_size > 0
    # again: no "destination is not empty"; the failed file is retried, the labels rewritten the same
    assert second.returncode == 3, second.stdout + second.stderr
    assert "not empty" not in second.stderr and "1 failed before (retried), 2 already done" in second.stdout
    assert "1 file of the 1 this run processed failed" in second.stdout
    assert labelled.manifests[0] == labelled.manifests[1]
    # through the shell wrapper, the corrupt file gone: nothing to transcribe, labels refreshed, exit 0
    assert third.returncode == 0, third.stdout + third.stderr
    assert "0 new, 0 changed, 0 failed before (retried), 2 already done" in third.stdout
    assert (labelled.out / "export/nemo/manifest.jsonl").read_bytes() == labelled.manifests[0]


def test_the_wrapper_says_how_to_use_it():
    res = subprocess.run([str(REPO / "jobs/pseudo_label.sh"), "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("usage: jobs/pseudo_label.sh INPUT OUTPUT")
    assert "unbound variable" not in res.stderr
    res = subprocess.run([str(REPO / "jobs/pseudo_label.sh"), "only-one"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("usage:")
    res = run_cli("pseudo-label")
    assert res.returncode == 2 and "usage: scriptorium pseudo-label" in res.stderr


def _copy(labelled, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(labelled.out, out)
    return out


def test_the_rules_filter_recorded_stand_until_a_run_sets_its_own(labelled, tmp_path):
    out = _copy(labelled, tmp_path)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("per_language: {de: {min_confidence: 0.8}}\n")
    res = cli("filter", str(out), str(rules_file), "quality.min_confidence=0.995")  # above every simulated one
    assert res.returncode == 0, res.stderr
    # the stricter global bar does not reach German, whose own rule says 0.8: said
    assert "quality.min_confidence=0.995 does not apply to de: their per-language rules say de 0.8" in res.stdout
    rules = json.loads((out / "_scriptorium/rules.json").read_text())
    assert rules["applied_by"] == "filter" and all(not s["accepted"] for s in _segments(out) if s["text"])
    # a rerun with the preset's default rules keeps them, for kept and for newly transcribed recordings
    more = tmp_path / "more"
    more.mkdir()
    shutil.copyfile(CORPUS / "speech" / "speechbrain_spk1_snt2.wav", more / "new.wav")
    res = cli("run", *_io(more, out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"kept the output's rules {rules['hash']} (set by filter" in res.stdout
    segs = [s for s in _segments(out) if s["text"]]
    assert len({s["recording_id"] for s in segs}) == 3 and not any(s["accepted"] for s in segs)
    assert json.loads((out / "_scriptorium/rules.json").read_text())["hash"] == rules["hash"]
    # a run whose config sets a rule re-judges the whole output by the config, and says so
    res = cli("run", *_io(labelled.inp, out), "segment_stage.quality.min_confidence=0.5")
    assert res.returncode == 0, res.stdout + res.stderr
    said = "re-judged every segment of the output by segment_stage.quality.min_confidence (command line)"
    assert said in res.stdout and "min_confidence 0.995 -> 0.5" in res.stdout
    assert any(said in w for w in json.loads((out / "report.json").read_text())["warnings"])
    assert all(s["accepted"] for s in _segments(out) if s["text"])


def test_plan_says_why_and_a_large_redo_asks_first(labelled, tmp_path):
    out = _copy(labelled, tmp_path)
    beam = "segment_stage.asr.beam_size=5"
    res = cli("plan", *_io(labelled.inp, out), beam)
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert "settings changed 2 files" in text and "segment_stage.asr.beam_size 1 -> 5" in text
    assert "redo 2 of the 3 recordings the output holds (67%" in res.stdout  # the corrupt file's row is the 3rd
    assert cli("run", "--dry-run", *_io(labelled.inp, out), beam).stdout == res.stdout
    # not on a terminal: a run that would redo 67% > 50% stops with one line, before any work
    before = (out / "recordings/_delta_log").stat().st_mtime, sorted(os.listdir(out / "recordings/_delta_log"))
    res = cli("run", *_io(labelled.inp, out), beam)
    assert res.returncode == 2 and res.stdout == ""
    line = [x for x in res.stderr.splitlines() if x.startswith("scriptorium:")]
    assert len(line) == 1 and "--yes" in line[0] and "segment_stage.asr.beam_size 1 -> 5" in line[0], res.stderr
    assert sorted(os.listdir(out / "recordings/_delta_log")) == before[1]
    # --yes goes ahead; then nothing is left to redo
    res = cli("run", "--yes", *_io(labelled.inp, out), beam)
    assert res.returncode == 0 and "0 new, 2 changed" in res.stdout, res.stdout + res.stderr
    assert "redo: settings changed (2 files): segment_stage.asr.beam_size 1 -> 5" in res.stdout  # the summary says why
    text = " ".join(cli("plan", *_io(labelled.inp, out), beam).stdout.split())
    assert "settings changed 0 files" in text and "a run would transcribe 0 files" in text
    # back to beam 1: the recorded settings name the change the other way round
    assert "segment_stage.asr.beam_size 5 -> 1" in cli("plan", *_io(labelled.inp, out)).stdout
