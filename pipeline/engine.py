"""The one place (with sink.py) that knows Ray: stages -> `map_batches` operators.

Stages are plain callables over pyarrow Tables of recordings; here they become Ray Data operators
with the resources their config declares.

Why every operator sees one ROW per pooling window: the driver groups recordings into pooling
windows (pipeline/batching.py) and the segment stage buckets a window's segments together, so a
window must reach each stage whole and alone. Ray Data cuts input by rows: `batch_size=None` passes
whole blocks, but Ray refuses it for operators that request GPUs ("You must provide `batch_size`
... when requesting GPUs"), and a row count on a table of recordings would bundle several one-file
windows (long recordings) into one call or split a window in two. So between operators a window
travels as one row holding its recordings (`nest`), every operator takes `batch_size=1` (one window,
one call, on CPU and GPU alike), and the stage sees its plain table again (`unnest`). The last model
stage hands plain recording rows to the sink.

Model stages run as actor pools: fixed (`pool_size`) on small machines, where Ray Data's autoscaling
pool never grew, or autoscaling between `pool_size` and `max_pool_size` on a cluster, with explicit
CPU/GPU fractions so that stages share GPUs (e.g. VAD + diarization at 0.25 beside ASR at 0.75).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable, Iterator

import pyarrow as pa

from pipeline.config import JobConfig, RayConfig, Resources
from pipeline.pieces import PieceRegistry
from pipeline.progress import Counts

log = logging.getLogger(__name__)

WINDOW = "window"
#: Ray Data's block size target (its default is 128 MiB). Within one task or actor call, what the stage
#: yields is gathered into one block until it passes the target. A window's row (<= `pooling.window_audio_s`
#: of audio, ~19 MB at 300 s), a long recording's piece (640 s: 41 MB) or the speech the recording stage
#: keeps of a piece (a piece with 5% speech: ~2 MB) is larger, so each leaves its task as a block of its
#: own. At 128 MiB Ray Data coalesced a decode task's pieces three at a time: the decode worker held them
#: (its peak grew 1.28x from a 1 h to a 4 h file; 1.00x at 16 MiB, bench/long_memory.py) and the recording
#: stage waited for the third before starting on the first. At 16 MiB, with decode inside the recording
#: stage's actor (`decode.in_recording_stage`), a sparse piece's speech waited there for the next pieces.
BLOCK_TARGET_BYTES = 1024 * 1024


from pipeline.errors import ClusterTooSmall


def init_ray(cfg: RayConfig) -> None:
    """Join `cfg.address` or start a local Ray (no dashboard) sized by `cfg.num_cpus` / `num_gpus`."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False}
    if cfg.address:
        kwargs["address"] = cfg.address
    else:
        kwargs["num_cpus"] = cfg.num_cpus or os.cpu_count()
        if cfg.num_gpus is not None:
            kwargs["num_gpus"] = cfg.num_gpus
        kwargs["_node_ip_address"] = "127.0.0.1"
    ray.init(**kwargs)
    configure_data_context()
    quiet_ray_on_screen()


#: Ray Data messages that say nothing a Scriptorium user can act on (we switch its bars off ourselves).
_HARMLESS = ("Progress bars disabled",)


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in _HARMLESS)


def quiet_ray_on_screen() -> None:
    """Ray Data's terminal handler shows warnings and errors only, without the known-harmless ones;
    its session log file (named in Ray's first line) keeps everything, INFO included."""
    import ray.data  # noqa: F401 - sets up the "ray.data" logger and its handlers

    for handler in logging.getLogger("ray.data").handlers:
        if getattr(handler, "stream", None) is not None:  # the terminal, not the session file
            handler.setLevel(logging.WARNING)
            handler.addFilter(_DropHarmless())


def configure_data_context() -> None:
    """One block per window (`BLOCK_TARGET_BYTES`). Error policy: bounded retries only. Our stages
    turn per-recording failures into error rows, so an exception that escapes a stage is an
    infrastructure fault: retry it a few times, then fail loudly. Never `max_errored_blocks` (it
    silently drops whole blocks of good recordings)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.retried_map_errors = True
    ctx.max_map_retries = 3
    ctx.actor_task_retry_on_errors = False
    ctx.max_errored_blocks = 0
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.target_max_block_size = BLOCK_TARGET_BYTES


# -- windows as rows -------------------------------------------------------------------------------
def nest(table: pa.Table) -> pa.Table:
    """A pooling window's recordings -> one row whose `window` column holds them (list<struct>)."""
    rows = table.to_struct_array().combine_chunks()
    return pa.table({WINDOW: pa.ListArray.from_arrays(pa.array([0, len(rows)], pa.int32()), rows)})


