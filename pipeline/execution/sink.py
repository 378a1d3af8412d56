"""Delta sink: write tasks stage their block's files, one committer in the driver commits groups.

`TranscriptSink.write()` runs per block on a worker: it joins the pieces of long recordings,
flattens the nested per-recording rows into the `segments` and `recordings` tables (schemas in
pipeline/records.py and pipeline/ledger/tables.py), PUTs one Parquet file per table
(`pipeline.ledger.staging.stage`) and hands a `StagedBlock` to the run's `RunState` actor. It
commits nothing.

`GroupCommitter` runs on a thread of the driver: every `output.commit_interval_s`, or as soon as
`output.commit_max_recordings` recordings are staged, it commits every staged block in one Delta
transaction on `segments` and then one on `recordings` (`pipeline.ledger.staging.commit_group`:
exactly once per block). At the end of the write, the blocks Ray Data returns are offered again,
so a block whose hand-off to the actor was lost is committed all the same. A crash costs the blocks
staged since the last group commit: their files are not in the log, and the next run redoes them.

A long recording arrives as pieces (pipeline/pieces.py). Its pieces are staged under `_pieces/` until
the last one is in; the write task that completes it joins them and stages the recording once, with
its block: a reader never sees part of a recording.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from typing import Any, Collection, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import Datasink, WriteResult

from pipeline.config import DiarizationConfig, OutputConfig
from pipeline.errors import with_retries
from pipeline.execution.run_state import add_progress
from pipeline.ledger import RECORDINGS_TABLE_SCHEMA, SEGMENTS_TABLE_SCHEMA, Ledger, write_id_for
from pipeline.ledger.staging import StagedBlock, commit_group, repair_dangling_group, stage
from pipeline.pieces import PieceRegistry, join
from pipeline.report import BlockSummary
from pipeline.search import keep_up
from pipeline.storage import put_atomic

log = logging.getLogger(__name__)

#: Where the sink stages the pieces of long recordings until each recording is whole (pipeline/pieces.py).
PIECES_DIR = "_pieces"


def flatten(table: pa.Table, fingerprint: str, run_id: str = "", write_id: str = "") -> tuple[pa.Table, pa.Table]:
    """Per-recording rows with nested segments -> (segments table, recordings table), as committed.

    Column by column in Arrow (no Python object per row or segment): a write task of a GPU fleet
    flattens thousands of recordings a second."""
    n = table.num_rows
    if "segments" in table.column_names:
        segs = table.column("segments").combine_chunks()
    else:
        segs = pa.nulls(n, pa.list_(SEGMENTS_TABLE_SCHEMA.field("text").type))
    parents = pc.list_parent_indices(segs)
    flat = pc.list_flatten(segs)
    m = len(flat)
    seg_fields = (
        {flat.type.field(i).name for i in range(flat.type.num_fields)} if pa.types.is_struct(flat.type) else set()
    )
    consts = {"fingerprint": fingerprint, "write_id": write_id}
    seg_cols = []
    for field in SEGMENTS_TABLE_SCHEMA:
        if field.name in ("recording_id", "uri"):
            col = table.column(field.name).take(parents)
        elif field.name in consts:
            col = pa.repeat(pa.scalar(consts[field.name], field.type), m)
        elif field.name in seg_fields:
            col = flat.field(field.name)
        else:
            col = pa.nulls(m, field.type)
        seg_cols.append(col.cast(field.type))
    counts = pc.fill_null(pc.list_value_length(segs), 0)
    now = pa.scalar(int(time.time() * 1e6), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    rec_consts = {"fingerprint": fingerprint, "run_id": run_id, "write_id": write_id}
    rec_cols = []
    for field in RECORDINGS_TABLE_SCHEMA:
        if field.name == "num_segments":
            col = counts
        elif field.name in rec_consts:
            col = pa.repeat(pa.scalar(rec_consts[field.name], field.type), n)
        elif field.name == "committed_at":
            col = pa.repeat(now, n)
        elif field.name in table.column_names:
            col = table.column(field.name)
        else:
            col = pa.nulls(n, field.type)
        rec_cols.append(col.cast(field.type))
    return pa.Table.from_arrays(seg_cols, schema=SEGMENTS_TABLE_SCHEMA), pa.Table.from_arrays(
        rec_cols, schema=RECORDINGS_TABLE_SCHEMA
    )


def stage_block(ledger: Ledger, table: pa.Table, run_id: str, fingerprint: str) -> StagedBlock:
    """Flatten a block of whole recordings and stage both tables' files (no commit)."""
    ids = table.column("recording_id").to_pylist()
    write_id = write_id_for(run_id, ids)
    segments, recordings = flatten(table, fingerprint, run_id, write_id)
    summary = BlockSummary.of(table)
    files = {
        "segments": stage(ledger, "segments", segments, write_id),
        "recordings": stage(ledger, "recordings", recordings, write_id),
    }
    return StagedBlock(
        write_id=write_id, recording_ids=ids, files=files, audio_seconds=summary.audio_seconds, summary=summary
    )


