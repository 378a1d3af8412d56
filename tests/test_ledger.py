"""The output's Delta tables and their commit protocol (pipeline/ledger/), unit level (no
Ray cluster, no models).

Each test stages blocks the way a Ray write task does and commits them the way the run's committer
does (`pipeline.execution.sink`), and reads the tables back with delta-rs's own reader, Polars and
`read_output`. See pipeline/ledger/ for the protocol.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from pipeline.config import OutputConfig
from pipeline.ledger import (
    LOCK_SCHEMA,
    LOCK_TABLE,
    Ledger,
    OutputLockedError,
    RunLock,
    maintain,
    read_output,
    storage_options,
    write_id_for,
)
from pipeline.records import InputFile, recording_id_for
from tests.helpers import LOCAL_CONF

RUN_A, RUN_B = "20260101T000000-aaaaaa", "20260102T000000-bbbbbb"


def fake_rows(ids: list[str], nseg: int = 2, status: str = "ok", size: int = 100, mtime=1.0) -> pa.Table:
    """What the segment stage hands the sink: one row per recording, segments nested."""
    from pipeline.records import TRANSCRIBED_SCHEMA

    rows = []
    for rid in ids:
        rows.append(
            {
                "recording_id": recording_id_for(rid),
                "uri": rid,
                "size": size,
                "etag": None,
                "mtime": mtime,
                "duration": 3.0,
                "source_sample_rate": 16000,
                "source_channels": 1,
                "status": status,
                "error": "decode: broken" if status == "error" else None,
                "num_speakers": 1,
                "speech_seconds": 2.0,
                "language": "en",
                "punctuated": True,
                "asr_audio_seconds": 2.0,
                "asr_padded_seconds": 30.0,
                "asr_wall_seconds": 1.0,
                "segments": [
                    {
                        "segment_index": i,
                        "start": float(i),
                        "end": i + 1.0,
                        "duration": 1.0,
                        "text": f"{rid} {i}",
                        "words": [{"word": "w", "start": float(i), "end": i + 0.5, "confidence": 0.9}],
                        "reject_reasons": [],
                        "accepted": True,
                    }
                    for i in range(0 if status == "error" else nseg)
                ],
            }
        )
    return pa.Table.from_pylist(rows, schema=TRANSCRIBED_SCHEMA)


def write(cfg: OutputConfig | str, run_id: str, ids: list[str], fp: str = "fp1", **kw):
    """One block staged and committed as one group, as the run's committer does it."""
    from pipeline.execution.sink import write_table

    cfg = OutputConfig(uri=cfg) if isinstance(cfg, str) else cfg
    return write_table(cfg, fake_rows(ids, **kw), run_id, fp)


def keys(t: pa.Table) -> list[tuple[str, int]]:
    return list(zip(t.column("recording_id").to_pylist(), t.column("segment_index").to_pylist()))


def plain(out: str, table: str = "segments") -> pa.Table:
    """What a reader that knows nothing of Scriptorium sees: the Delta table as it is."""
    return DeltaTable(str(Path(out) / table)).to_pyarrow_table()


def versions(out: str) -> tuple[int, int]:
    return DeltaTable(f"{out}/segments").version(), DeltaTable(f"{out}/recordings").version()


def test_retried_write_task_is_idempotent(tmp_path):
    out = str(tmp_path / "out")
    write(out, RUN_A, ["a", "b"])
    v = versions(out)
    write(out, RUN_A, ["a", "b"])  # the same task again (Ray retried it): it finds its own commits
    assert versions(out) == v, "a retried write must not commit again"
    wid = write_id_for(RUN_A, [recording_id_for("a"), recording_id_for("b")])
    for table in ("segments", "recordings"):
        assert DeltaTable(f"{out}/{table}").transaction_version(f"scriptorium-{wid}") == 1
    assert len(keys(plain(out))) == len(set(keys(plain(out)))) == 4
    # a DIFFERENT run writing the same recordings replaces them (predicate overwrite), never adds
    write(out, RUN_B, ["a", "b"])
    assert versions(out) == (v[0] + 1, v[1] + 1)
    t = plain(out)
    assert len(keys(t)) == len(set(keys(t))) == 4 and set(t.column("write_id").to_pylist()) == {
        write_id_for(RUN_B, [recording_id_for("a"), recording_id_for("b")])
    }


