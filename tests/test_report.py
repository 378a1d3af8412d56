"""report.html describes the output as well as the run: a rerun that did nothing still shows the output's
totals (recordings, hours, languages, speakers, accepted share, read from the Delta tables), and a chart
with nothing to show is left out, not drawn with an empty axis."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa

from pipeline.report import OutputTotals, RunReport
from pipeline.report_html import render
from tests.helpers import LOCAL_CONF
from tests.helpers.cli import run_cli


def _noop_report(totals: OutputTotals | None) -> RunReport:
    zeros = {
        k: 0
        for k in RunReport.model_fields
        if RunReport.model_fields[k].annotation in (int, float) and RunReport.model_fields[k].is_required()
    }
    zeros.update(discovered=3, skipped=3)
    return RunReport(
        run_id="r1",
        fingerprint="f",
        input_uri="in",
        output_uri="out",
        errors=[],
        warnings=[],
        output_totals=totals,
        **zeros,
    )


def test_output_totals_add_up_the_tables():
    recs = pa.table(
        {
            "status": ["ok", "ok", "no_speech", "error"],
            "duration": [10.0, 20.0, 5.0, None],
            "num_speakers": pa.array([2, 1, None, None], pa.int32()),
            "models": ["m1", "m1", "m2", None],
        }
    )
    segs = pa.table(
        {
            "start": [0.0, 4.0, 0.0, 1.0],
            "end": [3.0, 6.0, 10.0, 1.5],
            "language": ["en", "en", "de", None],
            "accepted": [True, False, True, True],
        }
    )
    t = OutputTotals.of(recs, segs)
    assert (t.recordings, t.ok, t.no_speech, t.error) == (4, 2, 1, 1)
    assert t.audio_seconds == 35.0 and t.speakers == 3 and t.speakers_per_recording == {"1": 1, "2": 1}
    assert t.language_seconds == {"de": 10.0, "en": 5.0} and t.models == ["m1", "m2"]
    assert (t.accepted_segments, t.rejected_segments) == (3, 1)
    assert t.accepted_share == 13.5 / 15.5
    empty = OutputTotals.of(recs.slice(0, 0), segs.slice(0, 0))
    assert empty.recordings == 0 and empty.accepted_share is None and empty.language_seconds == {}


def test_a_noop_page_shows_the_output_and_no_empty_chart():
    totals = OutputTotals(
        recordings=3,
        ok=3,
        audio_seconds=7200.0,
        speakers=4,
        speakers_per_recording={"1": 2, "2": 1},
        language_seconds={"en": 3000.0, "de": 1000.0},
        accepted_segments=9,
        rejected_segments=1,
        accepted_seconds=900.0,
        rejected_seconds=100.0,
        models=["asr=whisper:base"],
    )
    page = render(_noop_report(totals))
    assert "2.00 h" in page and "90.0% of segment audio" in page and "en, de" in page and "4 in 3 files" in page
    assert "asr=whisper:base" in page and "Nothing to do" in page
    assert page.count("data:image/png;base64,") == 2  # the output's languages and speakers; no run charts
    assert "nothing to show" not in page
    # an output without speakers or segments: its charts are left out too
    assert render(_noop_report(OutputTotals(recordings=1, ok=1))).count("data:image") == 0


def test_a_noop_rerun_through_the_cli_keeps_the_outputs_totals(shared_output, tmp_path):
    audio, out = shared_output
    mine = tmp_path / "out"
    shutil.copytree(out, mine)
    first = json.loads((mine / "report.json").read_text())
    res = run_cli("run", str(LOCAL_CONF), f"input.uri={audio}", f"output.uri={mine}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert " 0 new, 0 changed" in res.stdout
    report = json.loads((mine / "report.json").read_text())
    totals = report["output_totals"]
    assert totals["recordings"] == first["ok"] + first["no_speech"] + first["error"]
    assert totals["audio_seconds"] == round(first["audio_seconds"], 3)
    assert set(totals["language_seconds"]) == set(first["language_seconds"])
    assert totals["accepted_segments"] == first["accepted_segments"]
    page = (mine / "report.html").read_text()
    assert "<h2>Output</h2>" in page and f"{totals['recordings']} ({totals['ok']} ok" in page
    assert all(lang in page for lang in totals["language_seconds"]) and "of segment audio" in page
    assert "Nothing to do" in page and "nothing to show" not in page
