"""`scriptorium plan` and the check before a run redoes much of an output, through the CLI, on an output
committed without a run (no Ray, no model: a refused run stops before either starts); where a config's
values came from; the settings diff of two fingerprints; whose quality rules a run judges by."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pipeline.config import OutputConfig, QualityConfig, load_config
from pipeline.filter import record_rules, rules_for_run, shadowed_rules
from pipeline.fingerprint import fingerprint_payload, payload_hash, settings_diff
from pipeline.ledger import Ledger
from pipeline.plan import SETTINGS_DIR, record_settings
from tests.helpers import LOCAL_CONF
from tests.helpers.cli import cli_inproc as cli
from tests.helpers.committed import commit_files

BEAM = "segment_stage.asr.beam_size=5"


def plan(*args: str) -> str:
    """`scriptorium plan ARGS`, its columns' spacing collapsed to one space."""
    res = cli("plan", *args)
    assert res.returncode == 0, res.stderr
    return " ".join(res.stdout.split())


def _committed(tmp_path: Path, n: int = 4) -> tuple[Path, Path]:
    """An input of `n` files and an output holding all of them, committed with conf/local.yaml's
    fingerprint (and its settings recorded, as a run records them)."""
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    files = [inp / f"{k}.wav" for k in range(n)]
    for f in files:
        f.write_bytes(b"RIFF" + os.urandom(32000))  # never decoded: nothing here runs
    cfg = load_config(LOCAL_CONF, [f"input.uri={inp}", f"output.uri={out}"])
    payload = fingerprint_payload(cfg, {})
    commit_files(cfg.output, files, payload_hash(payload), duration=900.0)
    record_settings(Ledger(cfg.output), payload)
    return inp, out


def test_plan_says_why_and_a_large_redo_stops_before_any_work(tmp_path):
    inp, out = _committed(tmp_path)
    io = [str(LOCAL_CONF), f"input.uri={inp}", f"output.uri={out}"]
    text = plan(*io)
    assert "done (skipped) 4 files 1.000 h" in text and "a run would transcribe 0 files" in text, text
    # a changed setting: named, from what to what, with the files and hours it redoes
    text = plan(*io, BEAM)
    assert "settings changed 4 files 1.000 h segment_stage.asr.beam_size 1 -> 5" in text, text
    assert "redo 4 of the 4 recordings the output holds (100%, 1.000 h)" in text
    assert "`run` asks first" in text
    assert cli("run", "--dry-run", *io, BEAM).stdout == cli("plan", *io, BEAM).stdout
    # not on a terminal, a run stops with one line, before Ray or any model starts, and writes nothing
    log = sorted(os.listdir(out / "recordings/_delta_log"))
    res = cli("run", *io, BEAM)
    assert res.returncode == 2 and res.stdout == "", res.stdout
    said = [x for x in res.stderr.splitlines() if x.startswith("scriptorium:")]
    assert len(said) == 1 and "redo 4 of the 4 recordings" in said[0], res.stderr
    assert "segment_stage.asr.beam_size 1 -> 5" in said[0] and "--yes" in said[0]
    assert sorted(os.listdir(out / "recordings/_delta_log")) == log
    assert "asks first" not in plan(*io, BEAM, "output.confirm_redo_share=1")
    # an input changed in place, and a new file (its hours estimated from its size)
    os.utime(inp / "0.wav", (1, 1))
    shutil.copyfile(inp / "1.wav", inp / "new.wav")
    text = plan(*io)
    assert "input changed 1 file 0.250 h size, etag or modification time differ" in text, text
    assert "new 1 file ~0.000 h" in text and "redo 1 of the 4 recordings" in text
    assert "asks first" not in text  # 25% <= 50%
    # an output written before settings were recorded: the fingerprints, and that the settings are unknown
    shutil.rmtree(out / SETTINGS_DIR)
    assert "were not recorded" in plan(*io, BEAM)
    # status takes overrides with --config
    res = cli("status", str(out), "--config", str(LOCAL_CONF), f"input.uri={inp}", BEAM)
    assert res.returncode == 0 and "1 new, 4 changed" in res.stdout, res.stdout


def test_an_output_left_to_the_preset_is_named(tmp_path, monkeypatch):
    inp, _ = _committed(tmp_path, 1)
    monkeypatch.chdir(tmp_path / "in")
    res = cli("plan", str(LOCAL_CONF), f"input.uri={inp}")
    assert f"note: output.uri is './out' from {LOCAL_CONF} (not given on the command line)" in res.stdout
    assert str(tmp_path / "in" / "out") in res.stdout and not (tmp_path / "in" / "out").exists()
    assert "note:" not in cli("plan", str(LOCAL_CONF), f"input.uri={inp}", f"output.uri={tmp_path / 'x'}").stdout