def test_predicate_replace_and_plan(tmp_path):
    out = str(tmp_path / "out")
    cfg = OutputConfig(uri=out)
    write(out, RUN_A, ["a", "b"])
    write(out, RUN_A, ["c"])
    write(out, RUN_A, ["e"], status="error")
    # a changed input, redone by a later run with more segments: its old rows go in the same commit
    write(out, RUN_B, ["a"], nseg=3, size=200)
    t = plain(out)
    assert Counter(t.column("recording_id").to_pylist())[recording_id_for("a")] == 3
    assert sorted(keys(t)) == sorted(keys(read_output(cfg))) and len(keys(t)) == 3 + 2 + 2
    recs = plain(out, "recordings")
    assert recs.num_rows == 4 and len(set(recs.column("recording_id").to_pylist())) == 4
    # an error recording later redone OK replaces its error row
    led = Ledger(cfg)
    f = lambda uri, size=100, mtime=1.0, etag=None: InputFile(uri=uri, size=size, etag=etag, mtime=mtime)  # noqa: E731
    todo, counts = led.plan([f("a", 200), f("b", 100, 2.0), f("c"), f("e"), f("z")], "fp1")
    assert counts == {"new": 1, "changed": 1, "skipped": 2, "retry_failed": 1}, counts
    assert {x.uri for x in todo} == {"b", "e", "z"}
    _, counts = led.plan([f("a", 200), f("c")], "fp2")
    assert counts["changed"] == 2
    # etag wins over mtime where both sides have one
    write(out, RUN_B, ["s3obj"], mtime=5.0)
    assert led.plan([InputFile(uri="s3obj", size=100, etag=None, mtime=5.0)], "fp1")[1]["skipped"] == 1
    write(out, RUN_B, ["e"])
    assert read_output(cfg, "recordings").filter(pa.compute.equal(pa.compute.field("uri"), "e")).column(
        "status"
    ).to_pylist() == ["ok"]


def test_crash_between_the_two_tables(tmp_path, monkeypatch):
    """A task that dies after its `segments` commit and before its `recordings` commit."""
    from pipeline.execution import sink

    out = str(tmp_path / "out")
    cfg = OutputConfig(uri=out)
    write(out, RUN_A, ["a", "b"])
    real = sink._commit

    def die_before_recordings(ledger, name, *args):
        if name == "recordings":
            raise SystemExit("committer killed between the tables")
        return real(ledger, name, *args)

    monkeypatch.setattr(sink, "_commit", die_before_recordings)
    with pytest.raises(SystemExit):
        write(out, RUN_B, ["a", "gone"], nseg=3, size=200)  # "a" changed and is being redone, "gone" is new
    monkeypatch.setattr(sink, "_commit", real)
    # a plain reader of `segments` sees the half-done write (documented); read_output does not
    t = plain(out)
    assert Counter(t.column("recording_id").to_pylist()) == {
        recording_id_for("a"): 3,
        recording_id_for("b"): 2,
        recording_id_for("gone"): 3,
    }
    committed = read_output(cfg)
    assert sorted(keys(committed)) == [(recording_id_for("b"), 0), (recording_id_for("b"), 1)], (
        "a recording whose segments were replaced but whose recordings row was not must not be shown mixed"
    )
    # the next run trusts only `recordings`: "a" is still changed, "gone" still new
    led = Ledger(cfg)
    todo, counts = led.plan(
        [
            InputFile(uri="a", size=200, mtime=1.0),
            InputFile(uri="b", size=100, mtime=1.0),
            InputFile(uri="gone", size=200, mtime=1.0),
        ],
        "fp1",
    )
    assert counts == {"new": 1, "changed": 1, "skipped": 1, "retry_failed": 0}, counts
    # the rerun's predicate overwrite clears what the dead task left
    write(out, "20260103T000000-cccccc", ["a"], nseg=3, size=200)
    assert Counter(read_output(cfg).column("recording_id").to_pylist())[recording_id_for("a")] == 3
    # "gone" is not in the input any more: maintenance (under the lock) deletes its orphaned rows
    done = maintain(cfg, retention_hours=0)
    assert (done["orphaned_segment_recordings"], done["recordings_to_redo"]) == (1, 0), done
    assert sorted(keys(plain(out))) == sorted(keys(read_output(cfg))) and len(keys(plain(out))) == 5


