"""Faults with a real network (issue 32, item 9): a store that stops answering for 20 s mid-run (a
brownout). Afterwards every recording is in the output exactly once (`assert_exactly_once` of
tests/test_runner_resume.py) and the run's exit code says what happened.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.records import recording_id_for
from tests.helpers import LOCAL_CONF, REPO
from tests.helpers.faults import S3Faults, kill_tree, wait_for
from tests.test_runner_resume import (
    BASE,
    CLIPS,
    SLOW_ASR,
    SMALL_BATCHES,
    _short_tmp,
    assert_exactly_once,
    make_input,
    run_inproc,
    seg_keys,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def corpus_in(tmp_path_factory) -> Path:
    return make_input(tmp_path_factory.mktemp("in"))


@pytest.fixture(scope="module")
def clean(corpus_in, tmp_path_factory) -> set:
    """A clean, uninterrupted local run: the reference set of (recording_id, segment_index)."""
    report = run_inproc(corpus_in, out := tmp_path_factory.mktemp("clean"))
    assert report.processed == len(CLIPS) and report.error == 0, report.summary()
    return set(seg_keys(str(out)))


# -- a brownout of the store ----------------------------------------------------------------------
BROWNOUT_S = 20


@pytest.mark.s3
def test_store_brownout_20s(tmp_path, corpus_in, clean):
    """Input and output on S3 (moto) behind a proxy that, after the first commit, accepts connections
    and answers nothing for 20 s, then hangs up on what it held and serves again. The run's exit code
    says what happened: 0 with everything committed, or 3 with the failed files as error rows that a
    rerun completes; either way every recording ends up exactly once."""
    import s3fs

    from pipeline.config import OutputConfig
    from pipeline.ledger import Ledger

    n = len(CLIPS)
    with S3Faults(fail_rate=0.0) as s3:
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3.direct})
        fs.mkdir("audio")
        for c in CLIPS:
            fs.put_file(str(corpus_in / c), f"audio/in/{c}")
        ep = [f"input.storage.endpoint_url={s3.endpoint}", f"output.storage.endpoint_url={s3.endpoint}"]
        env = dict(os.environ, RAY_TMPDIR=_short_tmp(tmp_path, "brown"), RAY_AUTH_MODE="disabled")
        cmd = [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            str(LOCAL_CONF),
            "input.uri=s3://audio/in/",
            "output.uri=s3://audio/out",
            *BASE,
            *SMALL_BATCHES,
            *SLOW_ASR,
            *ep,
        ]
        log = tmp_path / "run.log"
        storage = {"endpoint_url": s3.direct}
        ledger = Ledger(OutputConfig(uri="s3://audio/out", storage=storage))

        def committed() -> int:
            try:
                return len(ledger.entries())
            except Exception:  # the table does not exist yet
                return 0

        def first_commit() -> bool:
            try:
                log = fs.ls("audio/out/recordings/_delta_log", refresh=True)
                return sum(p.endswith(".json") for p in log) >= 2  # version 0 creates the table
            except FileNotFoundError:
                return False

        started = time.time()
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            # the first commit of `recordings`, seen at once: a LIST against moto itself every 0.1 s
            # (polling the ledger through delta-rs takes too long: the run can be done by then)
            wait_for(first_commit, 120, interval=0.1, what="first commit")
            at = round(time.time() - started, 1)
            s3.start_stall()
            c = committed()  # read from moto itself while the run's requests are held
            time.sleep(max(0.0, BROWNOUT_S - (time.time() - started - at)))
            s3.stop_stall()
            held = s3.proxy.stalled_requests
            running_after = proc.poll() is None  # the brownout was mid-run: the run outlived it
            rc = proc.wait(timeout=150)
        finally:
            kill_tree(proc.pid)
        text = log.read_text()
        took = round(time.time() - started, 1)
        print(f"brownout at {at} s after {c} commits: {held} requests held; exit {rc} after {took} s")
        assert held >= 1, "the run sent nothing to the store during the brownout (it was over before it?)"
        assert 1 <= c < n, f"{c} of {n} recordings committed when the brownout began"
        assert running_after, "the run had ended before the brownout did"
        assert rc in (0, 3), f"exit {rc}:\n{text[-5000:]}"
        if rc == 3:  # failed files are error rows; the rerun completes them
            assert "error" in text
            r2 = subprocess.run(
                cmd,
                cwd=REPO,
                env=dict(env, RAY_TMPDIR=_short_tmp(tmp_path, "brown2")),
                capture_output=True,
                text=True,
                timeout=200,
            )
            assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-3000:]
        assert committed() == n
        by_name = {recording_id_for(str(corpus_in / c)): c for c in CLIPS}
        s3_id = {c: recording_id_for(f"s3://audio/in/{c}") for c in CLIPS}
        expected = {(s3_id[by_name[r]], i) for r, i in clean}
        assert_exactly_once("s3://audio/out", expected, storage=storage)