def test_a_config_knows_where_each_value_came_from():
    cfg = load_config(LOCAL_CONF, ["input.uri=/in", "segment_stage.quality.min_confidence=0.9"])
    assert cfg.origin("output.uri") == str(LOCAL_CONF) and cfg.origin("input.uri") == "command line"
    assert cfg.origin("segment_stage.asr.beam_size") == str(LOCAL_CONF)  # the preset writes it
    assert cfg.origin("segment_stage.quality.max_repetition") == "default"
    assert cfg.given("segment_stage.quality") == {"segment_stage.quality.min_confidence": "command line"}
    assert load_config(LOCAL_CONF, ["input.uri=/in"]).given("segment_stage.quality") == {}
    # provenance is not a setting: the same values compare equal wherever they came from
    assert load_config(LOCAL_CONF, ["input.uri=/in", "output.uri=./out"]) == load_config(LOCAL_CONF, ["input.uri=/in"])


def test_settings_diff_names_keys_as_the_config_spells_them_now():
    def payload(*overrides: str) -> dict:
        return fingerprint_payload(load_config(LOCAL_CONF, ["input.uri=/in", *overrides]), {})

    old, new = (
        payload(),
        payload(BEAM, "segment_stage.lid.probe_s=5", "recording_stage.diarization.threshold_scale=1.2"),
    )
    assert settings_diff(old, new) == [
        ("recording_stage.diarization.threshold_scale", 1.6, 1.2),  # left out of the payload at its default
        ("segment_stage.asr.beam_size", 1, 5),
        ("segment_stage.lid.probe_s", 10.0, 5.0),  # `lid.window_s` in the fingerprint's old layout
    ]
    assert settings_diff({**old, "pipeline_version": "0.0.9"}, old) == [
        ("pipeline version", "0.0.9", old["pipeline_version"])
    ]
    assert settings_diff(old, json.loads(json.dumps(old))) == []


def test_recorded_rules_stand_unless_the_config_sets_a_rule(tmp_path):
    out = tmp_path / "out"
    strict = QualityConfig(min_confidence=0.99)
    recorded = record_rules(OutputConfig(uri=str(out)), strict, "filter")
    base = ["input.uri=/in", f"output.uri={out}"]
    rules, said = rules_for_run(load_config(LOCAL_CONF, base))
    assert rules.min_confidence == 0.99 and rules.per_language == strict.per_language
    assert len(said) == 1 and f"kept the output's rules {recorded['hash']} (set by filter" in said[0]
    assert "segment_stage.quality.min_confidence 0.99" in said[0]
    rules, said = rules_for_run(load_config(LOCAL_CONF, [*base, "segment_stage.quality.max_repetition=0.6"]))
    assert rules.min_confidence == 0.85 and rules.max_repetition == 0.6 and said == []
    yaml = tmp_path / "job.yaml"  # a key in the YAML counts as much as one on the command line
    yaml.write_text(
        LOCAL_CONF.read_text().replace(
            "  punctuation:\n",
            "  quality: {min_confidence: 0.7, per_language: {de: {min_confidence: 0.6}}}\n  punctuation:\n",
        )
    )
    rules, said = rules_for_run(load_config(yaml, base))
    assert rules.min_confidence == 0.7 and len(said) == 1 and "min_confidence=0.7 does not apply to de" in said[0]


def test_a_global_rule_that_a_language_rule_replaces_is_named():
    per = {"de": {"min_confidence": 0.8}, "es": {"min_confidence": 0.8}, "fr": {"max_repetition": 0.4}}
    (line,) = shadowed_rules(QualityConfig(min_confidence=0.9, per_language=per), "quality.")
    assert line.startswith("quality.min_confidence=0.9 does not apply to de, es: their per-language rules say de 0.8")
    assert shadowed_rules(QualityConfig(min_confidence=0.9)) == []  # no language rule
    assert shadowed_rules(QualityConfig(min_confidence=0.8, per_language=per)) == []  # the same bar
    assert shadowed_rules(QualityConfig(max_word_length=30, per_language=per)) == []  # no language sets it


def test_rules_recorded_before_a_release_added_a_rule_are_not_rejudged(tmp_path):
    """A rule added since (off: None) changes the rules' hash, not a verdict: the run records the rules
    again and re-judges nothing; a recorded value that differs still re-judges."""
    from pipeline.filter import apply_rules_after_run, recorded_rules

    _, out = _committed(tmp_path, 1)
    cfg = OutputConfig(uri=str(out))
    rules = QualityConfig().model_dump()
    added = [k for k, v in rules.items() if v is None]
    assert added, "no rule is off by default any more: pick another field for this test"
    old = {k: v for k, v in rules.items() if k not in added}
    record_rules(cfg, QualityConfig(), "run")
    path = out / "_scriptorium/rules.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "rules": old, "hash": "olderrelease0000"}))
    assert apply_rules_after_run(cfg, QualityConfig(), skipped=1) is None
    assert recorded_rules(cfg)["hash"] != "olderrelease0000"  # recorded again, in this release's shape
    path.write_text(json.dumps({**json.loads(path.read_text()), "rules": {**old, "min_confidence": 0.5}}))
    res = apply_rules_after_run(cfg, QualityConfig(), skipped=1)
    assert res is not None and "min_confidence 0.5 -> 0.85" in res["note"]