def test_crash_then_reverted_fingerprint_is_redone_after_maintain(tmp_path, monkeypatch):
    """The one case the plan cannot see: a redo for a new fingerprint dies between the tables, then
    the old fingerprint comes back. `maintain` uncommits the recording, so the next run redoes it."""
    from pipeline.execution import sink

    out = str(tmp_path / "out")
    cfg = OutputConfig(uri=out)
    write(out, RUN_A, ["a", "b"])
    real = sink._commit
    monkeypatch.setattr(sink, "_commit", lambda led, name, *a: real(led, name, *a) if name == "segments" else exit(1))
    with pytest.raises(SystemExit):
        write(out, RUN_B, ["a"], fp="fp2")
    monkeypatch.setattr(sink, "_commit", real)
    files = [InputFile(uri=u, size=100, mtime=1.0) for u in ("a", "b")]
    assert Ledger(cfg).plan(files, "fp1")[1]["skipped"] == 2  # "a" looks done, but none of its segments match
    assert maintain(cfg)["recordings_to_redo"] == 1
    todo, counts = Ledger(cfg).plan(files, "fp1")
    assert [f.uri for f in todo] == ["a"] and counts["new"] == 1
    write(out, "20260103T000000-cccccc", ["a"])
    assert sorted(keys(read_output(cfg))) == sorted(keys(plain(out))) and len(keys(plain(out))) == 4


def test_parallel_write_tasks_commit_concurrently(tmp_path):
    """Six write tasks commit at once (disjoint recordings); conflicts are retried; each row once."""
    out = str(tmp_path / "out")
    Ledger(OutputConfig(uri=out)).ensure("segments")
    Ledger(OutputConfig(uri=out)).ensure("recordings")
    errors: list[BaseException] = []

    def task(i):
        try:
            write(out, RUN_A, [f"r{i}-{j}" for j in range(3)])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=task, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    t = plain(out)
    assert t.num_rows == len(set(keys(t))) == 6 * 3 * 2
    assert plain(out, "recordings").num_rows == 18


def test_second_job_on_the_same_output_is_refused(tmp_path):
    """The overlap issue 11 describes, with the functions called in the order an overlap allows."""
    cfg = OutputConfig(uri=str(tmp_path / "out"))
    a = Ledger(cfg).lock(RUN_A)
    with pytest.raises(OutputLockedError, match=f"in use by run {RUN_A}"):
        Ledger(cfg).lock(RUN_B)
    # both look at the free lock at the same moment; A commits first; B's commit must lose
    a.release()
    b = RunLock(Ledger(cfg), RUN_B)
    dt_b, row_b = b._current()
    assert row_b is None  # a released lock: no row
    a = Ledger(cfg).lock(RUN_A)
    with pytest.raises(CommitFailedError):
        b._put(dt_b, released=False)
    with pytest.raises(OutputLockedError):
        b.acquire()  # re-checks the fresh state: A holds it
    # A writes its data while B is refused: nothing of A's is touched
    write(cfg, RUN_A, ["x"])
    a.release()
    b = Ledger(cfg).lock(RUN_B)
    assert b.holder and not b.lost
    b.release()
    assert read_output(cfg).num_rows == 2


def test_stale_locks_are_taken_over(tmp_path):
    from deltalake import write_deltalake

    cfg = OutputConfig(uri=str(tmp_path / "out"))
    led = Ledger(cfg)
    dt = led.ensure(LOCK_TABLE)
    import socket
    import time

    def holder_row(holder: str, age_s: float) -> None:
        write_deltalake(
            led.ensure(LOCK_TABLE),
            pa.Table.from_pylist(
                [{"run_id": RUN_A, "holder": holder, "heartbeat": time.time() - age_s, "released": False}],
                schema=LOCK_SCHEMA,
            ),
            mode="overwrite",
        )

    assert dt is not None
    # a driver on this host that was SIGKILLed: its pid is gone -> taken over at once
    holder_row(f"{socket.gethostname()}:{2**22 + 7}:12345", 1)
    led.lock(RUN_B).release()
    # a driver on another host, heartbeat fresh -> refused; heartbeat older than stale_after_s -> taken over
    holder_row("elsewhere:1:1", 5)
    with pytest.raises(OutputLockedError, match="heartbeat 5 s ago"):
        led.lock(RUN_B, stale_after_s=60)
    # a holder that missed three beats is probably dead: wait for its lock to go stale, then take it
    holder_row("elsewhere:1:1", 3.5)
    t0 = time.time()
    led.lock(RUN_B, stale_after_s=4, heartbeat_s=1).release()
    assert 0.4 < time.time() - t0 < 10
    holder_row("elsewhere:1:1", 120)
    lk = led.lock(RUN_B, stale_after_s=60)
    # the old holder comes back and tries to beat: it sees it lost the lock and does not take it back
    old = RunLock(led, RUN_A)
    old.refresh()
    assert old.lost
    lk.refresh()
    assert not lk.lost
    lk.release()


