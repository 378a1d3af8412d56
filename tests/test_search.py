"""The search index (pipeline/search.py): kept up to date by the run's committer from the files each group
commit adds or replaces, built on demand by `scriptorium index`, and answering words and filters."""

from __future__ import annotations

import os
import sqlite3
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa

from pipeline.config import OutputConfig
from pipeline.execution.sink import GroupCommitter, stage_block, write_table
from pipeline.ledger import Ledger, read_output
from pipeline.records import TRANSCRIBED_SCHEMA, recording_id_for
from pipeline.search import Query, connect, count, index_path, match_expression, recording, search, sync
from tests.helpers.cli import cli_inproc

RUN = "20260101T000000-aaaaaa"


def transcribed(recs: dict[str, list[dict]], language: str = "en") -> pa.Table:
    """What the segment stage hands the sink: {uri: [segment fields]} -> one row per recording. A segment
    needs `text`; start/end/speaker/confidence/accepted/language default; words are made from the text."""
    rows = []
    for uri, segs in recs.items():
        size = os.stat(uri).st_size if os.path.exists(uri) else 100
        out = []
        for i, s in enumerate(segs):
            start = s.get("start", 2.0 * i)
            toks = s["text"].split()
            step = (s.get("end", start + 1.5) - start) / max(1, len(toks))
            out.append(
                {
                    "segment_index": i,
                    "start": start,
                    "end": s.get("end", start + 1.5),
                    "duration": s.get("end", start + 1.5) - start,
                    "text": s["text"],
                    "speaker": s.get("speaker"),
                    "language": s.get("language", language),
                    "confidence": s.get("confidence", 0.9),
                    "accepted": s.get("accepted", True),
                    "reject_reasons": [] if s.get("accepted", True) else ["low_confidence"],
                    "words": [
                        {"word": w, "start": start + k * step, "end": start + (k + 1) * step, "confidence": 0.9}
                        for k, w in enumerate(toks)
                    ],
                }
            )
        rows.append(
            {
                "recording_id": recording_id_for(uri),
                "uri": uri,
                "size": size,
                "mtime": 1.0,
                "duration": 2.0 * len(segs) + 1,
                "source_sample_rate": 16000,
                "source_channels": 1,
                "status": "ok",
                "language": language,
                "segments": out,
            }
        )
    return pa.Table.from_pylist(rows, schema=TRANSCRIBED_SCHEMA)


def texts(db: sqlite3.Connection, q: str = "", **filters) -> list[str]:
    return [h.text for h in search(db, Query(text=q, **filters))]


def test_the_committer_keeps_the_index_up_to_date_with_each_group(tmp_path):
    """Each group commit adds its files' rows to the index beside the output; a recording replaced by a
    later group loses its old text; what the index shows is what `read_output` shows."""
    cfg = OutputConfig(uri=str(tmp_path / "out"))
    led = Ledger(cfg)
    for name in ("segments", "recordings"):
        led.ensure_schema(name)
    committer = GroupCommitter(cfg, None)
    first = {
        "/in/mayor.wav": [{"text": "The mayor spoke about the bridge"}, {"text": "Traffic was heavy"}],
        "/in/river.wav": [{"text": "The river flooded the meadows"}],
    }
    committer.offer([stage_block(led, transcribed(first), RUN, "fp1")])
    committer.flush()
    path = index_path(cfg)
    assert path == tmp_path / "out" / "_scriptorium" / "search.sqlite"
    db = connect(path)
    assert texts(db, "bridge") == ["The mayor spoke about the bridge"]
    assert count(db) == 3

    # a second group: a new recording, and mayor.wav transcribed again (its rows replaced)
    second = {
        "/in/mayor.wav": [{"text": "The mayor opened the new bridge"}],
        "/in/harbour.wav": [{"text": "Ships left the harbour"}],
    }
    committer.replacing = frozenset({recording_id_for("/in/mayor.wav")})
    committer.offer([stage_block(led, transcribed(second), "20260102T000000-bbbbbb", "fp1")])
    committer.flush()
    assert texts(db, "bridge") == ["The mayor opened the new bridge"]
    assert texts(db, "traffic") == []
    assert sorted(texts(db)) == sorted(read_output(cfg).column("text").to_pylist())
    # and the index was brought up to date, not rebuilt: nothing is left for a sync to do
    again = sync(cfg)
    assert (again.files_added, again.files_removed) == (0, 0)