def commit_blocks(
    ledger: Ledger, blocks: list[StagedBlock], replacing: Collection[str], group_id: str = "", verify: bool = True
) -> int:
    """One group: `segments` first, then `recordings` (the commit the next run trusts). Returns the
    blocks newly committed to `recordings`. `verify`: see `commit_group` (a run's committer knows
    what it committed and passes False)."""
    group_id = group_id or uuid.uuid4().hex[:12]
    _commit(ledger, "segments", blocks, replacing, group_id, verify)
    return _commit(ledger, "recordings", blocks, replacing, group_id, verify)


def write_table(
    cfg: OutputConfig, table: pa.Table, run_id: str, fingerprint: str, replacing: Collection[str] | None = None
) -> StagedBlock:
    """Stage and commit one block of per-recording rows now, as one group (a script or a test that
    writes rows without a run). `replacing` None: the `recordings` table says which ids have rows."""
    ledger = Ledger(cfg)
    if replacing is None:
        replacing = set(ledger.read("recordings", ["recording_id"]).column("recording_id").to_pylist())
    block = stage_block(ledger, table, run_id, fingerprint)
    commit_blocks(ledger, [block], replacing)
    return block


def _commit(
    ledger: Ledger, name: str, blocks: list[StagedBlock], replacing: Collection[str], group_id: str, verify: bool = True
) -> int:
    """One Delta transaction on table `name` (a seam: tests hold the committer between its two commits here)."""
    return commit_group(ledger, name, blocks, replacing, group_id, verify)


class GroupCommitter:
    """The run's one committer: a driver thread that takes staged blocks from the `RunState` actor
    and commits them in groups (see the module docstring). `replacing`: the recording ids of this
    run that have older rows in the output (the plan's changed and retried ones)."""

    def __init__(self, cfg: OutputConfig, state: Any, replacing: Collection[str] = (), poll_s: float = 0.5):
        self.cfg, self.state, self.replacing, self.poll_s = cfg, state, frozenset(replacing), poll_s
        self.ledger = Ledger(cfg)
        self.pending: list[StagedBlock] = []
        self.committed: set[str] = set()  # write ids
        self.groups = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scriptorium-committer", daemon=True)

    def start(self) -> "GroupCommitter":
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._take()
                if self.due():
                    self.flush()
            except Exception as exc:  # noqa: BLE001 - kept, and raised by finish(): the run fails loudly
                log.exception("group commit failed")
                self.error = exc
                return

    def _take(self) -> None:
        if self.state is None:
            return
        try:
            blocks = ray.get(self.state.take_staged.remote(), timeout=60)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
            # the actor went with its node: what it held comes back with Ray Data's write returns
            log.warning(
                "run state unreachable (%s); staged blocks are committed at the end of the write", type(exc).__name__
            )
            self.state = None
            return
        self.offer(blocks)

    def offer(self, blocks: Iterable[StagedBlock]) -> None:
        """Blocks to commit; one already committed or already pending (by write id) is dropped."""
        pending = {b.write_id for b in self.pending}
        for b in blocks:
            if b.write_id not in self.committed and b.write_id not in pending:
                self.pending.append(b)
                pending.add(b.write_id)

    def due(self) -> bool:
        """A group is due: enough recordings staged, or the oldest staged block waited long enough."""
        if not self.pending:
            return False
        staged = sum(len(b.recording_ids) for b in self.pending)
        oldest = min(b.staged_at for b in self.pending)
        return staged >= self.cfg.commit_max_recordings or time.time() - oldest >= self.cfg.commit_interval_s

    def flush(self) -> None:
        """Commit everything pending as one group."""
        if not self.pending:
            return
        group = self.pending
        # no look-up of each block's app transaction: this committer offers a block once (`offer`)
        commit_blocks(self.ledger, group, self.replacing, verify=False)
        self.groups += 1
        self.pending = []
        self.committed.update(b.write_id for b in group)
        keep_up(self.cfg, self.ledger)  # the search index reads the files this group added (pipeline/search.py)
        add_progress(
            self.state, "committed", sum(len(b.recording_ids) for b in group), sum(b.audio_seconds for b in group)
        )

    def finish(self, blocks: Iterable[StagedBlock]) -> None:
        """End of the write: stop the thread, take what is left (the actor's and Ray's returns), commit it."""
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise self.error
        self._take()
        self.offer(blocks)
        self.flush()

    def abandon(self) -> None:
        """The write failed: stop committing (what is staged and not committed is redone next run)."""
        self._stop.set()
        self._thread.join(timeout=60)


