"""The Ray plan (pipeline/execution/): the production preset's plan (conf/nemo-gpu.yaml), built and run
through the CLI on a local Ray that declares a logical GPU, with the tiny NeMo models (the `tiny`
fixture) forced onto the CPU (`models.device=cpu`). Every operator of that plan requests GPUs by fraction and autoscales, which is
what Ray refused to build before ("You must provide `batch_size` ... when requesting GPUs"). Also: a
preset that can never be scheduled, or names a model it may not load, stops at start with one line."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.config import OutputConfig, load_config
from pipeline.execution import ClusterTooSmall, check_fits, stage_resources
from pipeline.ledger import read_output
from tests.helpers import REPO, sha256_of as _sha
from tests.helpers.cli import run_cli

PRESET = str(REPO / "conf/nemo-gpu.yaml")
FILES = ["speech/speechbrain_spk1_snt1.wav", "multilingual/fleurs-de-004.ogg", "diarization/pyannote_sample.wav"]


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=timeout)


@pytest.mark.ray
@pytest.mark.slow
def test_gpu_preset_plan_runs_on_logical_gpus(corpus, tiny, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for rel in FILES:
        shutil.copy(corpus / rel, src / Path(rel).name)
    (src / "broken.wav").write_text("not audio")  # one failed file: the run says so in its exit code
    out = tmp_path / "out"
    res = _cli(
        "run",
        PRESET,
        # one GPU pod of the preset's node shape, on this machine: 8 logical CPUs, 1 logical GPU
        "ray.address=null",
        "ray.num_cpus=8",
        "ray.num_gpus=1",
        "models.device=cpu",
        f"models.cache_dir={tmp_path / 'cache'}",
        "segment_stage.asr.cpu_threads=1",
        f"input.uri={src}",
        f"output.uri={out}",
        f"recording_stage.vad.model={tiny['vad']}",
        f"recording_stage.vad.sha256={_sha(tiny['vad'])}",
        "recording_stage.vad.threshold=0.01",
        "recording_stage.vad.neg_threshold=0.0",
        f"segment_stage.lid.model={tiny['lid']}",
        f"segment_stage.lid.sha256={_sha(tiny['lid'])}",
        f"segment_stage.asr.model={tiny['tdt']}",
        f"segment_stage.asr.sha256={_sha(tiny['tdt'])}",
        f"recording_stage.diarization.model={tiny['sortformer']}",
        f"recording_stage.diarization.sha256={_sha(tiny['sortformer'])}",
    )
    assert res.returncode == 3, res.stdout[-2000:] + res.stderr[-4000:]  # done, one file failed
    assert "ok 3  no speech 0  error 1" in res.stdout, res.stdout
    recordings = read_output(OutputConfig(uri=str(out)), "recordings").to_pylist()
    by_name = {Path(r["uri"]).name: r for r in recordings}
    assert set(by_name) == {Path(f).name for f in FILES} | {"broken.wav"}
    assert by_name["broken.wav"]["status"] == "error"
    segments = read_output(OutputConfig(uri=str(out)), "segments").to_pylist()
    assert {s["recording_id"] for s in segments} == {r["recording_id"] for r in recordings if r["status"] == "ok"}
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] == 3 and report["error"] == 1


@pytest.mark.ray  # a Ray of 2 CPUs and 1 GPU, in the CLI's process: the plan is checked against it
def test_preset_that_can_never_be_scheduled_stops_at_start(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.wav").write_bytes(b"RIFF")  # something to do, so the plan is built
    res = _cli(
        "run",
        str(REPO / "conf/local.yaml"),
        f"input.uri={tmp_path / 'in'}",
        f"output.uri={tmp_path / 'out'}",
        "ray.num_cpus=2",
        "ray.num_gpus=1",
        "models.device=cpu",
        "segment_stage.resources.num_gpus=2",
        timeout=300,
    )
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-3000:]
    ours = [line for line in res.stderr.splitlines() if line.startswith("scriptorium:")]
    assert (
        len(ours) == 1 and "segment_stage" in ours[0] and "2 GPUs" in ours[0] and "offers 2 CPUs and 1 GPUs" in ours[0]
    )
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "segments").exists()


def test_shipped_gpu_preset_refuses_unstaged_models_before_anything_runs(tmp_path):
    """As shipped, the preset names staged files without their sha256 (infra/stage_models.py fills
    them in): a run stops at once with one line, instead of fetching from a hub at run time."""
    res = _cli("run", PRESET, f"input.uri={tmp_path}", f"output.uri={tmp_path / 'out'}", timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()  # one line per problem, every model named
    assert all(x.startswith("scriptorium: ") and "sha256" in x for x in lines), res.stderr
    assert [x.split()[1] for x in lines] == [
        "recording_stage.vad.model:",
        "recording_stage.diarization.model:",
        "segment_stage.lid.model:",
        "segment_stage.asr.model:",
    ]
    res = _cli(
        "run",
        PRESET,
        f"input.uri={tmp_path}",
        f"output.uri={tmp_path / 'out'}",
        "segment_stage.asr.model=nvidia/parakeet-tdt-0.6b-v3",
        "recording_stage.vad.backend=none",
        "segment_stage.lid.backend=none",
        "segment_stage.lid.language=en",
        "recording_stage.diarization.enabled=false",
        timeout=120,
    )
    assert res.returncode == 2 and "allow_download" in res.stderr and "segment_stage.asr.model" in res.stderr, (
        res.stderr
    )


@pytest.mark.parametrize("preset", ["conf/nemo-gpu.yaml", "conf/nemo-gpu-8x.yaml"])
def test_gpu_presets_fill_one_gpu_by_fraction(preset):
    cfg = load_config(REPO / preset, ["input.uri=/i", "output.uri=/o"])
    rec, seg = cfg.recording_stage.resources, cfg.segment_stage.resources
    assert rec.num_gpus + seg.num_gpus == 1.0  # one recording + one segment actor per GPU, nothing idle
    assert rec.max_pool_size == seg.max_pool_size and rec.max_pool_size >= rec.pool_size
    assert cfg.models.allow_download is False and cfg.models.require_sha256 is True
    assert cfg.segment_stage.batching.max_padded_s_per_gib


def test_check_fits_names_the_stage_and_the_numbers():
    cfg = load_config(REPO / "conf/nemo-gpu.yaml", ["input.uri=/i", "output.uri=/o"])
    stages = stage_resources(cfg)
    check_fits(stages, [{"CPU": 8, "GPU": 1}], {"CPU": 8, "GPU": 1})  # one pod of its shape: fits
    with pytest.raises(ClusterTooSmall, match="recording_stage: one worker asks for 1 CPUs and 0.25 GPUs"):
        check_fits(stages, [{"CPU": 2}], {"CPU": 2})  # a CPU-only cluster never offers a GPU
    big = load_config(REPO / "conf/nemo-gpu-8x.yaml", ["input.uri=/i", "output.uri=/o"])
    with pytest.raises(ClusterTooSmall, match=r"minimum pools need 8 GPUs .* at most 1"):
        check_fits(stage_resources(big), [{"CPU": 176, "GPU": 1}], {"CPU": 176, "GPU": 1})


@pytest.mark.ray
def test_an_actor_stage_runs_its_native_thread_pools_at_the_count_it_is_given():
    """`map_actor(..., threads=3)` (the runner passes `asr.cpu_threads` to the CPU segment stage):
    OpenMP, MKL and OpenBLAS in the actor are told 3 threads, not Ray's default of its whole CPUs,
    and glibc as many malloc arenas (not 8 per core: with threads that come and go they grew apart)."""
    import os

    import pyarrow as pa
    import ray

    from pipeline.config import RayConfig, Resources
    from pipeline.execution import init_ray, map_actor, nest

    class EnvStage:  # defined here so that Ray ships it by value
        def __call__(self, table: pa.Table) -> pa.Table:
            env = [
                os.environ.get(k)
                for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_ARENA_MAX")
            ]
            return table.append_column("threads", pa.array([",".join(map(str, env))] * table.num_rows))

    init_ray(RayConfig(num_cpus=2))
    ds = ray.data.from_arrow([nest(pa.table({"duration": [1.0], "status": ["ok"], "error": [None]}))])
    rows = map_actor(ds, EnvStage, Resources(num_cpus=0.5, pool_size=1), "transcribed", last=True, threads=3).take_all()
    assert [r["threads"] for r in rows] == ["3,3,3,3"]


@pytest.mark.ray
def test_each_table_a_task_stage_yields_leaves_as_a_block_of_its_own():
    """Decode yields a long recording's pieces one by one (pipeline/pieces.py), 41 MB each at the
    default 600 s; each must leave the task as its own block, so that the recording stage starts on
    the first while the next is decoded and the decode worker holds one piece, not several. (Ray
    Data's default 128 MiB block target packed them three to a block: `pipeline.execution.BLOCK_TARGET_BYTES`.)"""
    import numpy as np
    import pyarrow as pa
    import ray

    from pipeline.config import RayConfig, Resources
    from pipeline.execution import init_ray, map_tasks, nest

    def pieces(table: pa.Table, n: int):  # one window in, n pieces out, as decode_stream does
        for k in range(n):
            samples = pa.array([np.full(5_000_000, k, dtype=np.float32)], pa.list_(pa.float32()))  # 20 MB
            yield pa.table({"duration": [312.5], "samples": samples})

    init_ray(RayConfig(num_cpus=2))
    ds = ray.data.from_arrow([nest(pa.table({"duration": [1250.0]}))])
    done = map_tasks(ds, pieces, Resources(num_cpus=0.5, pool_size=1), "decoded", n=4).materialize()
    assert done.num_blocks() == 4


@pytest.mark.ray
def test_a_fed_actor_stage_takes_each_table_of_its_feed_and_sends_it_on_alone():
    """`decode.in_recording_stage` (conf/local.yaml): decode runs inside the recording stage's actor
    (`map_actor(..., feed=...)`); each piece it yields goes through the stage on its own and leaves
    as a block of its own even when it is small (2 MB of speech), as with decode in tasks, so ASR
    starts on it while the next is decoded; and the plan asks for no decode workers."""
    import numpy as np
    import pyarrow as pa
    import ray

    from pipeline.config import RayConfig, Resources
    from pipeline.execution import init_ray, map_actor, nest

    def pieces(table: pa.Table, n: int):
        for k in range(n):
            samples = pa.array([np.full(5_000_000, k, dtype=np.float32)], pa.list_(pa.float32()))  # 20 MB
            yield pa.table({"duration": [312.5], "samples": samples})

    class Speech:  # one piece per call (the stage never sees two at once); keeps 2 MB of it, as VAD does
        def __call__(self, table: pa.Table) -> pa.Table:
            assert table.num_rows == 1
            kept = pa.array([table.column("samples")[0].values[:500_000]], pa.list_(pa.float32()))
            return pa.table({"duration": table.column("duration"), "status": ["ok"], "error": [None], "speech": kept})

    init_ray(RayConfig(num_cpus=2))
    ds = ray.data.from_arrow([nest(pa.table({"duration": [1250.0]}))])
    done = map_actor(
        ds, Speech, Resources(num_cpus=0.5, pool_size=1), "segmented", last=True, feed=(pieces, "decoded", {"n": 4})
    ).materialize()
    assert done.num_blocks() == 4
    assert sorted(int(r["speech"][0]) for r in done.take_all()) == [0, 1, 2, 3]
    local = load_config(REPO / "conf/local.yaml", ["input.uri=/i", "output.uri=/o"])
    assert local.decode.in_recording_stage and set(stage_resources(local)) == {"recording_stage", "segment_stage"}


@pytest.mark.ray
def test_an_actor_stage_works_on_as_many_windows_at_once_as_it_is_told():
    """`segment_stage.windows_at_once: 2` (conf/local.yaml): Ray calls the one actor with two windows at
    once, from two threads, so the next window's work starts before this one's ends."""
    import threading
    import time

    import pyarrow as pa
    import ray

    from pipeline.config import RayConfig, Resources
    from pipeline.execution import init_ray, map_actor, nest

    class Overlap:  # each call takes 0.5 s and says how many calls were running at most until then
        def __init__(self) -> None:
            self.lock, self.running, self.most = threading.Lock(), 0, 0

        def __call__(self, table: pa.Table) -> pa.Table:
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            time.sleep(0.5)
            with self.lock:
                self.running -= 1
                return table.append_column("most", pa.array([self.most] * table.num_rows))

    init_ray(RayConfig(num_cpus=2))
    ds = ray.data.from_arrow(
        [
            nest(pa.table({"duration": [60.0], "status": ["ok"], "error": pa.array([None], pa.string())}))
            for _ in range(4)
        ]
    )
    done = map_actor(ds, Overlap, Resources(num_cpus=1, pool_size=1), "transcribed", last=True, windows_at_once=2)
    assert max(r["most"] for r in done.take_all()) == 2
    local = load_config(REPO / "conf/local.yaml", ["input.uri=/i", "output.uri=/o"])
    assert local.segment_stage.windows_at_once == 2


def test_release_free_heap_hands_freed_memory_back_to_the_os():
    """glibc keeps freed heap pages resident; `release_free_heap` (called after every actor stage
    call) returns them, so a worker's memory does not wander up with the calls it has made."""
    from pipeline.execution.operators import _LIBC, release_free_heap

    if _LIBC is None:
        pytest.skip("not glibc")

    def anon_mb() -> float:
        return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("RssAnon:"))

    blocks = [bytes(60_000) for _ in range(3000)]  # 180 MB in heap-sized blocks (under the mmap threshold)
    pinned = bytes(60_000)  # allocated last, at the top of the heap: the freed pages below cannot just shrink it
    del blocks
    before = anon_mb()
    release_free_heap()
    assert before - anon_mb() > 100
    del pinned


def test_the_run_state_keeps_pieces_and_staged_blocks_apart():
    """One actor holds the piece registry and the committer's mailbox: neither may shadow the other."""
    from pipeline.execution.run_state import RunState

    state = RunState()
    state.stage("block-1")
    assert state.add_piece("rec", 0, False) is False and state.add_piece("rec", 1, True) is True
    state.stage("block-2")
    assert state.take_staged() == ["block-1", "block-2"] and state.take_staged() == []
    state.add("committed", 2, 3.0)
    assert state.snapshot()["committed"] == (2, 3.0)