def unnest(batch: pa.Table) -> pa.Table:
    """Rows of windows -> the plain table of their recordings (in order)."""
    chunks = [chunk.flatten() for chunk in batch.column(WINDOW).chunks]
    rows = pa.concat_arrays(chunks) if len(chunks) != 1 else chunks[0]
    return pa.Table.from_struct_array(rows)


def _reported(fn: Callable[..., Any], stage: str, progress: Any, table: pa.Table, **kwargs: Any) -> Iterator[pa.Table]:
    """`fn(table)`'s tables, each counted as done by `stage` (`report_progress`); `fn` returns a
    table, or yields several (decode sends each piece of a long recording on: pipeline/pieces.py)."""
    out = fn(table, **kwargs)
    for each in [out] if isinstance(out, pa.Table) else out:
        report_progress(progress, stage, each)
        yield each


def _per_window(fn: Callable[..., Any], stage: str, progress: Any, batch: pa.Table, **kwargs: Any) -> Iterator[pa.Table]:
    """A task stage over one window row: each table `fn` makes leaves as a window row of its own."""
    for table in _reported(fn, stage, progress, unnest(batch), **kwargs):
        yield nest(table)


#: A task stage run inside the next stage's actor (`map_actor`'s `feed`): function, progress name, kwargs.
Feed = tuple[Callable[..., Any], str, dict[str, Any]]


def _window_actor(
    make_stage: Callable[..., Callable[[pa.Table], pa.Table]], stage: str, nest_output: bool,
    feed: Feed | None = None, progress: Any = None,
) -> type:
    """A Ray Data actor class over window rows whose actors each hold one `make_stage(**kwargs)`
    (built in the actor, so models load there, once). The last stage (`nest_output=False`) returns
    plain recording rows for the sink, and counts them into Ray's metrics. With a `feed`, each table
    the feed makes of the window goes through the stage and on at once (decode's pieces)."""

    def __init__(self, **kwargs: Any) -> None:
        self.stage = make_stage(**kwargs)

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        tables = [unnest(batch)] if feed is None else _reported(feed[0], feed[1], progress, unnest(batch), **feed[2])
        for table in tables:
            out = self.stage(table)
            release_free_heap()
            report_progress(progress, stage, out)
            if nest_output:
                yield nest(out)
            else:
                record_metrics(out)
                yield out

    # a readable name in Ray's logs and dashboard: RecordingStage.from_config -> RecordingStageActor
    name = getattr(make_stage, "__qualname__", type(make_stage).__name__).split(".")[0]
    return type(f"{name}Actor", (), {"__init__": __init__, "__call__": __call__})


def release_free_heap() -> None:
    """Hand the heap's free pages back to the OS (glibc's `malloc_trim`; a no-op without glibc). A
    stage call allocates and frees hundreds of MB (samples, features, Arrow buffers) and glibc keeps
    what is freed: in one process, the segment and recording stages' resident memory after each of
    a 4 h file's 24 pieces wandered between 384 and 519 MB; trimmed after each call it stayed at
    270-280 MB. (The segment actor's peak inside a call is not changed by this: bench/long_memory.py.)"""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc() -> Any:
    """glibc, loaded once per process; None where there is none (macOS, musl)."""
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _glibc()


def map_tasks(ds, fn: Callable[..., pa.Table], resources: Resources, stage: str, progress: Any = None, **kwargs: Any):
    """Stateless CPU stage (decode) -> plain Ray tasks, at most `pool_size` at a time, one window each.
    `stage` names it in the progress display (pipeline/progress.py), counted by the run's `progress`
    actor (`start_run_state`; None: not counted)."""
    import ray

    return ds.map_batches(
        functools.partial(_per_window, fn, stage, progress),
        fn_kwargs=kwargs,
        batch_format="pyarrow",
        batch_size=1,
        num_cpus=resources.num_cpus,
        compute=ray.data.TaskPoolStrategy(size=resources.pool_size),
    )


