"""`scriptorium filter`: re-judges segments from their stored signals with no model; only `accepted` and
`reject_reasons` change, deterministically; per-language rules; the rules are recorded and shown by
`status`; the segment stage and filter share one judge."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pytest

from tests.helpers.cli import cli_inproc as _cli, run_cli as _cli_proc

JUDGEMENT = ["accepted", "reject_reasons"]


def _segments(out) -> pa.Table:
    from pipeline.config import OutputConfig
    from pipeline.ledger import read_output

    t = read_output(OutputConfig(uri=str(out)), "segments")
    return t.sort_by([("recording_id", "ascending"), ("segment_index", "ascending")])


@pytest.fixture()
def out(tmp_path, shared_output):
    _, src = shared_output
    dst = tmp_path / "out"
    shutil.copytree(src, dst)
    return dst


def test_filter_changes_only_the_judgement_and_is_deterministic(out, tmp_path):
    before = _segments(out)
    assert before.num_rows > 5
    # the run judged with the default rules: filter with them changes nothing and commits nothing
    res = _cli("filter", str(out))
    assert res.returncode == 0, res.stderr
    assert "0 segments changed in 0 commits" in res.stdout
    assert _segments(out).equals(before)
    # strict German rules only: every de segment rejected for low confidence, others unchanged
    rules = tmp_path / "rules.yaml"
    rules.write_text("quality:\n  per_language:\n    de: {min_confidence: 0.999}\n")
    res = _cli("filter", str(out), str(rules), "quality.max_repetition=0.9")
    assert res.returncode == 0, res.stderr
    after = _segments(out)
    others = [c for c in before.column_names if c not in JUDGEMENT]
    assert after.select(others).equals(before.select(others))
    for b, a in zip(before.to_pylist(), after.to_pylist()):
        if a["language"] == "de" and a["text"]:
            assert not a["accepted"] and "low_confidence" in a["reject_reasons"]
        elif a["text"] and b["accepted"]:
            assert a["accepted"]
    assert any(a["language"] == "de" for a in after.to_pylist())
    # deterministic: the same rules again -> identical table, no commit
    res = _cli("filter", str(out), str(rules), "quality.max_repetition=0.9")
    assert "0 segments changed in 0 commits" in res.stdout
    assert _segments(out).equals(after)
    # recorded with the output and shown by status
    rec = json.loads((out / "_scriptorium/rules.json").read_text())
    assert rec["rules"]["per_language"] == {"de": {"min_confidence": 0.999}} and rec["applied_by"] == "filter"
    from pipeline.status import status

    st = status(str(out))
    assert f"quality rules {rec['hash']}" in st and "de: min_confidence=0.999" in st
    n_rej = sum(1 for a in after.to_pylist() if not a["accepted"])
    assert f"{n_rej} rejected (" in st and "low_confidence" in st  # counts and hours by reason
    # back to the defaults: the original verdicts return
    assert _cli("filter", str(out)).returncode == 0
    assert _segments(out).equals(before)


def test_filter_refuses_bad_rules_and_missing_outputs(out, tmp_path):
    res = _cli("filter", str(out), "quality.per_language.de.min_confidenc=0.5")
    assert res.returncode == 2 and "min_confidenc" in res.stderr
    res = _cli("filter", str(out), "segment_stage.asr.model=tiny")
    assert res.returncode == 2 and "quality" in res.stderr
    res = _cli_proc("filter", str(tmp_path / "nothing"))
    assert res.returncode == 2 and "no Scriptorium output" in res.stderr


def test_new_signals_are_stored_and_judged(shared_output):
    from pipeline.config import QualityConfig
    from pipeline.stages.quality import judge, text_signals

    _, src = shared_output
    rows = [r for r in _segments(src).to_pylist() if r["text"]]
    assert all(r["repetition_score"] is not None and r["unique_word_ratio"] and r["longest_word"] for r in rows)
    assert all(r["filler_phrase"] is False for r in rows)  # real speech: no hallucinated credits
    # the stored verdict is what the shared judge gives for the stored signals
    cfg = QualityConfig()
    assert all(judge(r, cfg) == (r["accepted"], r["reject_reasons"]) for r in rows)
    base = {
        "confidence": 0.9,
        "no_speech_prob": 0.05,
        "language": "en",
        "chars_per_second": 10.0,
        "compression_ratio": 1.2,
        "language_prob": 0.99,
        "language_agreement": None,
    }
    loop = {
        **base,
        "text": "thank you thank you thank you thank you",
        **text_signals("thank you thank you thank you thank you", "en"),
    }
    assert "repeated_ngrams" in judge(loop, cfg)[1]
    thanks = {**base, "text": "Thank you.", **text_signals("Thank you.", "en"), "no_speech_prob": 0.6}
    assert judge(thanks, cfg) == (False, ["filler_on_silence"])
    amara = {
        **base,
        "text": "Untertitel der Amara.org-Community",
        "language": "de",
        **text_signals("Untertitel der Amara.org-Community", "de"),
    }
    assert "filler_on_silence" in judge(amara, cfg)[1]
    assert judge({**base, "text": "hallo", "language_agreement": False, **text_signals("hallo", "de")}, cfg)[1] == [
        "language_disagreement"
    ]
    long = {**base, "text": "a" * 60, **text_signals("a" * 60, "en")}
    assert "long_word" in judge(long, cfg)[1]


def test_a_rerun_with_other_rules_rejudges_the_kept_recordings(out):
    """quality.* is not in the fingerprint (no model re-runs), so a rerun skips finished recordings; the end of
    the run (pipeline/runner.py -> filter.apply_rules_after_run) re-judges the whole output when its rules
    differ from the recorded ones, instead of leaving rows judged by the old rules."""
    from pipeline.config import OutputConfig, QualityConfig
    from pipeline.filter import apply_rules_after_run, record_rules

    cfg = OutputConfig(uri=str(out))
    record_rules(cfg, QualityConfig(), "run")
    assert apply_rules_after_run(cfg, QualityConfig(), skipped=8) is None  # same rules: nothing to do
    before = _segments(out)
    strict = QualityConfig(min_confidence=0.999, per_language={})
    res = apply_rules_after_run(cfg, strict, skipped=8)
    assert res is not None and res["after"]["accepted"] == 0
    rows = [r for r in _segments(out).to_pylist() if r["text"]]
    assert rows and all(not r["accepted"] and "low_confidence" in r["reject_reasons"] for r in rows)
    others = [c for c in before.column_names if c not in JUDGEMENT]
    assert _segments(out).select(others).equals(before.select(others))
    rec = json.loads((out / "_scriptorium/rules.json").read_text())
    assert rec["applied_by"] == "run" and rec["rules"]["min_confidence"] == 0.999
