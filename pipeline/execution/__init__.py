"""The execution layer: the one place that knows Ray.

    operators.py   Ray start-up and its data context; windows as rows (`from_windows`, `nest`/`unnest`);
                   stages as task (`map_tasks`) or actor-pool (`map_actor`) operators
    cluster.py     each stage's resources against the cluster's shape (`check_fits`)
    run_state.py   the run's bookkeeping actor: progress counts, long recordings' pieces, staged
                   blocks waiting for the committer; Ray metrics
    sink.py        the Delta sink: write tasks stage files, the driver's `GroupCommitter` commits groups

Importing this package imports Ray (the sink is a Ray Data `Datasink`); the runner imports it at
the top, and nothing below the runner does.
"""

from __future__ import annotations

from pipeline.execution.cluster import ClusterTooSmall, check_fits, cluster_shape, stage_resources
from pipeline.execution.operators import (
    BLOCK_TARGET_BYTES,
    configure_data_context,
    from_windows,
    init_ray,
    map_actor,
    map_tasks,
    nest,
    release_free_heap,
    unnest,
)
from pipeline.execution.run_state import RunState, add_progress, report_progress, start_run_state
from pipeline.execution.sink import GroupCommitter, TranscriptSink, commit_blocks, flatten, stage_block

__all__ = [
    "BLOCK_TARGET_BYTES",
    "ClusterTooSmall",
    "GroupCommitter",
    "RunState",
    "TranscriptSink",
    "add_progress",
    "check_fits",
    "cluster_shape",
    "commit_blocks",
    "configure_data_context",
    "flatten",
    "from_windows",
    "init_ray",
    "map_actor",
    "map_tasks",
    "nest",
    "release_free_heap",
    "report_progress",
    "stage_block",
    "stage_resources",
    "start_run_state",
    "unnest",
]
