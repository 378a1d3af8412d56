"""`scriptorium eval`: WER/CER per language equal to an independent jiwer computation (4 decimals), WER
split into accepted/rejected with the yield, language ID per file, and DER with a collar on a
hand-worked case."""

from __future__ import annotations

import json
from pathlib import Path

import jiwer
import pyarrow as pa
import pytest

from tests.helpers.cli import cli_inproc as _cli, run_cli as _cli_proc


def test_eval_matches_an_independent_jiwer_computation(tmp_path, shared_output):
    from whisper_normalizer.basic import BasicTextNormalizer
    from whisper_normalizer.english import EnglishTextNormalizer

    from pipeline.config import OutputConfig
    from pipeline.ledger import read_output

    audio, out = shared_output
    refs_path = audio.parent / "references.jsonl"
    res = _cli("eval", str(refs_path), str(out), "--json", str(tmp_path / "eval.json"))
    assert res.returncode == 0, res.stderr
    assert "WER" in res.stdout and "yield" in res.stdout and "language ID" in res.stdout
    got = json.loads((tmp_path / "eval.json").read_text())

    # independent: whole-file hypothesis = normalised segment texts in order, jiwer over each language
    recs = {r["uri"]: r for r in read_output(OutputConfig(uri=str(out)), "recordings").to_pylist()}
    segs = read_output(OutputConfig(uri=str(out)), "segments").to_pylist()
    en, basic = EnglishTextNormalizer(), BasicTextNormalizer()
    norm = lambda t, lang: " ".join((en if lang == "en" else basic)(t).split())  # noqa: E731
    by_lang: dict[str, tuple[list, list]] = {}
    lid = []
    for line in filter(None, refs_path.read_text().split("\n")):  # one name holds U+2028: not splitlines()
        ref = json.loads(line)
        rec = recs[str(audio.parent / ref["audio_filepath"])]
        lid.append(rec["language"] == ref["lang"])
        if "text" not in ref:
            continue
        mine = sorted(
            (s for s in segs if s["recording_id"] == rec["recording_id"] and s["text"]), key=lambda s: s["start"]
        )
        hyp = " ".join(x for x in (norm(s["text"], ref["lang"]) for s in mine) if x)
        r, h = by_lang.setdefault(ref["lang"], ([], []))
        r.append(norm(ref["text"], ref["lang"]))
        h.append(hyp)
    assert set(got["languages"]) == set(by_lang) >= {"en", "de", "fr"}
    for lang, (r, h) in by_lang.items():
        assert got["languages"][lang]["wer"] == pytest.approx(jiwer.wer(r, h), abs=5e-5), lang
        assert got["languages"][lang]["cer"] == pytest.approx(jiwer.cer(r, h), abs=5e-5), lang
    all_r = [x for r, _ in by_lang.values() for x in r]
    all_h = [x for _, h in by_lang.values() for x in h]
    assert got["overall"]["wer"] == pytest.approx(jiwer.wer(all_r, all_h), abs=5e-5)
    assert got["lid"]["accuracy"] == pytest.approx(sum(lid) / len(lid), abs=5e-5)
    # accepted + rejected errors are the errors of all segments; yield from the rows
    w = got["wer_by_judgement"]
    errs = lambda g: g["sub"] + g["del"] + g["ins"] if g.get("ref_words") else 0  # noqa: E731
    assert errs(w["accepted"]) + errs(w["rejected"]) == errs(w["all"])
    assert w["accepted"]["ref_words"] + w["rejected"].get("ref_words", 0) == w["all"]["ref_words"]
    assert 0 < got["yield"]["audio_share"] <= 1


def test_segment_errors_assign_each_reference_word_once():
    from pipeline.eval import segment_errors

    per, total = segment_errors("a b c d e f", ["a b x", "d e f g"])
    assert total == {"ref_words": 6, "sub": 1, "del": 0, "ins": 1}
    assert [p["ref_words"] for p in per] == [3, 3]
    assert [p["sub"] + p["del"] + p["ins"] for p in per] == [1, 1]
    per, total = segment_errors("a b c d e f", ["a b", "d e f"])  # c deleted: charged to the segment before
    assert total["del"] == 1 and [p["del"] for p in per] == [1, 0] and [p["ref_words"] for p in per] == [3, 3]
    per, total = segment_errors("a b c", [])  # no segment: every word lost
    assert total == {"ref_words": 3, "sub": 0, "del": 3, "ins": 0} and per == []