def test_refused_run_fails_before_doing_anything(tmp_path):
    """`scriptorium run` on an output another job holds raises OutputLockedError (CLI: exit 2)."""
    from pipeline.config import load_config
    from pipeline.runner import run

    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.wav").write_bytes(b"RIFF" + os.urandom(64))
    out = tmp_path / "out"
    held = Ledger(OutputConfig(uri=str(out))).lock(RUN_A)
    try:
        with pytest.raises(OutputLockedError):
            run(load_config(LOCAL_CONF, [f"input.uri={inp}", f"output.uri={out}"]))
    finally:
        held.release()
    assert not (out / "segments").exists() and not (out / "report.json").exists()


def test_maintain_compacts_checkpoints_and_vacuums(tmp_path):
    import polars as pl

    out = str(tmp_path / "out")
    cfg = OutputConfig(uri=out)
    for i in range(12):
        write(out, RUN_A, [f"m{i}"])
    write(out, RUN_B, ["m0"], nseg=4)  # leaves a removed file behind for vacuum
    before = sorted(keys(read_output(cfg)))
    assert len(DeltaTable(f"{out}/segments").file_uris()) == 12
    held = Ledger(cfg).lock(RUN_A)
    with pytest.raises(OutputLockedError):
        maintain(cfg)
    held.release()
    done = maintain(cfg, retention_hours=0)
    for table in ("segments", "recordings"):
        dt = DeltaTable(f"{out}/{table}")
        assert len(dt.file_uris()) == 1, (table, done)
        assert (Path(out) / table / "_delta_log" / "_last_checkpoint").exists()
        parquet = [p for p in (Path(out) / table).glob("*.parquet")]
        assert len(parquet) == 1, f"vacuum left {len(parquet)} data files in {table}"
    assert done["segments"]["files_before"] == 12 and done["segments"]["vacuumed"] >= 12
    assert sorted(keys(read_output(cfg))) == before
    assert sorted(keys(pl.read_delta(f"{out}/segments").to_arrow())) == before
    assert not Ledger(cfg).maintenance_due()


def test_storage_options_for_s3_never_hold_credentials(monkeypatch):
    from pipeline.config import StorageOptions

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert storage_options(OutputConfig(uri="/data/out")) is None
    opts = storage_options(OutputConfig(uri="s3://b/out", storage=StorageOptions(endpoint_url="http://127.0.0.1:9000")))
    assert opts == {
        "aws_conditional_put": "etag",
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ALLOW_HTTP": "true",
    }
    assert "s3cr3t" not in repr(opts)
    assert (
        storage_options(OutputConfig(uri="s3://b/out", storage=StorageOptions(anon=True)))["AWS_SKIP_SIGNATURE"]
        == "true"
    )


