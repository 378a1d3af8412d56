"""Ray start-up and the window operators: stages -> `map_batches` operators.

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

import ctypes
import functools
import logging
import os
from typing import Any, Callable, Iterator

import pyarrow as pa
import ray
import ray.data  # noqa: F401 - sets up the "ray.data" logger and its handlers
from ray.data import DataContext

from pipeline.config import RayConfig, Resources
from pipeline.errors import QuietStorageFull
from pipeline.execution.run_state import record_metrics, report_progress

log = logging.getLogger(__name__)

WINDOW = "window"
#: Ray Data's block size target (its default is 128 MiB). Within one task or actor call, what the stage
#: yields is gathered into one block until it passes the target. A window's row, a long recording's
#: piece, or even the speech the recording stage keeps of a sparse piece is larger than 1 MiB, so each
#: leaves its task as a block of its own and flows on at once. A larger target makes Ray Data
#: coalesce several pieces into one block: the producer then holds them all in memory and the next
#: stage waits for the last before it starts on the first (measured: README "Long recordings").
BLOCK_TARGET_BYTES = 1024 * 1024


def init_ray(cfg: RayConfig) -> None:
    """Join `cfg.address` or start a local Ray (no dashboard) sized by `cfg.num_cpus` / `num_gpus`."""
    if ray.is_initialized():
        return
    # onnxruntime (Silero VAD) starts Microsoft's 1DS telemetry at import, which writes a session file
    # (`$TMPDIR/.ses`) in every process that imports it, and would send events where it can reach out;
    # off in the driver and so in the workers a local Ray starts (they inherit this environment)
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
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


#: Ray Data messages that say nothing a Scriptorium user can act on: we switch its bars off ourselves;
#: "will hang" is Ray Data's look at the free CPUs the moment a dataset starts (the last run's or the
#: previous stage's actors may still hold them), while `check_fits` has already refused a job whose
#: stages cannot all be placed, so nothing hangs.
_HARMLESS = ("Progress bars disabled", "The Dataset job will hang")


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in _HARMLESS)


def quiet_ray_on_screen() -> None:
    """Ray Data's terminal handler shows warnings and errors only, without the known-harmless ones;
    its session log file (named in Ray's first line) keeps everything, INFO included."""
    for handler in logging.getLogger("ray.data").handlers:
        if getattr(handler, "stream", None) is not None:  # the terminal, not the session file
            handler.setLevel(logging.WARNING)
            handler.addFilter(_DropHarmless())
            handler.addFilter(QuietStorageFull())  # a full disk: the run's last line says it, once


def configure_data_context() -> None:
    """One block per window (`BLOCK_TARGET_BYTES`). Error policy: bounded retries only. Our stages
    turn per-recording failures into error rows, so an exception that escapes a stage is an
    infrastructure fault: retry it a few times, then fail loudly. Never `max_errored_blocks` (it
    silently drops whole blocks of good recordings)."""
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


def from_windows(rows: pa.Table, pools: list[tuple[int, int]]) -> ray.data.Dataset:
    """The dataset every stage maps over: one block, and one row (`nest`), per pooling window
    `(offset, length)` of `rows`.

    `from_blocks`, not `from_arrow`: both keep one block per table, but `from_arrow` reads each
    block's metadata back in a Ray task of its own (`get_table_block_metadata_schema`, on a table it
    gets zero-copy from the object store), and the workers that ran it aborted now and then with a
    corrupt absl mutex ("Fatal Python error", issue 32: 8 of 8 such aborts in this machine's Ray logs
    were in those workers; bench/soak.py). Here the metadata is computed in the driver, from the tables
    it already holds, and no such task runs."""
    return ray.data.from_blocks([nest(rows.slice(offset, length)) for offset, length in pools])


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


def _per_window(
    fn: Callable[..., Any], stage: str, progress: Any, batch: pa.Table, **kwargs: Any
) -> Iterator[pa.Table]:
    """A task stage over one window row: each table `fn` makes leaves as a window row of its own."""
    for table in _reported(fn, stage, progress, unnest(batch), **kwargs):
        yield nest(table)


#: A task stage run inside the next stage's actor (`map_actor`'s `feed`): function, progress name, kwargs.
Feed = tuple[Callable[..., Any], str, dict[str, Any]]


def _window_actor(
    make_stage: Callable[..., Callable[[pa.Table], pa.Table]],
    stage: str,
    nest_output: bool,
    feed: Feed | None = None,
    progress: Any = None,
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
    what is freed, so an actor's resident memory would wander with the largest call it has seen
    (README "Long recordings"; the peak inside a call is not changed by this)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc() -> Any:
    """glibc, loaded once per process; None where there is none (macOS, musl)."""
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _glibc()


def map_tasks(ds, fn: Callable[..., pa.Table], resources: Resources, stage: str, progress: Any = None, **kwargs: Any):
    """Stateless CPU stage (decode) -> plain Ray tasks, at most `pool_size` at a time, one window each.
    `stage` names it in the progress display (pipeline/progress.py), counted by the run's `progress`
    actor (`start_run_state`; None: not counted)."""
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
    extra: dict[str, Any] = {}
    if threads:
        n = str(threads)
        # MALLOC_ARENA_MAX: glibc gives each thread that allocates an arena of its own (up to 8 per
        # core), and memory freed in one is not reused by the others, so an actor running calls on
        # several threads (`asr.workers`) grows without bound; as many arenas as threads keep it flat
        # at the same CPU (README "Performance")
        extra["runtime_env"] = {
            "env_vars": {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MALLOC_ARENA_MAX": n}
        }
    return ds.map_batches(
        _window_actor(make_stage, stage, nest_output=not last, feed=feed, progress=progress),
        fn_constructor_kwargs=kwargs,
        batch_format="pyarrow",
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(
            min_size=resources.pool_size,
            max_size=resources.max_pool_size or resources.pool_size,
            **(
                {"max_concurrent_calls_per_actor": windows_at_once, "enable_true_multi_threading": True}
                if windows_at_once > 1
                else {}
            ),
        ),
        num_cpus=resources.num_cpus,
        num_gpus=resources.num_gpus or None,
        zero_copy_batch=True,
        **extra,
    )
