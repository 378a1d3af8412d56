"""Will the plan ever run? Each stage's resource request against the cluster's shape.

Checked once Ray is up and before any data moves: a stage that asks for more than any node offers
would wait for resources forever, which a nightly job sees as a hang, not an error.
"""

from __future__ import annotations

import ray
from ray._private.state import state  # private, but Ray Data's own shuffle sizing reads it too

from pipeline.config import JobConfig, Resources
from pipeline.errors import ClusterTooSmall


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