@pytest.mark.s3
def test_s3_commits_with_injected_faults():
    """On the loopback S3 server behind a proxy failing 15% of requests (including answers lost after
    the server acted): every write lands exactly once, and a plain reader and Polars agree."""
    import polars as pl
    import s3fs

    from tests.helpers.faults import S3Faults

    with S3Faults(fail_rate=0.15, seed=11) as s3:
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3.direct})
        fs.mkdir("deltafaults")
        faulty = OutputConfig(uri="s3://deltafaults/out", storage={"endpoint_url": s3.endpoint})
        Ledger(faulty).ensure("segments")
        Ledger(faulty).ensure("recordings")
        s3.start_faults()
        lk = Ledger(faulty).lock(RUN_A)
        for i in range(6):
            write(faulty, RUN_A, [f"s3-{i}"])
        write(faulty, RUN_A, ["s3-0"])  # a retried task
        lk.release()
        s3.stop_faults()
        clean = OutputConfig(uri="s3://deltafaults/out", storage={"endpoint_url": s3.direct})
        opts = storage_options(clean)
        dt = DeltaTable("s3://deltafaults/out/segments", storage_options=opts)
        t = dt.to_pyarrow_table()
        assert t.num_rows == len(set(keys(t))) == 12
        assert sorted(keys(read_output(clean))) == sorted(keys(t))
        assert pl.read_delta("s3://deltafaults/out/recordings", storage_options=opts).height == 6
        assert sum(s3.faults.values()) >= 3, s3.faults


def test_an_old_json_ledger_output_is_refused(tmp_path):
    from pipeline.ledger import LegacyOutputError, OutputError

    out = tmp_path / "old"
    (out / "_ledger" / "commits").mkdir(parents=True)
    (out / "_ledger" / "commits" / "p1.json").write_text('{"part": "p1", "recordings": []}')
    with pytest.raises(LegacyOutputError, match="new output.uri") as info:
        Ledger(OutputConfig(uri=str(out))).lock(RUN_A)
    assert isinstance(info.value, OutputError)


def test_a_run_maintains_the_output_when_due(tmp_path):
    out = str(tmp_path / "out")
    led = Ledger(OutputConfig(uri=out))
    for i in range(4):
        write(out, RUN_A, [f"d{i}"])
    assert led.maintain_if_due(every_files=5) is None  # not yet: 4 files per table
    write(out, RUN_A, ["d4"])
    done = led.maintain_if_due(every_files=5)
    assert done and done["segments"]["files_after"] == done["recordings"]["files_after"] == 1, done
    assert "orphaned_segment_recordings" in done and read_output(OutputConfig(uri=out)).num_rows == 10


def test_a_table_of_an_older_schema_gains_new_columns(tmp_path):
    """An output written before a column was added (e.g. a new quality signal) takes the new rows."""
    from pipeline.ledger import SEGMENTS_TABLE_SCHEMA

    out = str(tmp_path / "out")
    old_schema = pa.schema([f for f in SEGMENTS_TABLE_SCHEMA if f.name != "chars_per_second"])
    DeltaTable.create(f"{out}/segments", schema=old_schema)
    write(out, RUN_A, ["a"])
    t = read_output(OutputConfig(uri=out))
    assert t.num_rows == 2 and "chars_per_second" in t.column_names


