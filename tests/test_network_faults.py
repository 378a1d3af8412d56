"""Faults with a real network (issue 32, item 9): a Ray worker node in a network namespace of its own,
joined to the head by a veth pair and partitioned for 60 s mid-run; a store that stops answering for
20 s (a brownout). After each, every recording is in the output exactly once (`assert_exactly_once`
of tests/test_runner_resume.py) and the run's exit code says what happened.

There is no netem and no iptables here: the partition takes the veth link down, then up. The private
/30 (10.213.7.0/30) exists only on the two veth ends, so no packet leaves this machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline.records import recording_id_for
from tests.helpers import CORPUS, REPO
from tests.helpers.cli import run_argv
from tests.helpers.faults import S3Faults, cmdline, free_port, kill_tree, wait_for
from tests.test_runner_resume import (
    BASE,
    CLIPS,
    SLOW_ASR,
    SMALL_BATCHES,
    _short_tmp,
    assert_exactly_once,
    committed_count,
    make_input,
    run_inproc,
    seg_keys,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).with_name("ray"))
HEAD_IP, WORKER_IP = "10.213.7.1", "10.213.7.2"
PARTITION_S = 60


@pytest.fixture(scope="module")
def corpus_in(tmp_path_factory) -> Path:
    return make_input(tmp_path_factory.mktemp("in"))


@pytest.fixture(scope="module")
def clean(corpus_in, tmp_path_factory) -> set:
    """A clean, uninterrupted local run: the reference set of (recording_id, segment_index)."""
    report = run_inproc(corpus_in, out := tmp_path_factory.mktemp("clean"))
    assert report.processed == len(CLIPS) and report.error == 0, report.summary()
    return set(seg_keys(str(out)))


#: The partition test's input: the clips three times over (18 recordings), so that on an idle machine the
#: run is still going when the first commit is seen (six clips were all committed within 7 s).
COPIES = 3


@pytest.fixture(scope="module")
def big_in(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("big")
    for k in range(COPIES):
        for c in CLIPS:
            shutil.copyfile(CORPUS / "speech" / c, folder / f"{k}_{c}")
    return folder


@pytest.fixture(scope="module")
def big_clean(big_in, tmp_path_factory) -> set:
    report = run_inproc(big_in, out := tmp_path_factory.mktemp("bigclean"))
    assert report.processed == len(CLIPS) * COPIES and report.error == 0, report.summary()
    return set(seg_keys(str(out)))


def _ip(*args: str, ns: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def _netns_ok() -> str | None:
    """Why the namespace test cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (ip netns add / ip link add)"
    if not shutil.which("ip"):
        return "no `ip` (iproute2)"
    probe = f"scr-probe-{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "`ip netns add` is not available (no CAP_SYS_ADMIN or no netns support)"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


