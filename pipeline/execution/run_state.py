"""The run's bookkeeping in one actor: progress counts per stage, the pieces of long recordings the
sink has staged, and Ray application metrics.

The stages and the sink report to it fire-and-forget; the driver polls it for the progress display
(pipeline/progress.py).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import pyarrow as pa
import ray
from ray.util.metrics import Counter

from pipeline.pieces import PieceRegistry
from pipeline.progress import Counts

log = logging.getLogger(__name__)


class StagedMailbox:
    """Blocks the write tasks have staged and the driver's committer has not taken yet
    (pipeline/execution/sink.py). A mailbox rather than a call to the driver: the driver is no actor."""

    def __init__(self) -> None:
        self.staged_blocks: list[Any] = []  # (PieceRegistry's `staged` is its pieces)

    def stage(self, block: Any) -> None:
        self.staged_blocks.append(block)

    def take_staged(self) -> list[Any]:
        out, self.staged_blocks = self.staged_blocks, []
        return out


class RunState(Counts, PieceRegistry, StagedMailbox):
    """The run's bookkeeping in one actor (0 CPUs): the stages' progress counts (pipeline/progress.py),
    the pieces of long recordings the sink has staged (pipeline/pieces.py), and the staged blocks
    waiting for the committer. One actor rather than one each, because every Ray actor is a Python
    process of its own (~120 MB resident each in bench/throughput.py's process tree)."""

    def __init__(self) -> None:
        Counts.__init__(self)
        PieceRegistry.__init__(self)
        StagedMailbox.__init__(self)


def start_run_state() -> tuple[Any, Callable[[], dict[str, tuple[int, float]]]]:
    """Start this run's `RunState` actor: its handle (the stages' `progress` and the sink's piece
    registry; it lives while the driver holds it) and the driver's snapshot function for
    `pipeline.progress.Reporter`. A fresh actor per run, handed to the stages rather than looked up
    by name: a worker that outlives a run (Ray reuses task workers) never counts into the last one's."""
    actor = ray.remote(num_cpus=0)(RunState).remote()
    return actor, lambda: ray.get(actor.snapshot.remote(), timeout=30)


def report_progress(progress: Any, stage: str, recordings: pa.Table) -> None:
    """`stage` finished these recordings (see `add_progress`). A piece of a long recording adds its
    seconds; the recording counts as a file once, with its last piece (pipeline/pieces.py)."""
    if recordings.num_rows:
        add_progress(
            progress,
            stage,
            sum(ends_recording(recordings)),
            sum(d or 0.0 for d in recordings.column("duration").to_pylist()),
        )


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