def test_maintain_and_lock_through_the_cli(tmp_path, capsys):
    """`scriptorium maintain OUT` compacts what runs wrote; a held output is one line and exit 2."""
    import json

    from pipeline.cli import main

    out = str(tmp_path / "out")
    for i in range(3):
        write(out, RUN_A, [f"c{i}"])
    held = Ledger(OutputConfig(uri=out)).lock(RUN_B)
    assert main(["maintain", out]) == 2
    assert f"in use by run {RUN_B}" in capsys.readouterr().err
    held.release()
    assert main(["maintain", out, "--retention-hours", "0"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["segments"]["files_before"] == 3
    assert len(DeltaTable(f"{out}/segments").file_uris()) == 1


# -- group commits (pipeline/ledger/staging.py) ---------------------------------------------------
def _staged(out: str, run_id: str, ids: list[str], **kw):
    from pipeline.execution.sink import stage_block

    return stage_block(Ledger(OutputConfig(uri=out)), fake_rows(ids, **kw), run_id, "fp1")


def test_a_group_of_blocks_is_one_commit_per_table_and_exactly_once(tmp_path):
    """Many write tasks' blocks, one transaction per table; offered again (a retried task, the
    end-of-run flush), none is committed twice; staged files are invisible until committed."""
    from pipeline.execution.sink import commit_blocks

    out = str(tmp_path / "out")
    led = Ledger(OutputConfig(uri=out))
    led.ensure("segments"), led.ensure("recordings")
    v0 = versions(out)
    blocks = [_staged(out, RUN_A, [f"g{i}-{j}" for j in range(4)]) for i in range(5)]
    assert plain(out).num_rows == 0, "a staged file must not be visible before its group commit"
    assert commit_blocks(led, blocks, replacing=()) == 5
    assert versions(out) == (v0[0] + 1, v0[1] + 1)
    t = plain(out)
    assert t.num_rows == len(set(keys(t))) == 5 * 4 * 2 and plain(out, "recordings").num_rows == 20
    for b in blocks:
        assert DeltaTable(f"{out}/recordings").transaction_version(f"scriptorium-{b.write_id}") == 1
    # the same blocks again, and one of them re-staged by a retried task (new file, same write id)
    again = [*blocks, _staged(out, RUN_A, [f"g0-{j}" for j in range(4)])]
    assert commit_blocks(led, again, replacing=()) == 0
    assert versions(out) == (v0[0] + 1, v0[1] + 1) and plain(out).num_rows == 40
    assert sorted(keys(read_output(OutputConfig(uri=out)))) == sorted(keys(plain(out)))


def test_a_commit_of_new_recordings_costs_the_same_whatever_the_history(tmp_path):
    """New recordings are appended with Add actions: the commit reads no data file, so its
    statistics name only the staged files (a predicate overwrite would scan older files)."""
    from pipeline.execution.sink import commit_blocks

    out = str(tmp_path / "out")
    led = Ledger(OutputConfig(uri=out))
    for i in range(3):
        commit_blocks(led, [_staged(out, RUN_A, [f"h{i}-{j}" for j in range(3)])], replacing=())
    last = DeltaTable(f"{out}/segments").history(1)[0]
    assert last["operation"] == "WRITE" and last["operationParameters"]["mode"] == "Append", last
    assert "predicate" not in last["operationParameters"]


def test_a_group_with_a_changed_recording_replaces_its_older_rows(tmp_path):
    from pipeline.execution.sink import commit_blocks

    out = str(tmp_path / "out")
    led = Ledger(OutputConfig(uri=out))
    commit_blocks(led, [_staged(out, RUN_A, ["a", "b"])], replacing=())
    redo = [_staged(out, RUN_B, ["a"], nseg=3, size=200), _staged(out, RUN_B, ["new1"])]
    commit_blocks(led, redo, replacing={recording_id_for("a")})
    t = plain(out)
    assert Counter(t.column("recording_id").to_pylist()) == {
        recording_id_for("a"): 3,
        recording_id_for("b"): 2,
        recording_id_for("new1"): 2,
    }
    assert plain(out, "recordings").num_rows == 3
    assert sorted(keys(read_output(OutputConfig(uri=out)))) == sorted(keys(t))


def test_the_next_run_deletes_a_group_left_between_the_two_tables(tmp_path, monkeypatch):
    """The committer dies after a group's `segments` commit: the next run's sink, before it commits
    anything, deletes that group's rows, so plain readers see each recording at most once again."""
    from pipeline.execution import sink
    from pipeline.ledger.staging import repair_dangling_group

    out = str(tmp_path / "out")
    led = Ledger(OutputConfig(uri=out))
    sink.commit_blocks(led, [_staged(out, RUN_A, ["a", "b"])], replacing=())
    assert repair_dangling_group(led) == 0, "a whole group is not dangling"
    real = sink._commit
    monkeypatch.setattr(sink, "_commit", lambda led, name, *a: real(led, name, *a) if name == "segments" else exit(1))
    with pytest.raises(SystemExit):
        sink.commit_blocks(led, [_staged(out, RUN_B, ["c"]), _staged(out, RUN_B, ["d"])], replacing=())
    monkeypatch.setattr(sink, "_commit", real)
    assert len(keys(plain(out))) == 8 and len(keys(read_output(OutputConfig(uri=out)))) == 4
    assert repair_dangling_group(led) == 2
    assert sorted(keys(plain(out))) == sorted(keys(read_output(OutputConfig(uri=out)))) and len(keys(plain(out))) == 4
    assert repair_dangling_group(led) == 0
    # the next run redoes c and d as new recordings: appended, each once
    sink.commit_blocks(led, [_staged(out, RUN_B, ["c", "d"])], replacing=())
    assert len(keys(plain(out))) == len(set(keys(plain(out)))) == 8


def test_the_committer_commits_on_time_or_count_and_flushes_what_is_left(tmp_path):
    """`GroupCommitter` without a run's actor: blocks offered to it are committed in groups of at
    least `commit_max_recordings`, and `finish` commits the rest exactly once."""
    from pipeline.execution.sink import GroupCommitter

    out = str(tmp_path / "out")
    cfg = OutputConfig(uri=out, commit_max_recordings=6, commit_interval_s=3600)
    led = Ledger(cfg)
    led.ensure("segments"), led.ensure("recordings")
    committer = GroupCommitter(cfg, state=None)
    blocks = [_staged(out, RUN_A, [f"k{i}-{j}" for j in range(2)]) for i in range(5)]
    committer.offer(blocks[:2])
    assert not committer.due()  # 4 recordings staged, the group waits for 6
    committer.offer(blocks[2:4])
    assert committer.due()
    committer.flush()
    assert committer.groups == 1 and plain(out, "recordings").num_rows == 8
    committer._thread.start()
    committer.finish([*blocks, blocks[0]])  # Ray's returns: every block again, one twice
    assert committer.groups == 2 and plain(out, "recordings").num_rows == 10
    assert versions(out) == (2, 2)


def test_staged_files_carry_statistics_every_reader_can_filter_on(tmp_path):
    """A filtered scan (what `export` does: `accepted == True`, a set of recording ids) finds every
    row of a group-committed file: each plain column has its null count, min and max, as delta-rs's
    own writer gives them (a missing min made delta-rs's dataset skip the file)."""
    import pyarrow.compute as pc

    from pipeline.execution.sink import commit_blocks

    out = str(tmp_path / "out")
    led = Ledger(OutputConfig(uri=out))
    commit_blocks(led, [_staged(out, RUN_A, ["s1", "s2", "s3"])], replacing=())
    seg = DeltaTable(f"{out}/segments").to_pyarrow_dataset()
    assert seg.to_table(filter=pc.field("accepted") == True).num_rows == 6  # noqa: E712 - an Arrow expression
    assert seg.to_table(filter=pc.field("recording_id").isin([recording_id_for("s2")])).num_rows == 2
    assert seg.to_table(filter=pc.field("start") >= 1.0).num_rows == 3
    rec = DeltaTable(f"{out}/recordings").to_pyarrow_dataset()
    assert rec.to_table(filter=pc.field("committed_at") > pa.scalar(0, pa.timestamp("us", tz="UTC"))).num_rows == 3
    assert rec.to_table(filter=pc.field("status") == "ok").num_rows == 3


def test_flatten_is_the_row_by_row_layout_column_by_column():
    """`flatten` builds both tables in Arrow; the rows are those of the plain per-row construction
    (segments spread beside their recording's id and uri, recordings with their segment count)."""
    from pipeline.execution.sink import flatten
    from pipeline.ledger import RECORDINGS_TABLE_SCHEMA, SEGMENTS_TABLE_SCHEMA
    from pipeline.records import RECORDINGS_SCHEMA

    table = pa.concat_tables([fake_rows(["f1", "f2"], nseg=3), fake_rows(["f3"], status="error")])
    seg, rec = flatten(table, "fp9", "run9", "w9")
    want_seg, want_rec = [], []
    for row in table.to_pylist():
        for s in row["segments"] or []:
            want_seg.append(
                {"recording_id": row["recording_id"], "uri": row["uri"], **s, "fingerprint": "fp9", "write_id": "w9"}
            )
        want_rec.append(
            {
                **{n: row.get(n) for n in RECORDINGS_SCHEMA.names},
                "num_segments": len(row["segments"] or []),
                "fingerprint": "fp9",
                "mtime": row["mtime"],
                "run_id": "run9",
                "write_id": "w9",
            }
        )
    assert seg.schema == SEGMENTS_TABLE_SCHEMA and rec.schema == RECORDINGS_TABLE_SCHEMA
    assert seg.to_pylist() == pa.Table.from_pylist(want_seg, schema=SEGMENTS_TABLE_SCHEMA).to_pylist()
    got = rec.drop_columns(["committed_at"]).to_pylist()
    assert (
        got == pa.Table.from_pylist(want_rec, schema=RECORDINGS_TABLE_SCHEMA).drop_columns(["committed_at"]).to_pylist()
    )
    assert rec.column("committed_at").null_count == 0