def test_index_on_demand_follows_maintain_and_hides_uncommitted_rows(tmp_path):
    """`scriptorium index OUT` builds the index of an output written without it, catches up after
    `maintain` rewrote every file (same rows, no duplicates), and never shows segments whose
    recordings commit did not happen."""
    out = tmp_path / "out"
    cfg = OutputConfig(uri=str(out))
    for k in range(3):
        write_table(cfg, transcribed({f"/in/{k}.wav": [{"text": f"chapter {k} of the chronicle"}]}), RUN, "fp1")
    r = cli_inproc("index", str(out))
    assert r.returncode == 0, r.stderr
    assert "+3 / -0 segments" in r.stdout
    db = connect(index_path(cfg))
    assert len(texts(db, "chronicle")) == 3

    r = cli_inproc("maintain", str(out), "--retention-hours", "0")
    assert r.returncode == 0, r.stderr
    stats = sync(cfg)
    # the compacted files hold the same rows: each keeps its place in the text index
    assert stats.files_removed > 0 and stats.segments_moved == 3
    assert stats.segments_added == stats.segments_removed == 0
    assert len(texts(db, "chronicle")) == 3
    # `filter` re-judges: the rewritten rows take their new verdict, their text stays indexed as it was
    r = cli_inproc("filter", str(out), "quality.min_confidence=0.95")
    assert r.returncode == 0, r.stderr
    stats = sync(cfg)
    assert stats.segments_moved == 3 and stats.segments_added == stats.segments_removed == 0
    assert len(texts(db, "chronicle", accepted=False)) == 3 and texts(db, "chronicle", accepted=True) == []

    # segments committed without their recordings row (a task that died between the two commits)
    led = Ledger(cfg)
    from pipeline.execution.sink import flatten

    segs, _ = flatten(transcribed({"/in/ghost.wav": [{"text": "a chronicle nobody committed"}]}), "fp1", RUN, "w-ghost")
    led.commit_table("segments", segs, [recording_id_for("/in/ghost.wav")], "w-ghost")
    assert sync(cfg).segments_added == 1
    assert len(texts(db, "chronicle")) == 3
    assert recording(db, recording_id_for("/in/ghost.wav")) is None