def test_der_with_collar_on_a_hand_worked_case(tmp_path):
    from pipeline.eval import der, read_rttm

    rttm = "SPEAKER f 1 0.00 10.00 <NA> <NA> A <NA> <NA>\nSPEAKER f 1 10.00 10.00 <NA> <NA> B <NA> <NA>\n"
    ref = read_rttm(rttm)
    hyp = [(0.0, 12.0, "s1"), (12.0, 20.0, "s2")]
    # no collar: 2 s of B called s1 (mapped to A) over 20 s of speech
    assert der(ref, hyp, collar=0.0)["der"] == pytest.approx(0.1)
    # 0.25 s collar: 0.25 s around 0 and 20, 0.5 s around 10 are not scored -> 1.75 s / 19 s
    d = der(ref, hyp)
    assert d["scored_s"] == pytest.approx(19.0) and d["confusion_s"] == pytest.approx(1.75)
    assert d["der"] == pytest.approx(1.75 / 19, abs=1e-4)
    # one hypothesis speaker for two: confusion of the shorter one, speaker-count error -1
    one = der(ref, [(0.0, 20.0, "x")], collar=0.0)
    assert one["der"] == pytest.approx(0.5) and one["speaker_count_error"] == -1
    # missed and false alarm
    d = der(ref, [(0.0, 5.0, "s1"), (10.0, 22.0, "s2")], collar=0.0)
    assert (d["missed_s"], d["false_alarm_s"], d["confusion_s"]) == pytest.approx((5.0, 2.0, 0.0))


def test_eval_refuses_missing_inputs(tmp_path):
    res = _cli_proc("eval", str(tmp_path / "none.jsonl"), str(tmp_path / "out"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1


def test_references_match_by_uri_then_relative_path_then_unique_basename():
    from pipeline.eval import match_references

    recs = [{"uri": f"/data/audio/{p}"} for p in ("sub/a.wav", "b.wav", "c.wav", "x/d.wav", "y/d.wav")]
    refs = [
        {"audio_filepath": "/data/audio/b.wav", "uri": "/data/audio/b.wav"},  # the same absolute path
        {"audio_filepath": "sub/a.wav", "uri": "/copy/sub/a.wav"},  # beside another copy of the audio
        {"audio_filepath": "other/c.wav", "uri": "/copy/other/c.wav"},  # only the name is the same
        {"audio_filepath": "z/d.wav", "uri": "/copy/z/d.wav"},  # two recordings are called d.wav: no match
        {"audio_filepath": "e.wav", "uri": "/copy/e.wav"},
    ]
    got = match_references(refs, recs, "/data/audio")
    assert [(r and r["uri"], rule) for r, rule in got] == [
        ("/data/audio/b.wav", "uri"),
        ("/data/audio/sub/a.wav", "relative"),
        ("/data/audio/c.wav", "basename"),
        (None, None),
        (None, None),
    ]
    # a name two reference lines carry is no unique basename either
    twice = match_references([refs[2], {**refs[2], "uri": "/copy/again/c.wav"}], recs, "/data/audio")
    assert [rule for _, rule in twice] == [None, None]


def test_eval_matches_a_users_own_references_and_names_lid_misses(tmp_path, shared_output):
    """References kept in another folder, written relative to the input root: matched by relative path,
    one by unique basename; the same-named a/x.wav and b/x.wav, written under another folder, stay
    missing; a wrong reference language is named as a miss; an `en+de` reference accepts `en`."""
    audio, out = shared_output
    lines = [json.loads(x) for x in filter(None, (audio.parent / "references.jsonl").read_text().split("\n"))]
    mine = []
    for ref in lines:
        rel = ref["audio_filepath"].removeprefix("audio/")
        if rel == "jfk.flac":
            ref.update(audio_filepath="elsewhere/jfk.flac", lang="en+de")
        elif rel.endswith("x.wav"):
            ref["audio_filepath"] = "elsewhere/" + rel.replace("/", "_")[2:]  # x.wav, twice
        else:
            ref["audio_filepath"] = rel
        if rel == "cv.mp3":
            ref["lang"] = "fr"
        mine.append(ref)
    refs = tmp_path / "refs" / "references.jsonl"
    refs.parent.mkdir()
    refs.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in mine) + "\n")
    res = _cli("eval", str(refs), str(out), "--json", str(tmp_path / "eval.json"))
    assert res.returncode == 0, res.stderr
    got = json.loads((tmp_path / "eval.json").read_text())
    assert got["matched"] == len(mine) - 2 and got["matched_by"] == {"uri": 0, "relative": len(mine) - 3, "basename": 1}
    assert sorted(got["missing"]) == ["elsewhere/x.wav", "elsewhere/x.wav"]
    assert (
        f"{len(mine) - 2}/{len(mine)} files matched ({len(mine) - 3} by path relative to the input root, 1 by unique file name)"
        in res.stdout
    )
    assert "not found: elsewhere/x.wav" in res.stdout
    jfk = next(f for f in got["per_file"] if f["audio_filepath"] == "elsewhere/jfk.flac")
    assert jfk["match_rule"] == "basename" and jfk["lid_correct"] is True and jfk["hyp_lang"] == "en"
    assert {"audio_filepath": "cv.mp3", "lang": "fr", "hyp_lang": "en"} in got["lid"]["misses"]
    assert "miss: cv.mp3: reference fr, found en" in res.stdout
    # nothing matches: the error says which rules were tried
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"audio_filepath": "nowhere/none.wav", "lang": "en"}) + "\n")
    res = _cli("eval", str(bad), str(out))
    assert res.returncode == 2 and "relative to the input root" in res.stderr and "'nowhere/none.wav'" in res.stderr


