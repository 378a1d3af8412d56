"""The output's lock (pipeline/ledger/lock.py): two jobs cannot both take it, on a new output or an
existing one. Issue 32: two `scriptorium run` started together on an output that did not exist yet
both ran (delta-rs rebased the second overwrite of the empty lock table onto the first's version).

Deterministic: two acquirers' steps (open the table, read the row, check and put) in every order
they can interleave, from a new output, a released lock and a dead holder's lock. Stress: many
acquirers started at one moment on a new output, in threads, in processes, and on S3 (moto)."""

from __future__ import annotations

import itertools
import multiprocessing
import socket
import threading
import time
import uuid

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from pipeline.config import OutputConfig
from pipeline.ledger import LOCK_SCHEMA, LOCK_TABLE, Ledger, OutputLockedError, RunLock

RUNS = ("20260101T000000-aaaaaa", "20260102T000000-bbbbbb")


def _lock_rows(out: str) -> list[dict]:
    return DeltaTable(f"{out}/{LOCK_TABLE}").to_pyarrow_table().to_pylist()


def _seed(out: str, start: str) -> None:
    """The lock as a new output ('new'), released by a run, released by an older release (a row that
    says so), or left by a SIGKILLed driver on this host."""
    if start == "new":
        return
    led = Ledger(OutputConfig(uri=out))
    if start == "released":  # as a run leaves it: no row
        led.lock("20251231T000000-done00").release()
        assert _lock_rows(out) == []
        return
    holder = f"{socket.gethostname()}:{2**22 + 7}:12345"  # no such pid: its holder is gone
    row = {
        "run_id": "20251231T000000-dead00",
        "holder": holder,
        "heartbeat": time.time(),
        "released": start == "released row",
    }
    write_deltalake(led.ensure(LOCK_TABLE), pa.Table.from_pylist([row], schema=LOCK_SCHEMA), mode="overwrite")


class _Acquirer:
    """`RunLock.acquire`'s one attempt, cut at each storage operation so a test can order them."""

    def __init__(self, out: str, run_id: str):
        self.lock = RunLock(Ledger(OutputConfig(uri=out)), run_id)
        self.dt = self.row = None
        self.outcome = ""

    def step(self, n: int) -> None:
        if n == 0:
            self.dt = self.lock._open()
        elif n == 1:
            self.row = self.lock._read(self.dt)
        else:
            try:
                self.lock._check(self.row)
            except OutputLockedError:
                self.outcome = "refused"
                return
            try:
                self.lock._put(self.dt, released=False)
                self.outcome = "took"
            except CommitFailedError:
                self.outcome = "lost"


def _schedules():
    """Every interleaving of two acquirers' three steps: which acquirer moves at each of six turns."""
    for turns in itertools.combinations(range(6), 3):
        yield [0 if t in turns else 1 for t in range(6)]


@pytest.mark.parametrize("start", ["new", "released", "released row", "dead holder"])
def test_two_acquirers_interleaved_at_every_step_one_wins(tmp_path, start):
    schedules = list(_schedules())
    assert len(schedules) == 20
    for k, schedule in enumerate(schedules):
        out = str(tmp_path / f"out{k}")
        _seed(out, start)
        acq = [_Acquirer(out, RUNS[0]), _Acquirer(out, RUNS[1])]
        steps = [0, 0]
        for who in schedule:
            acq[who].step(steps[who])
            steps[who] += 1
        outcomes = sorted(a.outcome for a in acq)
        assert outcomes in (["lost", "took"], ["refused", "took"]), (schedule, outcomes)
        winner, loser = (acq[0], acq[1]) if acq[0].outcome == "took" else (acq[1], acq[0])
        # the loser's next attempt (what `acquire` retries) reads the winner's row and is refused
        with pytest.raises(OutputLockedError, match=f"in use by run {winner.lock.run_id}"):
            loser.lock.acquire()
        rows = _lock_rows(out)
        assert [r["run_id"] for r in rows] == [winner.lock.run_id] and not rows[0]["released"], schedule


def _race(out: str, n: int) -> tuple[list[str], list[str]]:
    """`n` threads call `Ledger.lock` at one moment; (winning run ids, unexpected errors)."""
    barrier = threading.Barrier(n)
    won, errors = [], []

    def go(i: int) -> None:
        barrier.wait()
        try:
            Ledger(OutputConfig(uri=out)).lock(f"20260101T000000-{i:06d}", heartbeat_s=3600)
            won.append(f"20260101T000000-{i:06d}")
        except OutputLockedError:
            pass
        except Exception as exc:  # noqa: BLE001 - counted: the test fails on any
            errors.append(repr(exc))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, errors


def test_fifty_concurrent_starts_on_a_new_output_one_wins(tmp_path):
    for k in range(3):
        out = str(tmp_path / f"out{k}" / "not" / "yet")
        won, errors = _race(out, 50)
        assert not errors, errors[:3]
        assert len(won) == 1, won
        assert [r["run_id"] for r in _lock_rows(out)] == won


def _start(out: str, run_id: str, ready, done, results) -> None:
    ready.wait()  # every process has imported deltalake: they start at one moment
    try:
        Ledger(OutputConfig(uri=out)).lock(run_id, heartbeat_s=3600)
        results.put((run_id, "took"))
    except OutputLockedError:
        results.put((run_id, "refused"))
    except Exception as exc:  # noqa: BLE001
        results.put((run_id, repr(exc)))
    done.wait()  # the winner holds the lock (a running job) until every other has tried


def test_concurrent_processes_on_a_new_output_one_wins(tmp_path):
    """Separate processes (separate delta-rs runtimes), as two `scriptorium run` are."""
    ctx = multiprocessing.get_context("spawn")
    n = 4
    results, ready, done = ctx.Queue(), ctx.Barrier(n), ctx.Barrier(n)
    out = str(tmp_path / "out")
    procs = [
        ctx.Process(target=_start, args=(out, f"20260101T000000-p{i:05d}", ready, done, results)) for i in range(n)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(o for _, o in got) == ["refused"] * (n - 1) + ["took"], got
    assert [r["run_id"] for r in _lock_rows(out)] == [r for r, o in got if o == "took"]


def test_concurrent_starts_on_a_new_s3_output_one_wins(s3_endpoint):
    """On S3 the first version and each next one are conditional PUTs (If-None-Match)."""
    import s3fs

    from pipeline.ledger import storage_options

    bucket = f"lock-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}).mkdir(bucket)
    for k in range(1):
        cfg = OutputConfig(uri=f"s3://{bucket}/out{k}", storage={"endpoint_url": s3_endpoint})
        barrier = threading.Barrier(20)
        won, errors = [], []

        def go(i: int, cfg=cfg, barrier=barrier, won=won, errors=errors) -> None:
            barrier.wait()
            try:
                Ledger(cfg).lock(f"20260101T000000-s{i:05d}", heartbeat_s=3600)
                won.append(f"20260101T000000-s{i:05d}")
            except OutputLockedError:
                pass
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))

        threads = [threading.Thread(target=go, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert len(won) == 1, won
        dt = DeltaTable(f"{cfg.uri}/{LOCK_TABLE}", storage_options=storage_options(cfg))
        assert [r["run_id"] for r in dt.to_pyarrow_table().to_pylist()] == won
