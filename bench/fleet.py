"""What a GPU fleet would need from the CPU side and the commit path (issue 29), on this machine:
the whole pipeline on the simulated accelerator (pipeline/backends/simulated.py), reading and writing
the loopback S3 server (moto) through a proxy that gives it a real store's round-trip time
(bench/latency_proxy.py, 20 ms). One run prints one table, each part measured in that run:

  (a) marginal CPU per audio second: the whole process tree of a run (driver, GCS, raylet, every
      worker) in a cgroup v1 `cpuacct` group (falling back to /proc tree sums, sampled every 0.5 s),
      for a small and a large input; the difference over the difference in audio is the pipeline's
      own cost per audio second, without its fixed start-up. Short clips (`corpora.build_short_clips`,
      copied to reach --clips) and long files (bench/long_corpus.py, copied to reach --long-files),
      each with conf/local.yaml's pooling and the 8x preset's (conf/nemo-gpu-8x.yaml `pooling`). The
      accelerator runs at --a-rtfx (default 100,000: holds of ~0 s), so the runs are CPU-bound.
  (b) object-store requests (counted at the proxy, by method; LIST = a GET that lists) and Delta
      commits (log versions added to `segments` + `recordings`) per 1,000 recordings, from the same
      runs, at the margin (large minus small run).
  (c) sustained commits: recordings committed per second into the 20 ms store by --writers processes
      calling the sink's own code in a loop (`sustained_commits`; `stage_one_block` is the one
      call into the sink), blocks of --recordings-per-commit; every committed recording is then
      checked to be in `recordings` exactly once.
  (d) the accelerator's duty cycle: its busy share (the segment stage's holds summed, over the run's
      wall and over the span from its first call to its last; ASR only: LID is off, one language, as
      in issue 29's NeMo runs) over --d-clips short clips with the 8x preset's
      pooling, its RTFx = 155 x the CPUs Ray gets (--ray-cpus), the recording stage's models at
      --d-vad-factor x that; decode in tasks of its own as in the GPU presets (--d-decode actor: in
      the recording stage's actor, as local.yaml has it).

Every run uses conf/local.yaml (its resources on --ray-cpus CPUs, decode inside the recording
stage's actor except in (d), two windows at once in the segment actor) with the simulated backends
for VAD, LID and ASR, and the 8x preset's ASR calls (`segment_stage.batching.max_padded_s=3600`,
`max_items=192`): a GPU's call sizes, not Whisper's. Inputs are under s3://fleet/, each output in a
bucket of its own. The store's side (moto, the proxy) runs in this process, outside the cgroup: its
CPU is in the JSON (`store_process_cpu_seconds`), and it shares this machine's cores with the run.

    .venv/bin/python bench/fleet.py                                   # everything (~15-25 min here)
    .venv/bin/python bench/fleet.py --parts c --commit-seconds 20     # one part
    .venv/bin/python bench/fleet.py --clips 40 --small-clips 20 --long-files 2 --long-small 1 \\
        --long-min-s 60 --long-max-s 90 --d-clips 40 --commit-seconds 5 --writers 2   # smoke size

Runs as root for the cgroup (else the /proc fallback, printed in the table's header).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # bench.long_corpus imports bench.corpora

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "fleet"
CGROUP_ROOT = Path("/sys/fs/cgroup/cpuacct")
#: conf/local.yaml's pooling and conf/nemo-gpu-8x.yaml's (read from the presets in `poolings`)
POOLINGS = ("local", "8x")
SIMULATED = [
    "recording_stage.vad.backend=simulated",
    "segment_stage.lid.backend=simulated",
    "segment_stage.asr.backend=simulated",
    # the 8x preset's ASR calls: a GPU takes big ones (local.yaml's 2 x 30 s are Whisper-on-CPU sizes)
    "segment_stage.batching.max_padded_s=3600",
    "segment_stage.batching.max_items=192",
]
TARGETS = {"short": 600, "long": 1500}  # audio s per CPU s (issue 29)


# ----------------------------------------------------------------------------------------------
# (c) sustained commits


def stage_one_block(output, table, fingerprint: str, run_id: str):
    """What a Ray write task does with one block of transcribed recordings (`TranscriptSink.write`):
    flatten it and stage its two Parquet files. The one place part (c) calls the sink's write side."""
    from pipeline.execution.sink import stage_block
    from pipeline.ledger import Ledger

    return stage_block(Ledger(output), table, run_id, fingerprint)