def test_speaker_count_error_is_the_mean_over_files_with_a_reference_count(tmp_path):
    """Issue 34: eval printed 'mean |error| 0.0' beside per-file errors of -1, -3, -4, because files
    whose reference gives an RTTM (and no `num_speakers`) were left out of the mean. An output
    written straight to the two tables: three files with an RTTM (4 speakers each, found as 3, 2 and
    none: no speech), one with `num_speakers` 2 found as 2, one with neither (not counted)."""
    from deltalake import write_deltalake

    from pipeline.config import OutputConfig
    from pipeline.ledger import Ledger
    from pipeline.ledger.tables import SCHEMAS

    out = tmp_path / "out"
    led = Ledger(OutputConfig(uri=str(out)))
    hyp = {"a": ["s0", "s1", "s2"], "b": ["s0", "s1"], "c": [], "d": ["s0", "s1"], "e": ["s0"]}
    recs, segs = [], []
    for name, speakers in hyp.items():
        rid = f"id-{name}"
        recs.append({"recording_id": rid, "uri": str(tmp_path / f"{name}.wav"), "language": "en", "status": "ok"})
        recs[-1].update(fingerprint="f", write_id="w")
        for k, who in enumerate(speakers):
            segs.append(
                {"recording_id": rid, "uri": recs[-1]["uri"], "start": 2.0 * k, "end": 2.0 * k + 2.0, "text": "hi"}
            )
            segs[-1].update(speaker=who, language="en", accepted=True, fingerprint="f", write_id="w")
    for table, rows in (("recordings", recs), ("segments", segs)):
        schema = SCHEMAS[table]
        full = [{f.name: r.get(f.name) for f in schema} for r in rows]
        write_deltalake(led.table_uri(table), pa.Table.from_pylist(full, schema=schema))
    rttm = "".join(f"SPEAKER x 1 {2.0 * k:.2f} 2.00 <NA> <NA> r{k} <NA> <NA>\n" for k in range(4))
    (tmp_path / "four.rttm").write_text(rttm)
    refs = [{"audio_filepath": f"{n}.wav", "rttm_filepath": "four.rttm"} for n in "abc"]
    refs += [{"audio_filepath": "d.wav", "num_speakers": 2}, {"audio_filepath": "e.wav"}]
    (tmp_path / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    res = _cli("eval", str(tmp_path / "refs.jsonl"), str(out), "--json", str(tmp_path / "eval.json"))
    assert res.returncode == 0, res.stderr
    got = json.loads((tmp_path / "eval.json").read_text())
    per_file = {Path(f["audio_filepath"]).stem: f.get("speaker_count_error") for f in got["per_file"]}
    assert per_file == {"a": -1, "b": -2, "c": -4, "d": 0, "e": None}
    d = got["diarization"]
    assert d["speaker_count_files"] == 4 and d["speaker_count_mean_abs_error"] == pytest.approx((1 + 2 + 4 + 0) / 4)
    assert d["speaker_count_within_one"] == 2
    assert [r["speaker_count_error"] for r in d["per_file"]] == [-1, -2, -4]  # the DER lines agree
    assert "count mean |error| 1.75 over 4 file(s)" in res.stdout
    assert d["missed_s"] == pytest.approx(sum(r["missed_s"] for r in d["per_file"]))