def test_words_stems_phrases_and_filters(tmp_path):
    out = tmp_path / "out"
    cfg = OutputConfig(uri=str(out))
    write_table(
        cfg,
        transcribed(
            {
                "/archive/2019/council.wav": [
                    {"text": "The councillors were building bridges", "speaker": "SPEAKER_00", "confidence": 0.95},
                    {"text": "Thank you.", "speaker": "SPEAKER_01", "confidence": 0.3, "accepted": False},
                ],
                "/archive/2020/radio.ogg": [
                    {"text": "Die Brücke über den Fluss", "language": "de", "speaker": "SPEAKER_00", "confidence": 0.8}
                ],
            }
        ),
        RUN,
        "fp1",
    )
    sync(cfg)
    db = connect(index_path(cfg))
    # English stemming: "bridge" finds "bridges", "build" finds "building"
    assert texts(db, "bridge build") == ["The councillors were building bridges"]
    # diacritics folded; a prefix
    assert texts(db, "brucke") == ["Die Brücke über den Fluss"]
    assert texts(db, "flu*") == ["Die Brücke über den Fluss"]
    # a phrase must match in order
    assert texts(db, '"building bridges"') == ["The councillors were building bridges"]
    assert texts(db, '"bridges building"') == []
    # FTS5 syntax in the words is taken as words, never an error
    for odd in ['"', "AND OR NOT", "bridge) OR (x", "NEAR(a b)", "col:thing", "*", "'; DROP TABLE seg; --"]:
        search(db, Query(text=odd))
    assert match_expression('a "b c" d*') == '"a" "b c" "d"*'
    # filters, each alone and on an empty query
    assert texts(db, language="de") == ["Die Brücke über den Fluss"]
    assert texts(db, speaker="SPEAKER_01") == ["Thank you."]
    assert texts(db, accepted=False) == ["Thank you."]
    assert sorted(texts(db, min_confidence=0.5)) == [
        "Die Brücke über den Fluss",
        "The councillors were building bridges",
    ]
    assert texts(db, max_confidence=0.5) == ["Thank you."]
    assert texts(db, path="/2020/") == ["Die Brücke über den Fluss"]
    today = date.today()
    assert len(texts(db, since=today - timedelta(days=1), until=today + timedelta(days=1))) == 3
    assert texts(db, until=today - timedelta(days=1)) == []
    # a hit carries what a result line shows, the matched words marked
    hit = search(db, Query(text="bridges"))[0]
    assert hit.snippet == "The councillors were building \x02bridges\x03"
    assert (hit.uri, hit.start, hit.speaker, hit.language, hit.confidence) == (
        "/archive/2019/council.wav",
        0.0,
        "SPEAKER_00",
        "en",
        0.95,
    )
    rec = recording(db, hit.recording_id)
    assert [w[0] for w in rec["segments"][0]["words"]] == "The councillors were building bridges".split()


def test_remote_output_index_lives_in_the_cache_and_the_run_keeps_only_one_made_there(monkeypatch, tmp_path):
    from pipeline.search import keep_up

    monkeypatch.setenv("SCRIPTORIUM_SEARCH_DIR", str(tmp_path / "cache"))
    cfg = OutputConfig(uri="s3://bucket/out/")
    path = index_path(cfg)
    assert path.parent.parent == tmp_path / "cache"
    assert index_path(OutputConfig(uri="s3://bucket/out")) == path
    assert index_path(OutputConfig(uri="s3://bucket/other")) != path
    # no index made on this machine: the run's hook does nothing (and reads nothing from the store)
    assert keep_up(cfg, ledger=None) is None  # type: ignore[arg-type]
    assert not Path(path).exists()


def test_index_of_no_output_is_one_line_and_exit_2(tmp_path):
    r = cli_inproc("index", str(tmp_path / "nothing-here"))
    assert r.returncode == 2 and "no Scriptorium output" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "nothing-here").exists()


def test_an_output_on_s3_is_indexed_in_the_cache_and_kept_up_by_the_committer(s3_endpoint, monkeypatch, tmp_path):
    """An output on an S3 API (moto): `index` builds the index in the local cache, reading the tables'
    files from the store; from then on the committer on this machine keeps it up to date."""
    import s3fs

    from pipeline.config import StorageOptions

    monkeypatch.setenv("SCRIPTORIUM_SEARCH_DIR", str(tmp_path / "cache"))
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}).mkdir("search-out")
    cfg = OutputConfig(uri="s3://search-out/run", storage=StorageOptions(endpoint_url=s3_endpoint))
    write_table(cfg, transcribed({"s3://in/a.wav": [{"text": "the lighthouse keeper"}]}), RUN, "fp1")
    r = cli_inproc("index", cfg.uri, "--endpoint-url", s3_endpoint)
    assert r.returncode == 0, r.stderr
    path = index_path(cfg)
    assert path.is_relative_to(tmp_path / "cache") and path.exists()

    committer = GroupCommitter(cfg, None)
    led = Ledger(cfg)
    committer.offer([stage_block(led, transcribed({"s3://in/b.wav": [{"text": "a lighthouse in fog"}]}), RUN, "fp1")])
    committer.flush()
    assert sorted(texts(connect(path), "lighthouse")) == ["a lighthouse in fog", "the lighthouse keeper"]