def _block_rows(writer: int, block: int, n: int) -> list[dict]:
    """n transcribed recordings as the segment stage hands them to the sink: one 8.7 s segment of
    9 words each (the simulated ASR's words)."""
    from pipeline.backends.simulated import simulated_result
    from pipeline.records import Segment
    from pipeline.stages.quality import text_signals

    res = simulated_result(8.7, "en")
    seg = Segment(
        segment_index=0,
        start=0.0,
        end=8.7,
        speaker=None,
        language="en",
        language_prob=0.99,
        text=res.text,
        words=res.words,
        confidence=res.confidence,
        signals=text_signals(res.text, "en"),
    )
    row = seg.to_row()
    return [
        {
            "recording_id": f"w{writer:02d}b{block:06d}r{i:04d}",
            "uri": f"s3://{BUCKET}/in/w{writer}/b{block}/{i}.flac",
            "size": 150_000,
            "etag": uuid.uuid4().hex,
            "duration": 8.7,
            "status": "ok",
            "language": "en",
            "segments": [row],
            "punctuated": True,
            "num_speakers": 1,
            "speech_seconds": 8.7,
            "models": "simulated",
        }
        for i in range(n)
    ]


def _writer(k: int, output, n: int, seconds: float, barrier, staged) -> None:
    """One writer process: stage blocks of n recordings until `seconds` have passed, handing each to
    the committer (`staged`, a queue: the RunState actor's part in a run); None when done."""
    import pyarrow as pa

    import pipeline.execution.sink  # noqa: F401  (imported before the clock starts)
    from pipeline.records import TRANSCRIBED_SCHEMA

    rows = _block_rows(k, 0, n)  # the rows are made once: what is measured is the sink, not this bench
    barrier.wait()
    start, block = time.time(), 0
    while time.time() - start < seconds:
        for r in rows:
            r["recording_id"] = f"w{k:02d}b{block:06d}{r['recording_id'][-5:]}"
        table = pa.Table.from_pylist(rows, schema=TRANSCRIBED_SCHEMA)
        try:
            staged.put(stage_one_block(output, table, "fleet", f"fleet-w{k}"))
        except Exception as exc:  # noqa: BLE001 - counted, and checked against the table below
            staged.put(f"{type(exc).__name__}: {str(exc)[:200]}")
        block += 1
    staged.put(None)


def _committer(output, writers: int, barrier, staged, results) -> None:
    """The committer process (a run's driver does this): take staged blocks until every writer is
    done, committing a group whenever one is due (`GroupCommitter`), then the rest. A process of its
    own, as the driver is: the store's side (moto, the proxy) runs in the bench's process, and
    sharing its interpreter would slow both."""
    import queue

    from pipeline.execution.sink import GroupCommitter

    committer = GroupCommitter(output, state=None)
    barrier.wait()
    start = time.time()
    failed: list[str] = []
    blocks, running, group_s = [], writers, []

    def flush() -> None:
        t0 = time.time()
        committer.flush()
        group_s.append(time.time() - t0)

    while running:
        arrived = []  # everything in the queue now, as `GroupCommitter` takes the RunState actor's whole list
        try:
            arrived.append(staged.get(timeout=0.2))
            while True:
                arrived.append(staged.get_nowait())
        except queue.Empty:
            pass
        for got in arrived:
            if got is None:
                running -= 1
            elif isinstance(got, str):
                failed.append(got)
            else:
                blocks.append((got.write_id, got.recording_ids))
                committer.offer([got])
        if committer.due():
            flush()
    flush()
    results.put(
        {
            "start": start,
            "end": time.time(),
            "blocks": blocks,
            "failed": failed,
            "groups": committer.groups,
            "group_s": sorted(group_s),
        }
    )


