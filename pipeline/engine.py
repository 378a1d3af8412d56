"""The one place (with sink.py) that knows Ray: stages -> `map_batches` operators.

Stages are plain callables over pyarrow Tables; here they become Ray Data operators with the
resources their config declares. Model stages run as a FIXED-size actor pool (the autoscaling pool
never grew on small machines) with explicit CPU/GPU fractions, so the whole pipeline streams on
2 cores and shares GPUs (e.g. VAD at num_gpus=0.25 beside LID).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pipeline.config import RayConfig, Resources

log = logging.getLogger(__name__)


def init_ray(cfg: RayConfig) -> None:
    """Join `cfg.address` or start a local Ray (no dashboard) sized by `cfg.num_cpus`."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False}
    if cfg.address:
        kwargs["address"] = cfg.address
    else:
        kwargs["num_cpus"] = cfg.num_cpus or os.cpu_count()
        kwargs["_node_ip_address"] = "127.0.0.1"
    ray.init(**kwargs)
    configure_data_context()


def configure_data_context() -> None:
    """Error policy: bounded retries only. Our stages turn per-recording failures into error rows,
    so an exception that escapes a stage is an infrastructure fault: retry it a few times, then fail
    loudly. Never `max_errored_blocks` (it silently drops whole blocks of good recordings)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.retried_map_errors = True
    ctx.max_map_retries = 3
    ctx.actor_task_retry_on_errors = False
    ctx.max_errored_blocks = 0
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False


def map_actor(ds, stage_cls: type, resources: Resources, **kwargs: Any):
    """Stateful stage (loads a model once per actor) -> a fixed pool of `resources.pool_size` actors.
    Each call gets one whole block: a pooling window (see `map_tasks`)."""
    import ray

    actor_cls = type(f"{stage_cls.__name__}Actor", (stage_cls,), {})  # readable names in Ray's logs
    return ds.map_batches(
        actor_cls,
        fn_constructor_kwargs=kwargs,
        batch_format="pyarrow",
        batch_size=None,
        compute=ray.data.ActorPoolStrategy(size=resources.pool_size),
        num_cpus=resources.num_cpus,
        num_gpus=resources.num_gpus or None,
        zero_copy_batch=True,
    )


def map_tasks(ds, fn, resources: Resources, **kwargs: Any):
    """Stateless CPU stage (e.g. decode) -> plain Ray tasks, at most `pool_size` at a time.

    Each task gets one whole block, a pooling window. A row count here would make Ray Data bundle
    several one-file windows (long recordings) into one task, so ASR could not start on the first
    file until the whole bundle was decoded and segmented."""
    return ds.map_batches(
        fn,
        fn_kwargs=kwargs,
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=resources.num_cpus,
        concurrency=resources.pool_size,
    )