class TranscriptSink(Datasink[StagedBlock]):
    def __init__(
        self,
        cfg: OutputConfig,
        run_id: str,
        fingerprint: str,
        diarization: DiarizationConfig | None = None,
        state: Any = None,
        replacing: Collection[str] = (),
    ):
        """`diarization`: the job's, to match the speakers of a long recording's pieces (pipeline/pieces.py).
        `state`: the run's `RunState` actor (piece registry, staged-block mailbox, progress); without
        one the sink starts a registry actor of its own and commits only at the end of the write.
        `replacing`: recording ids with older rows in the output (`GroupCommitter`)."""
        self.cfg, self.run_id, self.fingerprint = cfg, run_id, fingerprint
        self.diarization = diarization if diarization is not None and diarization.enabled else None
        self.summary = BlockSummary()
        self.progress = self.registry = state
        self.replacing = frozenset(replacing)
        self.own_registry = False  # started in on_write_start: killed in on_write_complete
        self.committer: GroupCommitter | None = None  # the driver's; never sent to write tasks

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["committer"] = None  # a thread stays in the driver
        state["replacing"] = frozenset()  # only the committer needs it
        return state

    def get_name(self) -> str:
        return "Transcripts"

    def on_write_start(self, schema=None) -> None:
        """Create both tables once, in the driver, so parallel write tasks never race to create them;
        delete what a dead run left between its two commits; drop pieces staged by a run that died
        (the output's lock says no other run is writing); start the committer."""
        led = Ledger(self.cfg)
        for name in ("segments", "recordings"):
            led.ensure_schema(name)
        repair_dangling_group(led)
        _clear_pieces(led)
        # the handle travels with the sink to the write tasks (and keeps the actor alive until the end)
        if self.registry is None:
            self.registry, self.own_registry = ray.remote(num_cpus=0)(PieceRegistry).remote(), True
        self.committer = GroupCommitter(self.cfg, None if self.own_registry else self.progress, self.replacing).start()

    def write(self, blocks: Iterable[Block], ctx) -> StagedBlock | None:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        table = self._join_pieces(pa.concat_tables(tables)) if tables else None
        if table is None or not table.num_rows:  # nothing, or only pieces of recordings not yet whole
            return None
        block = stage_block(Ledger(self.cfg), table, self.run_id, self.fingerprint)
        if self.progress is not None and not self.own_registry:
            self.progress.stage.remote(block)  # fire-and-forget: the end-of-write flush has it too
        return block

    def on_write_complete(self, write_result: WriteResult[StagedBlock | None]) -> None:
        blocks = [b for b in write_result.write_returns if b is not None]
        self.committer.finish(blocks)
        self.summary = sum((b.summary for b in blocks), BlockSummary())
        self._stop_registry()
        _clear_pieces(Ledger(self.cfg))

    def on_write_failed(self, error: Exception) -> None:
        if self.committer is not None:
            self.committer.abandon()
        self._stop_registry()

    def _stop_registry(self) -> None:
        if self.own_registry:
            ray.kill(self.registry)
            self.registry, self.own_registry = None, False

    def _join_pieces(self, table: pa.Table) -> pa.Table:
        """The block's whole recordings, plus every long recording that one of its pieces completes.

        Each piece is staged (a one-row Parquet file under `_pieces/`) before the run's registry is
        told; the task whose piece completes a recording reads them all back and joins them into one
        row (pipeline/pieces.py `join`), which is then committed like a short recording's."""
        if "piece" not in table.column_names or table.column("piece").null_count == table.num_rows:
            return table
        is_piece = pc.is_valid(table.column("piece"))
        pieces, whole = table.filter(is_piece), table.filter(pc.invert(is_piece))
        led = Ledger(self.cfg)
        registry = self.registry
        done = []
        for i in range(pieces.num_rows):
            one = pieces.slice(i, 1)
            rid, k, last = (one.column(c)[0].as_py() for c in ("recording_id", "piece", "last_piece"))
            folder = led.path(PIECES_DIR, self.run_id, rid)
            body = _parquet_bytes(one)
            with_retries(lambda: put_atomic(led.fs, f"{folder}/{k:06d}.parquet", body))
            if ray.get(registry.add_piece.remote(rid, k, bool(last))):
                done.append(folder)
        joined = []
        for folder in done:
            files = sorted(with_retries(lambda: led.fs.ls(folder, detail=False)))
            rows = [
                r
                for f in files
                for r in pq.read_table(io.BytesIO(with_retries(lambda: led.fs.cat_file(f)))).to_pylist()
            ]
            joined.append(join(rows, self.diarization))
        if joined:
            whole = pa.concat_tables([whole, pa.Table.from_pylist(joined, schema=table.schema)])
        return whole


def _clear_pieces(led: Ledger) -> None:
    """Remove everything staged under `_pieces/` (at a run's start: a dead run's; at its end: its own)."""
    folder = led.path(PIECES_DIR)
    with_retries(lambda: led.fs.rm(folder, recursive=True) if led.fs.exists(folder) else None)


def _parquet_bytes(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()