def sustained_commits(
    writers: int,
    recordings_per_commit: int,
    seconds: float,
    endpoint: str,
    direct: str | None = None,
    commit_interval_s: float = 1.0,
) -> dict:
    """Recordings committed per second into a fresh output on the S3 `endpoint`: `writers`
    processes stage blocks of `recordings_per_commit` for `seconds` (what Ray write tasks do), and
    one committer process commits them as a run's driver does (`GroupCommitter`, a group every
    `commit_interval_s`); then every committed recording is checked to be in `recordings` exactly
    once (read through `direct`, an endpoint without the delay, when given). The rate counts from
    the first block staged to the last group committed."""
    import multiprocessing as mp

    from pipeline.config import OutputConfig, StorageOptions
    from pipeline.ledger import Ledger

    uri = fresh_bucket("commits", direct or endpoint)
    output = OutputConfig(uri=uri, storage=StorageOptions(endpoint_url=endpoint), commit_interval_s=commit_interval_s)
    led = Ledger(output)
    before = {name: led.ensure(name).version() for name in ("segments", "recordings")}
    ctx = mp.get_context("spawn")
    barrier, staged, results = ctx.Barrier(writers + 1), ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(k, output, recordings_per_commit, seconds, barrier, staged))
        for k in range(writers)
    ]
    procs.append(ctx.Process(target=_committer, args=(output, writers, barrier, staged, results)))
    for p in procs:
        p.start()
    got = results.get(timeout=seconds + 900)
    for p in procs:
        p.join(60)
    committed = [i for _, ids in got["blocks"] for i in ids]
    check = Ledger(OutputConfig(uri=uri, storage=StorageOptions(endpoint_url=direct or endpoint)))
    ids = check.read("recordings", ["recording_id"]).column("recording_id").to_pylist()
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    after = {name: check.table(name).version() for name in ("segments", "recordings")}
    elapsed = got["end"] - got["start"]
    group_s = got["group_s"]
    return {
        "writers": writers,
        "recordings_per_commit": recordings_per_commit,
        "seconds": round(elapsed, 2),
        "recordings_committed": len(committed),
        "blocks_committed": len(got["blocks"]),
        "groups": got["groups"],
        "failed_commits": len(got["failed"]),
        "failures": got["failed"][:5],
        "recordings_per_s": round(len(committed) / elapsed, 2) if elapsed else 0.0,
        "commit_pairs_per_s": round(got["groups"] / elapsed, 3) if elapsed else 0.0,
        "group_seconds_p50": round(group_s[len(group_s) // 2], 3) if group_s else None,
        "group_seconds_p95": round(group_s[int(len(group_s) * 0.95)], 3) if group_s else None,
        "delta_versions_added": sum(after[n] - before[n] for n in after),
        "missing": sum(1 for i in committed if counts.get(i, 0) == 0),
        "duplicated": sum(1 for c in counts.values() if c > 1),
        "exactly_once": all(counts.get(i, 0) == 1 for i in committed) and all(c == 1 for c in counts.values()),
    }


# ----------------------------------------------------------------------------------------------
# a pipeline run in a fresh interpreter, in a cgroup of its own


def _child(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--result", required=True)
    p.add_argument("--override", action="append", default=[])
    args = p.parse_args(argv)
    from pipeline.config import load_config
    from pipeline.execution import init_ray
    from pipeline.runner import run

    cfg = load_config(REPO / "conf" / "local.yaml", args.override)
    t0 = time.time()
    init_ray(cfg.ray)
    ray_s = time.time() - t0
    report = run(cfg)
    end = time.time()
    import ray

    ray.shutdown()
    Path(args.result).write_text(
        json.dumps(
            {
                "start": t0,
                "end": end,
                "wall_seconds": round(end - t0, 3),
                "ray_init_seconds": round(ray_s, 3),
                "report": {**report.model_dump(exclude={"errors", "warnings"}), "processed": report.processed},
                "errors": report.errors[:3],
            }
        )
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown (see bench/rows.py child_main)


class CpuGroup:
    """A cgroup v1 `cpuacct` group that a command joins before it starts: CPU of its whole tree."""

    def __init__(self, name: str):
        self.path = CGROUP_ROOT / name

    @staticmethod
    def available() -> bool:
        try:
            probe = CGROUP_ROOT / f"fleet-probe-{os.getpid()}"
            probe.mkdir()
            probe.rmdir()
            return True
        except OSError:
            return False

    def __enter__(self) -> "CpuGroup":
        self.path.mkdir()
        (self.path / "cpuacct.usage").write_text("0")
        return self

    def wrap(self, cmd: list[str]) -> list[str]:
        return ["sh", "-c", f'echo $$ > {self.path / "cgroup.procs"} && exec "$@"', "sh", *cmd]

    def seconds(self) -> float:
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def pids(self) -> list[int]:
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def __exit__(self, *exc) -> None:
        """Wait for the tree's last processes (Ray's, after shutdown); stop any left after 30 s
        (they are this run's: nothing else is in the group), then remove the group."""
        import signal

        deadline = time.time() + 30
        while time.time() < deadline and (self.path / "cgroup.procs").read_text().split():
            time.sleep(0.5)
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.5)
        try:
            self.path.rmdir()
        except OSError:
            pass


def run_light(cmd: list[str], log_path: Path, env: dict, group: CpuGroup | None, interval_s: float = 1.0) -> dict:
    """Run `cmd` to its end, reading its processes' CPU seconds (`/proc/<pid>/stat`) every
    `interval_s`: from the cgroup's list when there is one, else from the process tree. Not
    `sampling.run_sampled`: its PSS reads (smaps_rollup of every process) cost 0.14 CPU s per sample
    of a run's ~30 processes, ~17% of a core of this 2-core machine beside the run."""
    import sampling

    cpu: dict[int, float] = {}
    load = [os.getloadavg()[0]]
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        while proc.poll() is None:
            pids = group.pids() if group is not None else sampling._tree(proc.pid)
            for pid in pids:
                cpu[pid] = max(cpu.get(pid, 0.0), sampling._cpu_s(pid))
                label = sampling._name(pid)  # Ray retitles a worker when it becomes an actor: keep the most specific
                if pid not in sampling._NAMES or (label.startswith("ray::") and label != "ray::IDLE"):
                    sampling._NAMES[pid] = label
            load.append(os.getloadavg()[0])
            time.sleep(interval_s)
    return {
        "returncode": proc.returncode,
        "elapsed_s": time.perf_counter() - t0,
        "cpu_proc": sum(cpu.values()),
        "by_process": sampling._by_label(cpu),
        "load1_max": max(load),
    }


def run_pipeline(
    name: str, overrides: list[str], work: Path, proxy, direct: str, use_cgroup: bool, timeline: Path | None = None
) -> dict:
    """One pipeline run in a fresh interpreter: wall, CPU (cgroup and /proc), requests at the proxy
    during the run, Delta versions of its output."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result = logs / f"{name}.json"
    result.unlink(missing_ok=True)
    ray_tmp = Path(tempfile.mkdtemp(prefix="sfl", dir="/tmp"))  # short: Ray's socket paths are length-limited
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_TMPDIR=str(ray_tmp), RAY_AUTH_MODE="disabled", **CREDS)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if timeline is not None:
        from pipeline.backends.simulated import TIMELINE_ENV

        timeline.unlink(missing_ok=True)
        env[TIMELINE_ENV] = str(timeline)
    cmd = [sys.executable, str(Path(__file__).resolve()), "_child", "--result", str(result)]
    for o in overrides:
        cmd += ["--override", o]
    before = dict(proxy.requests)
    proxy_cpu, own_cpu = proxy.cpu_seconds(), time.process_time()  # the store's side: moto, the proxy
    group = CpuGroup(f"scriptorium-fleet-{os.getpid()}-{name}") if use_cgroup else None
    print(f"  {name} ...", end="", flush=True)
    try:
        if group is not None:
            with group:
                sampled = run_light(group.wrap(cmd), logs / f"{name}.log", env, group)
                cgroup_cpu = group.seconds()
        else:
            sampled = run_light(cmd, logs / f"{name}.log", env, None)
            cgroup_cpu = None
    finally:
        for f in ray_tmp.glob("ray/session_latest/logs/ray-data/ray-data.log"):
            shutil.copyfile(f, logs / f"{name}-ray-data.log")  # per-operator stats, for diagnosis
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if sampled["returncode"] != 0 or not result.exists():
        tail = (logs / f"{name}.log").read_text()[-3000:]
        raise RuntimeError(f"{name} failed (exit {sampled['returncode']}); log {logs / name}.log:\n{tail}")
    res = json.loads(result.read_text())
    requests = {k: v - before.get(k, 0) for k, v in proxy.requests.items() if v - before.get(k, 0)}
    out_uri = next(o.split("=", 1)[1] for o in overrides if o.startswith("output.uri="))
    res.update(
        name=name,
        requests=requests,
        requests_total=sum(requests.values()),
        proxy_cpu_seconds=round(proxy.cpu_seconds() - proxy_cpu, 2),
        store_process_cpu_seconds=round(time.process_time() - own_cpu, 2),
        delta_versions=_versions(out_uri, direct),
        cpu_seconds_cgroup=cgroup_cpu,
        cpu_seconds_proc=round(sampled["cpu_proc"], 2),
        load1_max=sampled["load1_max"],
        cpu_seconds_by_process=sampled["by_process"],
    )
    res["cpu_seconds"] = cgroup_cpu if cgroup_cpu is not None else res["cpu_seconds_proc"]
    rep = res["report"]
    print(
        f" {rep['processed']} files, {rep['audio_seconds']:.0f} s audio, {res['wall_seconds']:.1f} s wall, "
        f"{res['cpu_seconds']:.1f} CPU s, {res['requests_total']} requests, {sum(res['delta_versions'].values())} "
        f"Delta versions",
        flush=True,
    )
    return res


def _versions(out_uri: str, direct: str) -> dict[str, int]:
    """Delta log versions of the output's two tables (version 0 is the table's creation)."""
    from deltalake import DeltaTable

    opts = {"AWS_ENDPOINT_URL": direct, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1", **CREDS}
    return {t: DeltaTable(f"{out_uri}/{t}", storage_options=opts).version() + 1 for t in ("segments", "recordings")}


# ----------------------------------------------------------------------------------------------
# corpora in the store


def poolings() -> dict[str, list[str]]:
    """The pooling overrides of conf/local.yaml and conf/nemo-gpu-8x.yaml, read from the presets."""
    import yaml

    out = {}
    for label, preset in (("local", "local.yaml"), ("8x", "nemo-gpu-8x.yaml")):
        pool = yaml.safe_load((REPO / "conf" / preset).read_text())["pooling"]
        out[label] = [f"pooling.{k}={v}" for k, v in sorted(pool.items())]
    return out


def fresh_bucket(name: str, direct: str) -> str:
    """s3:// URI of a new, empty bucket for one output. Not a prefix of a shared bucket: moto scans
    every key of a bucket to list a prefix, so a Delta log beside the corpus would list slower with
    every clip uploaded (a real store's listing does not)."""
    import s3fs

    bucket = f"{BUCKET}-{name}-{uuid.uuid4().hex[:6]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": direct}).mkdir(bucket)
    return f"s3://{bucket}"


def upload(files: list[Path], prefix: str, copies: int, start_copy: int = 0) -> tuple[int, float]:
    """Put `copies` copies of `files` under s3://fleet/<prefix>/ straight into the in-process moto
    backend (uploading over HTTP is not what is measured). Returns (objects, audio seconds)."""
    import soundfile as sf
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    n, seconds = 0, 0.0
    for f in files:
        body = f.read_bytes()
        dur = sf.info(str(f)).duration
        for k in range(start_copy, start_copy + copies):
            backend.put_object(BUCKET, f"{prefix}/x{k}_{f.name}", body, disable_notification=True)
            n, seconds = n + 1, seconds + dur
    return n, seconds


def short_files(args) -> list[Path]:
    import corpora

    base = min(args.small_clips, args.clips)
    info = corpora.build_short_clips(args.corpus, args.cache / f"short-{base}", base)
    return sorted(Path(info.path).glob("*.flac"))


def long_files(args) -> list[Path]:
    from bench import long_corpus

    dest = args.cache / f"fleet-long-{args.long_distinct}-{args.long_min_s:g}-{args.long_max_s:g}"
    marker = dest / "built.json"
    if not marker.exists():
        shutil.rmtree(dest, ignore_errors=True)
        long_corpus.build(dest, args.long_distinct, args.long_min_s, args.long_max_s, corpus=args.corpus)
        marker.write_text("{}")
    return sorted((dest / "audio").glob("*.flac"))


def put_set(files: list[Path], prefix: str, n: int, first_copy: int = 0) -> tuple[int, float]:
    """n objects under prefix: whole copies of `files`, the last one partial."""
    objects, seconds, k = 0, 0.0, first_copy
    while objects < n:
        take = files[: min(len(files), n - objects)]
        o, s = upload(take, prefix, 1, k)
        objects, seconds, k = objects + o, seconds + s, k + 1
    return objects, seconds


# ----------------------------------------------------------------------------------------------
# the parts


def part_a(args, proxy, direct, use_cgroup, work) -> list[dict]:
    """(a) and (b): small and large runs of short clips and long files, each pooling."""
    rtfx = [f"segment_stage.simulated_rtfx={args.a_rtfx:g}", f"recording_stage.simulated_rtfx={args.a_rtfx:g}"]
    pools = poolings()
    runs = []
    sets = {}
    if "short" in args.corpora:
        clips = short_files(args)
        small = min(args.small_clips, args.clips)
        sets["short"] = [("small", "short/a", small), ("large", "short", args.clips)]
        put_set(clips, "short/a", small)
        if args.clips > small:
            put_set(clips, "short/b", args.clips - small, first_copy=1000)
    if "long" in args.corpora:
        longs = long_files(args)
        small = min(args.long_small, args.long_files)
        sets["long"] = [("small", "long/a", small), ("large", "long", args.long_files)]
        put_set(longs, "long/a", small)
        if args.long_files > small:
            put_set(longs, "long/b", args.long_files - small, first_copy=1000)
    for corpus, sizes in sets.items():
        for pooling in args.poolings:
            for size, prefix, n in sizes:
                name = f"a-{corpus}-{pooling}-{size}"
                out = fresh_bucket(name, direct)
                ov = [
                    f"input.uri=s3://{BUCKET}/{prefix}/",
                    f"output.uri={out}",
                    f"input.storage.endpoint_url={proxy.endpoint}",
                    f"output.storage.endpoint_url={proxy.endpoint}",
                    f"ray.num_cpus={args.ray_cpus}",
                    *SIMULATED,
                    *rtfx,
                    *pools[pooling],
                    *args.override,
                ]
                res = run_pipeline(name, ov, work, proxy, direct, use_cgroup, work / "logs" / f"{name}.timeline")
                res.update(part="a", corpus=corpus, pooling=pooling, size=size, files=n)
                runs.append(res)
    return runs


def marginal(runs: list[dict]) -> dict:
    """Per (corpus, pooling): the large run minus the small one."""
    out = {}
    for corpus in ("short", "long"):
        for pooling in POOLINGS:
            pair = {r["size"]: r for r in runs if r["corpus"] == corpus and r["pooling"] == pooling}
            if set(pair) != {"small", "large"}:
                continue
            s, big = pair["small"], pair["large"]
            d_audio = big["report"]["audio_seconds"] - s["report"]["audio_seconds"]
            d_files = big["report"]["processed"] - s["report"]["processed"]
            d_cpu = big["cpu_seconds"] - s["cpu_seconds"]
            d_req = {
                k: big["requests"].get(k, 0) - s["requests"].get(k, 0)
                for k in sorted(set(big["requests"]) | set(s["requests"]))
            }
            d_commits = sum(big["delta_versions"].values()) - sum(s["delta_versions"].values())
            per_k = 1000 / d_files if d_files else 0.0
            out[f"{corpus}/{pooling}"] = {
                "audio_seconds": round(d_audio, 1),
                "recordings": d_files,
                "cpu_seconds": round(d_cpu, 2),
                "audio_per_cpu_s": round(d_audio / d_cpu, 1) if d_cpu > 0 else None,
                "cpu_ms_per_recording": round(1000 * d_cpu / d_files, 2) if d_files else None,
                "requests_per_1k": round(sum(d_req.values()) * per_k, 1),
                "requests_per_1k_by_method": {k: round(v * per_k, 1) for k, v in d_req.items()},
                "commits_per_1k": round(d_commits * per_k, 2),
                "large": {
                    "files": big["report"]["processed"],
                    "audio_seconds": big["report"]["audio_seconds"],
                    "cpu_seconds": big["cpu_seconds"],
                    "wall_seconds": big["wall_seconds"],
                    "requests": big["requests_total"],
                    "delta_versions": sum(big["delta_versions"].values()),
                },
            }
    return out


def part_d(args, proxy, direct, use_cgroup, work) -> list[dict]:
    """(d): the accelerator's busy share at RTFx = 155 x Ray's CPUs over --d-clips short clips, with
    the 8x preset's pooling, once per decode layout of --d-decode: "tasks" (decode in tasks of its
    own, as the GPU presets do) and/or "actor" (inside the recording stage's actor, local.yaml's)."""
    rtfx = 155 * args.ray_cpus
    clips = short_files(args)
    # short/ holds (a)'s clips already when (a) ran: add what is missing under short/d/
    have = _count_objects("short/", direct)
    if have < args.d_clips:
        put_set(clips, "short/d", args.d_clips - have, first_copy=2000)
    prefix = "short/" if have <= args.d_clips else None
    if prefix is None:  # more clips than asked (a bigger --clips): a set of its own
        put_set(clips, "dset", args.d_clips, first_copy=3000)
        prefix = "dset/"
    out = []
    for decode in args.d_decode:
        name = f"d-short-8x-decode-{decode}"
        timeline = work / "logs" / f"{name}.timeline"
        ov = [
            f"input.uri=s3://{BUCKET}/{prefix}",
            f"output.uri={fresh_bucket(name, direct)}",
            f"input.storage.endpoint_url={proxy.endpoint}",
            f"output.storage.endpoint_url={proxy.endpoint}",
            f"ray.num_cpus={args.ray_cpus}",
            *SIMULATED,
            f"segment_stage.simulated_rtfx={rtfx:g}",
            f"recording_stage.simulated_rtfx={rtfx * args.d_vad_factor:g}",
            *poolings()["8x"],
            # LID off, one language (as issue 29's NeMo runs): at one RTFx for LID and ASR, the
            # simulated LID (192 clips padded to the longest) held the device longer than ASR did
            # (80 s against 57 s over 2,000 clips), which AmberNet beside Parakeet does not
            "segment_stage.lid.backend=none",
            "segment_stage.lid.language=en",
            f"decode.in_recording_stage={'true' if decode == 'actor' else 'false'}",
            "progress.log_interval_s=5",  # each stage's count every 5 s in the run's log: where it waited
        ]
        if decode == "tasks":  # several at once (local.yaml's pool_size 1 reads one file at a time in all)
            share = round(args.d_decode_cpus / args.d_decode_tasks, 4)
            ov += [f"decode.resources.pool_size={args.d_decode_tasks}", f"decode.resources.num_cpus={share:g}"]
        ov += args.override
        res = run_pipeline(name, ov, work, proxy, direct, use_cgroup, timeline)
        holds = [line.split() for line in timeline.read_text().splitlines()] if timeline.exists() else []
        # the segment stage's device: ASR, and LID when it runs (one lock: their holds never overlap)
        device = [(float(a), float(b)) for role, _pid, a, b, _p in holds if role in ("asr", "lid")]
        asr = [(float(a), float(b), float(p)) for role, _pid, a, b, p in holds if role == "asr"]
        busy = sum(b - a for a, b in device)
        span = (max(b for _, b in device) - min(a for a, _ in device)) if device else 0.0
        wall = res["wall_seconds"]
        res.update(
            part="d",
            decode=decode,
            rtfx=rtfx,
            asr_calls=len(asr),
            device_busy_seconds=round(busy, 2),
            asr_busy_seconds=round(sum(b - a for a, b, _ in asr), 2),
            asr_padded_seconds=round(sum(p for _, _, p in asr), 3),
            busy_share_of_wall=round(busy / wall, 3) if wall else None,
            busy_share_of_span=round(busy / span, 3) if span else None,
            span_seconds=round(span, 2),
            first_call_after_s=round(min(a for a, _ in device) - res["start"], 2) if device else None,
        )
        out.append(res)
    return out


def _count_objects(prefix: str, direct: str) -> int:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": direct})
    return len(fs.find(f"{BUCKET}/{prefix}"))


# ----------------------------------------------------------------------------------------------
# the table


def table(args, res: dict) -> str:
    cols = [f"{c}/{p}" for c in ("short", "long") for p in POOLINGS]
    heads = {
        "short/local": "short clips, local.yaml pooling",
        "short/8x": "short clips, 8x pooling",
        "long/local": "long files, local.yaml pooling",
        "long/8x": "long files, 8x pooling",
    }
    m = res.get("marginal", {})
    lines = [
        "| part | measured | " + " | ".join(heads[c] for c in cols) + " | target |",
        "|---|---|" + "---|" * len(cols) + "---|",
    ]

    def row(part: str, what: str, cells: dict, target: str) -> None:
        lines.append(f"| {part} | {what} | " + " | ".join(cells.get(c, "—") for c in cols) + f" | {target} |")

    if m:
        row(
            "a",
            "recordings / audio s (large minus small run)",
            {c: f"{v['recordings']:,} / {v['audio_seconds']:,.0f}" for c, v in m.items()},
            "",
        )
        row("a", "CPU s, whole process tree (marginal)", {c: f"{v['cpu_seconds']:.1f}" for c, v in m.items()}, "")
        row(
            "a",
            "**audio s per CPU s** (marginal)",
            {c: f"**{v['audio_per_cpu_s']:,.0f}**" if v["audio_per_cpu_s"] else "n/a" for c, v in m.items()},
            f">= {TARGETS['short']} short, >= {TARGETS['long']} long",
        )
        row(
            "a",
            "CPU ms per recording (marginal)",
            {c: f"{v['cpu_ms_per_recording']:.1f}" for c, v in m.items() if v["cpu_ms_per_recording"] is not None},
            "",
        )
        row(
            "b",
            "**object-store requests per 1,000 recordings**",
            {c: f"**{v['requests_per_1k']:,.0f}**" for c, v in m.items()},
            "",
        )
        row(
            "b",
            "... by method",
            {
                c: ", ".join(f"{k} {n:,.0f}" for k, n in v["requests_per_1k_by_method"].items() if n)
                for c, v in m.items()
            },
            "",
        )
        row(
            "b",
            "**Delta commits per 1,000 recordings**",
            {c: f"**{v['commits_per_1k']:.1f}**" for c, v in m.items()},
            "<= 1 (short clips)",
        )
    c = res.get("c")
    if c:
        cell = (
            f"**{c['recordings_per_s']:,.1f}** rec/s ({c['commit_pairs_per_s']:.2f} commit pairs/s; "
            f"{c['writers']} writers staging blocks of {c['recordings_per_commit']}, {c['seconds']:.0f} s; "
            f"{c['groups']} groups, a group commit p50 {c['group_seconds_p50']} s, p95 {c['group_seconds_p95']} s; "
            f"{c['failed_commits']} failed; "
            f"exactly once: {'yes' if c['exactly_once'] else 'NO'})"
        )
        row(
            "c",
            f"**recordings committed per second** into the {args.rtt_ms:g} ms store",
            {"short/local": cell},
            ">= 3,100",
        )
    for d in res.get("d") or []:
        cell = (
            f"**{d['busy_share_of_span']:.0%}** of first..last call ({d['span_seconds']:.0f} s), "
            f"{d['busy_share_of_wall']:.0%} of the run's {d['wall_seconds']:.0f} s; "
            f"{d['report']['processed']:,} clips, RTFx {d['rtfx']:g}, {d['asr_calls']} calls, "
            f"first after {d['first_call_after_s']} s"
        )
        row(
            "d",
            f"**accelerator busy share** (RTFx 155 x {args.ray_cpus} CPUs), decode in {d['decode']}",
            {"short/8x": cell},
            ">= 90%",
        )
    return "\n".join(lines)


def runs_table(runs: list[dict]) -> str:
    lines = [
        "| run | files | audio s | wall s | CPU s (cgroup) | CPU s (/proc) | requests | Delta versions | load max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        rep = r["report"]
        cg = f"{r['cpu_seconds_cgroup']:.1f}" if r.get("cpu_seconds_cgroup") is not None else "—"
        lines.append(
            f"| {r['name']} | {rep['processed']} ({rep['ok']} ok, {rep['error']} error) | "
            f"{rep['audio_seconds']:,.0f} | {r['wall_seconds']:.1f} | {cg} | {r['cpu_seconds_proc']:.1f} | "
            f"{r['requests_total']:,} | {sum(r['delta_versions'].values())} | {r['load1_max']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _child(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="a,b,c,d", help="a and b come from the same runs")
    p.add_argument("--corpora", default="short,long", help="(a)/(b): short, long or both")
    p.add_argument("--poolings", default=",".join(POOLINGS), help="(a)/(b): local (conf/local.yaml's), 8x or both")
    p.add_argument("--clips", type=int, default=1000, help="(a) short clips in the large run")
    p.add_argument("--small-clips", type=int, default=200, help="(a) short clips in the small run")
    p.add_argument("--long-files", type=int, default=12, help="(a) long files in the large run (copies)")
    p.add_argument("--long-small", type=int, default=4, help="(a) long files in the small run")
    p.add_argument("--long-distinct", type=int, default=4, help="distinct long files built, copied to the counts")
    p.add_argument("--long-min-s", type=float, default=300.0)
    p.add_argument("--long-max-s", type=float, default=1200.0)
    p.add_argument("--a-rtfx", type=float, default=100_000.0, help="(a) the simulated models' RTFx (CPU-bound runs)")
    p.add_argument("--d-clips", type=int, default=2000, help="(d) short clips")
    p.add_argument(
        "--d-decode",
        default="tasks",
        help="(d) where decode runs: tasks (the GPU presets' layout), actor (local.yaml's), or both: tasks,actor",
    )
    p.add_argument("--d-decode-tasks", type=int, default=4, help="(d) decode tasks at once (the 8x preset: 8 per GPU)")
    p.add_argument(
        "--d-decode-cpus",
        type=float,
        default=0.5,
        help="(d) CPUs they reserve together (what local.yaml's two actors leave of 2)",
    )
    p.add_argument("--d-vad-factor", type=float, default=10.0, help="(d) recording stage RTFx = this x the ASR's")
    p.add_argument("--ray-cpus", type=int, default=2, help="ray.num_cpus of every run; (d) RTFx = 155 x this")
    p.add_argument("--writers", type=int, default=8, help="(c) concurrent writer processes")
    p.add_argument(
        "--recordings-per-commit",
        type=int,
        default=192,
        help="(c) recordings per staged block (conf/nemo-gpu-8x.yaml's pooling.max_files)",
    )
    p.add_argument(
        "--commit-interval-s",
        type=float,
        default=5.0,
        help="(c) output.commit_interval_s of the committer (the presets' default is 30 s)",
    )
    p.add_argument("--commit-seconds", type=float, default=30.0, help="(c) seconds of staging")
    p.add_argument("--rtt-ms", type=float, default=20.0, help="the store's round-trip time (the proxy's)")
    p.add_argument("--override", action="append", default=[], help="config override for every pipeline run")
    p.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    p.add_argument("--cache", type=Path, default=Path("/tmp/scriptorium-bench"))
    p.add_argument("--json", type=Path, help="write everything here")
    args = p.parse_args()
    parts = set(args.parts.split(","))
    args.corpora = args.corpora.split(",")
    args.poolings = args.poolings.split(",")
    args.d_decode = args.d_decode.split(",")
    os.environ.update({k: os.environ.get(k, v) for k, v in CREDS.items()})
    import logging

    from latency_proxy import LatencyProxy
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    work = args.cache / "fleet"
    (work / "logs").mkdir(parents=True, exist_ok=True)
    use_cgroup = CpuGroup.available()
    with socket.socket() as sock:  # a free port on the loopback
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    direct = f"http://127.0.0.1:{port}"
    res: dict = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "commit": _commit(),
        "cpu_measure": "cgroup v1 cpuacct" if use_cgroup else "/proc tree sums (0.5 s samples)",
    }
    t0 = time.time()
    try:
        import s3fs

        s3fs.S3FileSystem(client_kwargs={"endpoint_url": direct}).mkdir(BUCKET)
        with LatencyProxy(port, rtt_s=args.rtt_ms / 1000) as proxy:
            print(
                f"store: moto on {direct}, {args.rtt_ms:g} ms round trips through {proxy.endpoint}; "
                f"CPU: {res['cpu_measure']}",
                flush=True,
            )
            if parts & {"a", "b"}:
                print("(a)/(b) pipeline runs:", flush=True)
                res["runs"] = part_a(args, proxy, direct, use_cgroup, work)
                res["marginal"] = marginal(res["runs"])
            if "c" in parts:
                print(
                    f"(c) {args.writers} writers x {args.recordings_per_commit} recordings, "
                    f"{args.commit_seconds:g} s ...",
                    flush=True,
                )
                res["c"] = sustained_commits(
                    args.writers,
                    args.recordings_per_commit,
                    args.commit_seconds,
                    proxy.endpoint,
                    direct,
                    args.commit_interval_s,
                )
                print(f"  {res['c']['recordings_per_s']} recordings/s, exactly once: {res['c']['exactly_once']}")
            if "d" in parts:
                print("(d) the accelerator's duty cycle:", flush=True)
                res["d"] = part_d(args, proxy, direct, use_cgroup, work)
    finally:
        server.stop()
    res["seconds"] = round(time.time() - t0, 1)
    print()
    print(
        f"## bench/fleet.py, pipeline {res['commit']}, {os.cpu_count()} cores, ray.num_cpus={args.ray_cpus}, "
        f"store RTT {args.rtt_ms:g} ms, CPU by {res['cpu_measure']}, {res['seconds']:.0f} s"
    )
    print()
    print(table(args, res))
    if res.get("runs") or res.get("d"):
        print()
        print(runs_table(res.get("runs", []) + (res.get("d") or [])))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
        print(f"\nJSON: {args.json}")


def _commit() -> str:
    """The pipeline commit measured (+dirty with local changes)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "pipeline", "conf"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