def map_actor(
    ds,
    make_stage: Callable[..., Callable[[pa.Table], pa.Table]],
    resources: Resources,
    stage: str,
    last: bool = False,
    threads: int | None = None,
    feed: Feed | None = None,
    progress: Any = None,
    windows_at_once: int = 1,
    **kwargs: Any,
):
    """Stateful stage (loads its models once per actor) -> an actor pool, one window per call. Each
    actor builds its stage with `make_stage(**kwargs)` (e.g. `RecordingStage.from_config`, job=cfg).

    `windows_at_once`: calls each actor runs at once, from threads of its own (Ray Data's
    `max_concurrent_calls_per_actor`); the stage must be safe for that (the segment stage is:
    `segment_stage.windows_at_once`).

    `feed`: a task stage (function, progress name, kwargs) that runs in the actor first, instead of
    in tasks of its own (`decode.in_recording_stage`): one process and one object-store hand-off fewer.

    `threads`: the native thread pools' size in the actor (OpenMP, MKL, OpenBLAS), set in its
    runtime_env before any library starts. Ray's own default is the actor's whole CPUs, at least 1,
    so a 1-CPU ASR actor told `asr.cpu_threads: 2` would run torch's and NumPy's pools on one."""
    import ray

    extra: dict[str, Any] = {}
    if threads:
        n = str(threads)
        # MALLOC_ARENA_MAX: glibc gives each thread that allocates an arena of its own (up to 8 per
        # core), and memory freed in one is not reused by the others. With two Whisper calls at once
        # (`asr.workers`) the segment actor's private memory grew 540 -> 1000 MB over a 2 h corpus;
        # with as many arenas as threads (and its calling threads kept for its life) it stayed at
        # 410-520 MB, at the same CPU
        extra["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
                                             "MALLOC_ARENA_MAX": n}}
    return ds.map_batches(
        _window_actor(make_stage, stage, nest_output=not last, feed=feed, progress=progress),
        fn_constructor_kwargs=kwargs,
        batch_format="pyarrow",
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(
            min_size=resources.pool_size, max_size=resources.max_pool_size or resources.pool_size,
            **({"max_concurrent_calls_per_actor": windows_at_once, "enable_true_multi_threading": True}
               if windows_at_once > 1 else {}),
        ),
        num_cpus=resources.num_cpus,
        num_gpus=resources.num_gpus or None,
        zero_copy_batch=True,
        **extra,
    )


# -- the run's bookkeeping: progress and pieces ----------------------------------------------------

class RunState(Counts, PieceRegistry):
    """The run's bookkeeping in one actor (0 CPUs): the stages' progress counts (pipeline/progress.py)
    and the pieces of long recordings the sink has staged (pipeline/pieces.py). One actor rather than
    one each, because every Ray actor is a Python process of its own (~120 MB resident each in
    bench/throughput.py's process tree)."""

    def __init__(self) -> None:
        Counts.__init__(self)
        PieceRegistry.__init__(self)


def start_run_state() -> tuple[Any, Callable[[], dict[str, tuple[int, float]]]]:
    """Start this run's `RunState` actor: its handle (the stages' `progress` and the sink's piece
    registry; it lives while the driver holds it) and the driver's snapshot function for
    `pipeline.progress.Reporter`. A fresh actor per run, handed to the stages rather than looked up
    by name: a worker that outlives a run (Ray reuses task workers) never counts into the last one's."""
    import ray

    actor = ray.remote(num_cpus=0)(RunState).remote()
    return actor, lambda: ray.get(actor.snapshot.remote(), timeout=30)


def report_progress(progress: Any, stage: str, recordings: pa.Table) -> None:
    """`stage` finished these recordings (see `add_progress`). A piece of a long recording adds its
    seconds; the recording counts as a file once, with its last piece (pipeline/pieces.py)."""
    if recordings.num_rows:
        add_progress(progress, stage, sum(ends_recording(recordings)),
                     sum(d or 0.0 for d in recordings.column("duration").to_pylist()))


def ends_recording(recordings: pa.Table) -> list[bool]:
    """Per row, whether it ends a recording: every whole one does, a long one's last piece does."""
    if "piece" not in recordings.column_names:
        return [True] * recordings.num_rows
    pieces, last = recordings.column("piece").to_pylist(), recordings.column("last_piece").to_pylist()
    return [p is None or bool(end) for p, end in zip(pieces, last)]


def add_progress(progress: Any, stage: str, files: int, seconds: float) -> None:
    """Fire-and-forget count to the run's `RunState` actor. No actor (a stage used outside a run,
    e.g. in a test or a benchmark) is not an error, and nothing here may fail a stage."""
    if progress is None:
        return
    try:
        progress.add.remote(stage, files, seconds)
    except Exception:  # noqa: BLE001
        log.debug("progress report failed", exc_info=True)