class Veth:
    """A network namespace joined to this one by a veth pair: HEAD_IP here, WORKER_IP there."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.ns, self.a, self.b = f"scr-{tag}", f"vsa{tag}", f"vsb{tag}"

    def __enter__(self) -> "Veth":
        steps = [
            ["netns", "add", self.ns],
            ["link", "add", self.a, "type", "veth", "peer", "name", self.b],
            ["link", "set", self.b, "netns", self.ns],
            ["addr", "add", f"{HEAD_IP}/30", "dev", self.a],
            ["link", "set", self.a, "up"],
        ]
        for s in steps:
            r = _ip(*s)
            if r.returncode != 0:
                self.__exit__()
                raise RuntimeError(f"ip {' '.join(s)}: {r.stderr.strip()}")
        for s in (
            ["addr", "add", f"{WORKER_IP}/30", "dev", self.b],
            ["link", "set", self.b, "up"],
            ["link", "set", "lo", "up"],
        ):
            r = _ip(*s, ns=self.ns)
            if r.returncode != 0:
                self.__exit__()
                raise RuntimeError(f"ip -n {self.ns} {' '.join(s)}: {r.stderr.strip()}")
        wait_for(
            lambda: (
                subprocess.run(["ping", "-c1", "-W1", WORKER_IP], capture_output=True).returncode == 0
                if shutil.which("ping")
                else True
            ),
            10,
            what="the veth link",
        )
        return self

    def set_link(self, up: bool) -> None:
        r = _ip("link", "set", self.a, "up" if up else "down")
        assert r.returncode == 0, r.stderr

    def pids(self) -> list[int]:
        r = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
        return [int(p) for p in r.stdout.split()]

    def __exit__(self, *exc) -> None:
        for p in self.pids():  # anything still running in the namespace (only what this test started)
            try:
                os.kill(p, 9)
            except ProcessLookupError:
                pass
        _ip("link", "delete", self.a)  # deletes its peer too
        subprocess.run(["ip", "netns", "delete", self.ns], capture_output=True)


def _ray_start(args: list[str], log: Path, env: dict, ns: str | None = None) -> subprocess.Popen:
    cmd = [RAY, "start", "--block", "--disable-usage-stats", *args]
    if ns:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def test_worker_node_partitioned_60s(tmp_path, big_in, big_clean):
    """The worker node (its own namespace, 2 CPUs) loses the head for 60 s after the first commit,
    while it runs part of the job: the run ends, exit code and output agree, every recording once."""
    why = _netns_ok()
    if why:
        pytest.skip(why)
    out, n = tmp_path / "out", len(CLIPS) * COPIES
    tmp = _short_tmp(tmp_path, "netns")
    env = dict(os.environ, RAY_TMPDIR=tmp, RAY_AUTH_MODE="disabled")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    port = free_port()
    procs: list[subprocess.Popen] = []
    info: dict = {}
    with Veth() as net:
        try:
            head_ports = [
                f"--port={port}",
                f"--ray-client-server-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                f"--node-manager-port={free_port()}",
                f"--object-manager-port={free_port()}",
            ]
            common = ["--num-cpus=2", f"--temp-dir={tmp}"]
            head = _ray_start(
                ["--head", f"--node-ip-address={HEAD_IP}", "--include-dashboard=false", *common, *head_ports],
                tmp_path / "head.log",
                env,
            )
            procs.append(head)
            time.sleep(3)
            worker = _ray_start(
                [f"--address={HEAD_IP}:{port}", f"--node-ip-address={WORKER_IP}", *common],
                tmp_path / "worker.log",
                env,
                ns=net.ns,
            )
            procs.append(worker)
            status = [RAY, "status", f"--address={HEAD_IP}:{port}"]

            def two_nodes() -> bool:
                r = subprocess.run(status, capture_output=True, text=True, env=env, timeout=30)
                return r.stdout.count("node_") >= 2

            wait_for(two_nodes, 60, interval=1, what="two live nodes")
            started = time.time()
            run_log = tmp_path / "run.log"
            cmd = run_argv(big_in, out, *BASE, *SMALL_BATCHES, *SLOW_ASR, f"ray.address={HEAD_IP}:{port}")
            run = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=open(run_log, "w"), stderr=subprocess.STDOUT, start_new_session=True
            )
            procs.append(run)

            def mid_run_on_worker():  # committed something, not everything, and the worker node is busy
                try:  # versions of the `recordings` log (0 creates it): a listdir, not a Delta read
                    c = sum(f.endswith(".json") for f in os.listdir(out / "recordings" / "_delta_log")) - 1
                except FileNotFoundError:
                    c = 0
                busy = [cmdline(p).strip() for p in net.pids() if cmdline(p).startswith("ray::")]
                job = [b for b in busy if b.startswith(("ray::Map", "ray::Write", "ray::Read"))]
                return (c, busy) if 1 <= c < n and job else None

            c, busy = wait_for(mid_run_on_worker, 100, interval=0.2, what="a commit while the worker node works")
            info.update(committed_at_partition=c, on_worker=busy, at=round(time.time() - started, 1))
            net.set_link(False)
            t_down = time.time()
            time.sleep(PARTITION_S)
            net.set_link(True)
            info["partition_s"] = round(time.time() - t_down, 1)
            rc = run.wait(timeout=150)
            info["run_s"] = round(time.time() - started, 1)
            text = run_log.read_text()
            # the GCS declared the silent worker node dead (its health checks fail after ~30 s); when the
            # link came back, its raylet learned so and exited: the job finished on the head alone
            info["worker_node_exited"] = worker.poll() is not None
        finally:
            for p in reversed(procs):
                kill_tree(p.pid)
    print(f"partition: rc {rc}", info)
    assert rc in (0, 3), f"exit {rc}:\n{text[-5000:]}"
    assert info["worker_node_exited"], f"the worker node outlived a {PARTITION_S} s partition: {info}"
    if rc == 3:  # some files failed during the partition: error rows that a rerun completes
        r2 = subprocess.run(
            run_argv(big_in, out, *BASE, *SMALL_BATCHES),
            cwd=REPO,
            env=dict(env, RAY_TMPDIR=_short_tmp(tmp_path, "rerun")),
            capture_output=True,
            text=True,
            timeout=200,
        )
        assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-3000:]
    assert committed_count(out) == n
    assert_exactly_once(out, big_clean)


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
        fs.mkdir("brownout")  # a bucket of its own: moto keeps buckets for the whole process
        for c in CLIPS:
            fs.put_file(str(corpus_in / c), f"brownout/in/{c}")
        ep = [f"input.storage.endpoint_url={s3.endpoint}", f"output.storage.endpoint_url={s3.endpoint}"]
        env = dict(os.environ, RAY_TMPDIR=_short_tmp(tmp_path, "brown"), RAY_AUTH_MODE="disabled")
        cmd = run_argv("s3://brownout/in/", "s3://brownout/out", *BASE, *SMALL_BATCHES, *SLOW_ASR, *ep)
        log = tmp_path / "run.log"
        storage = {"endpoint_url": s3.direct}
        ledger = Ledger(OutputConfig(uri="s3://brownout/out", storage=storage))

        def committed() -> int:
            try:
                return len(ledger.entries())
            except Exception:  # the table does not exist yet
                return 0

        def first_commit() -> bool:
            try:
                log = fs.ls("brownout/out/recordings/_delta_log", refresh=True)
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
        s3_id = {c: recording_id_for(f"s3://brownout/in/{c}") for c in CLIPS}
        expected = {(s3_id[by_name[r]], i) for r, i in clean}
        assert_exactly_once("s3://brownout/out", expected, storage=storage)