# -- metrics ---------------------------------------------------------------------------------------
@functools.cache
def _counters() -> dict[str, Any]:
    from ray.util.metrics import Counter

    return {
        "files": Counter("scriptorium_files", "recordings through the pipeline, by status", tag_keys=("status",)),
        "audio": Counter("scriptorium_audio_seconds", "seconds of audio through the pipeline", tag_keys=("status",)),
        "errors": Counter("scriptorium_errors", "recordings that ended in an error", tag_keys=("stage",)),
    }


def record_metrics(recordings: pa.Table) -> None:
    """Ray application metrics (exported on each node's metrics port as `ray_scriptorium_*`), so a
    cluster's Prometheus sees files, audio seconds and errors while a long run goes on."""
    if not recordings.num_rows:
        return
    counters = _counters()
    rows = recordings.select(["status", "duration", "error"]).to_pylist()
    for row, end in zip(rows, ends_recording(recordings)):  # a long recording is one file (its last piece)
        status = row["status"] or "unknown"
        if end:
            counters["files"].inc(1.0, tags={"status": status})
        if row["duration"]:  # Ray counters refuse increments of 0
            counters["audio"].inc(float(row["duration"]), tags={"status": status})
        if status == "error":
            stage = (row["error"] or "decode").split(":", 1)[0].strip()
            counters["errors"].inc(1.0, tags={"stage": stage if stage in ("vad/diarization", "asr") else "decode"})


# -- will the plan ever run? -----------------------------------------------------------------------
def stage_resources(cfg: JobConfig) -> dict[str, tuple[Resources, int]]:
    """Every operator's per-worker request and the workers it needs at least, named as in the
    config: an actor pool starts `pool_size` actors; decode's `pool_size` is a cap, one task runs
    (none when decode runs inside the recording stage's actors)."""
    decode = {} if cfg.decode.in_recording_stage else {"decode": (cfg.decode.resources, 1)}
    return {
        **decode,
        "recording_stage": (cfg.recording_stage.resources, cfg.recording_stage.resources.pool_size),
        "segment_stage": (cfg.segment_stage.resources, cfg.segment_stage.resources.pool_size),
    }


def check_fits(
    stages: dict[str, tuple[Resources, int]], node_shapes: list[dict[str, float]], ceiling: dict[str, float]
) -> None:
    """Raise `ClusterTooSmall` if a stage can never be scheduled: one worker must fit on one node
    shape, and the minimum pools of all stages together must fit the cluster's ceiling (its current
    resources, or what its autoscaler may grow to). Pure: `cluster_shape()` gathers the inputs."""
    for name, (res, _) in stages.items():
        need = {"CPU": res.num_cpus, "GPU": res.num_gpus}
        if not any(all(shape.get(k, 0.0) + 1e-9 >= v for k, v in need.items()) for shape in node_shapes):
            biggest = max(node_shapes, key=lambda s: (s.get("GPU", 0.0), s.get("CPU", 0.0)), default={})
            raise ClusterTooSmall(
                f"{name}: one worker asks for {res.num_cpus:g} CPUs and {res.num_gpus:g} GPUs, but the largest "
                f"node offers {biggest.get('CPU', 0):g} CPUs and {biggest.get('GPU', 0):g} GPUs"
            )
    for key, label in (("CPU", "CPUs"), ("GPU", "GPUs")):
        each = {n: (r.num_cpus if key == "CPU" else r.num_gpus, k) for n, (r, k) in stages.items()}
        wanted = sum(per * k for per, k in each.values())
        if wanted > ceiling.get(key, 0.0) + 1e-9:
            parts = ", ".join(f"{n} {k} x {per:g}" for n, (per, k) in each.items() if per)
            raise ClusterTooSmall(
                f"the stages' minimum pools need {wanted:g} {label} ({parts}), but the cluster can offer "
                f"at most {ceiling.get(key, 0.0):g}"
            )


def cluster_shape() -> tuple[list[dict[str, float]], dict[str, float]]:
    """(node shapes, ceiling) of the Ray cluster we are connected to. With an autoscaler (KubeRay),
    its node groups and their max counts say what the cluster can grow to; without one, the nodes
    that are alive now are all there will be."""
    import ray
    from ray._private.state import state  # private, but Ray Data's own shuffle sizing reads it too

    shapes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    ceiling = dict(ray.cluster_resources())
    try:
        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - no autoscaler state: a static cluster
        config = None
    if config is not None and config.node_group_configs:
        shapes += [dict(g.resources) for g in config.node_group_configs]
        grown = state.get_max_resources_from_cluster_config() or {}
        for key, value in grown.items():
            ceiling[key] = max(ceiling.get(key, 0.0), float(value))
    return shapes, ceiling
