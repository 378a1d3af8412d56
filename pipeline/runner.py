"""The job, top to bottom: discover -> subtract the ledger -> decode -> recording stage -> segment
stage -> commit Parquet -> report.

Nothing here decodes audio or touches a model; it only composes stages (pipeline/stages/) through
the execution layer (pipeline/execution/: Ray operators, the cluster check, the run's state actor,
the sink and its group committer).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid

import pyarrow as pa

from pipeline.backends.registry import stitches_pieces
from pipeline.batching import estimated_seconds, small_pools, windows
from pipeline.config import JobConfig
from pipeline.discover import DiscoveryError, discover_table
from pipeline.errors import StorageFullError, storage_full, with_retries
from pipeline.execution import (
    TranscriptSink,
    check_fits,
    cluster_shape,
    from_windows,
    init_ray,
    map_actor,
    map_tasks,
    stage_resources,
    start_run_state,
)
from pipeline.export import record_input_fields
from pipeline.filter import apply_rules_after_run
from pipeline.fingerprint import job_fingerprint
from pipeline.ledger import Ledger
from pipeline.ledger.integrity import check as check_integrity, record_versions, repair as repair_damage
from pipeline.plan import Confirm, before_run
from pipeline.preflight import preflight
from pipeline.progress import Reporter
from pipeline.records import INPUT_SCHEMA, peak_rss_mb
from pipeline.report import TOTALS_COLUMNS, BlockSummary, OutputTotals, RunReport, build_report
from pipeline.report_html import render as render_html
from pipeline.stages.decode import decode_stream
from pipeline.stages.recording import RecordingStage
from pipeline.stages.segment import SegmentStage
from pipeline.storage import put_atomic
from pipeline.text import redact, safe
from pipeline.vocabulary import resolve as resolve_vocabulary

log = logging.getLogger(__name__)


def run(cfg: JobConfig, confirm: Confirm | None = None) -> RunReport:
    """Run the job. `confirm`: asked before a run redoes more than `output.confirm_redo_share` of
    the output (pipeline/plan.py; None: never asked)."""
    started = time.time()
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + "-" + uuid.uuid4().hex[:6]
    fingerprint = job_fingerprint(cfg, resolve_vocabulary(cfg.segment_stage.vocabulary))  # reads the terms file once
    preflight(cfg)  # input, output, models: a wrong setting stops here, before Ray or any model starts

    files = discover_table(cfg.input)  # Arrow rows, longest first: a million files fit in a driver
    if not files.num_rows:
        raise DiscoveryError(
            f"input {cfg.input.uri}: no audio files found (extensions {', '.join(cfg.input.extensions)})"
        )
    ledger = Ledger(cfg.output)
    lock = ledger.lock(run_id)  # OutputLockedError while another job holds this output
    try:
        try:
            # damaged data files moved aside and their recordings redone; log gaps reported (ledger/integrity.py)
            repaired = repair_damage(ledger, check_integrity(ledger))
            for said in repaired:
                log.warning(said)
            todo, plan = ledger.plan(files, fingerprint)
            cfg, notes = before_run(cfg, ledger, files, confirm, todo)  # why it redoes what; ask first; whose rules
            record_input_fields(cfg.output, files)  # a manifest's reference text etc., for exports and eval
            log.info("discovered %d files: %s", files.num_rows, plan)
            discovered = files.num_rows
            del files

            summary = BlockSummary()
            warnings: list[str] = [*repaired, *notes]
            if todo.num_rows:
                pools = windows(todo, cfg.pooling.window_audio_s, cfg.pooling.max_files)
                if said := _pooling_warning(cfg, todo, pools):
                    log.warning(said)
                    warnings.append(said)
                summary = _execute(cfg, todo, pools, run_id, fingerprint)
            ledger.maintain_if_due()
            rejudged = apply_rules_after_run(
                cfg.output,
                cfg.segment_stage.quality,
                skipped=plan.get("skipped", 0),
                given=cfg.given("segment_stage.quality"),
            )  # one rule set per output
            if rejudged:
                warnings.append(rejudged["note"])
            record_versions(ledger)  # a later loss of the newest log entries shows as a version gap
        except BaseException:
            _remove_temp_files(ledger)  # first: they may hold the space the lock's release needs
            raise
        finally:
            lock.release()

        report = build_report(
            cfg,
            run_id=run_id,
            fingerprint=fingerprint,
            discovered=discovered,
            plan=plan,
            summary=summary,
            run_warnings=warnings,
            wall_seconds=time.time() - started,
            driver_peak_rss_mb=peak_rss_mb(),
        )
        report.output_totals = _output_totals(ledger)
        body = redact(json.dumps(report.model_dump(), indent=2)).encode()  # no credential a message may hold
        with_retries(lambda: put_atomic(ledger.fs, ledger.path("report.json"), body))
        with_retries(lambda: put_atomic(ledger.fs, ledger.path("_ledger", "runs", f"{run_id}.json"), body))
        page = redact(render_html(report)).encode()
        with_retries(lambda: put_atomic(ledger.fs, ledger.path("report.html"), page))
    except Exception as exc:
        _remove_temp_files(ledger)
        if reason := storage_full(exc):  # one line, not the tracebacks of every layer it went through
            raise StorageFullError(_full_message(cfg, run_id, reason, lock)) from exc
        raise
    return report


def _output_totals(ledger: Ledger) -> OutputTotals | None:
    """The whole output's totals for the report (a no-op rerun still shows what the output holds);
    None, with a warning, if the tables cannot be read now: the run itself is done and committed."""
    try:
        return with_retries(lambda: OutputTotals.of(*(ledger.read(n, c) for n, c in TOTALS_COLUMNS.items())))
    except Exception:  # noqa: BLE001 - the report's extra section must not fail a committed run
        log.warning("report: the output's totals could not be read", exc_info=True)
        return None


#: The prefix `pipeline.storage.put_atomic` gives the temp file it renames into place (local disks).
TEMP_PREFIX = ".tmp-"


def _remove_temp_files(ledger: Ledger) -> int:
    """Remove the temp files of writes that failed midway (a full disk leaves one per failed write)
    from a local output, once the run failed; the output's lock says that no other job writes there.
    The Delta logs are not walked (delta-rs cleans up its own). Returns how many were removed."""
    protocol = ledger.fs.protocol[0] if isinstance(ledger.fs.protocol, (tuple, list)) else ledger.fs.protocol
    if protocol not in ("file", "local") or not os.path.isdir(ledger.root):
        return 0
    removed = 0
    for folder, dirs, names in os.walk(ledger.root):
        dirs[:] = [d for d in dirs if d != "_delta_log"]
        for name in names:
            if name.startswith(TEMP_PREFIX):
                try:
                    os.unlink(os.path.join(folder, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    if removed:
        log.debug("removed %d temporary files of failed writes", removed)
    return removed


def _full_message(cfg: JobConfig, run_id: str, reason: str, run_lock) -> str:
    """The one line a run that ran out of space ends with: what happened, what is kept, what to do."""
    lock = (
        "the output's lock is released"
        if run_lock.released
        else "the output's lock could not be released (the next run takes it over: at once on this host, "
        f"after {run_lock.stale_after_s:.0f} s elsewhere)"
    )
    return (
        f"run {run_id} stopped: storage full ({reason}) writing output {safe(cfg.output.uri)}; the recordings "
        f"committed so far are kept and temporary files removed, {lock}. Free space (or raise the quota) and "
        f"run again: it does the rest, each recording once"
    )


def _pooling_warning(cfg: JobConfig, todo: pa.Table, pools: list[tuple[int, int]]) -> str | None:
    """One line when bucketing is on and the pooling windows hold less than two model calls of
    audio (`batching.small_pools`). Not on a GPU that sizes calls by its memory: that budget is
    known only inside the segment actor."""
    seg = cfg.segment_stage
    if not seg.batching.enabled or (cfg.models.use_gpu(seg.resources) and seg.batching.max_padded_s_per_gib):
        return None
    est = estimated_seconds(todo)
    median = small_pools([float(est[o : o + n].sum()) for o, n in pools], seg.batching.max_padded_s)
    if median is None:
        return None
    return (
        f"pooling: a window holds a median {median:.0f} s of audio, less than two model calls "
        f"(segment_stage.batching.max_padded_s: {seg.batching.max_padded_s:g} s); bucketing sorts within a window, "
        f"so calls stay small: raise pooling.window_audio_s ({cfg.pooling.window_audio_s:g}) "
        f"or pooling.max_files ({cfg.pooling.max_files})"
    )


def _execute(
    cfg: JobConfig, todo: pa.Table, pools: list[tuple[int, int]], run_id: str, fingerprint: str
) -> BlockSummary:
    init_ray(cfg.ray)
    check_fits(stage_resources(cfg), *cluster_shape())  # refuse now, rather than wait forever for resources
    # One block (and one row: see pipeline/execution/operators.py) per pooling window, and every stage
    # takes one window per call: the segment stage buckets the segments of a window's recordings
    # together (pipeline/batching.py), and a long file (a window of its own) flows on to ASR as soon as
    # it is decoded and segmented, not after its neighbours.
    ds = from_windows(todo.select(INPUT_SCHEMA.names), pools)  # Arrow slices: no Python object per file
    diar = cfg.recording_stage.diarization
    # A long recording goes in pieces (pipeline/pieces.py) unless its speakers could not be matched
    # across them: then it is held whole, as before pieces existed.
    decode_cfg = cfg.decode if stitches_pieces(diar) else cfg.decode.model_copy(update={"piece_s": 0.0})
    state, snapshot = start_run_state()  # progress counts, the pieces registry, staged blocks: one actor
    decode_kwargs = dict(
        cfg=decode_cfg, storage=cfg.input.storage, channel_energy=diar.enabled and diar.backend == "channels"
    )  # decode keeps per-channel energy
    feed = None
    if cfg.decode.in_recording_stage:  # a small machine: decode in the recording stage's actor
        feed = (decode_stream, "decoded", decode_kwargs)
    else:
        ds = map_tasks(ds, decode_stream, cfg.decode.resources, "decoded", progress=state, **decode_kwargs)
    ds = map_actor(
        ds, RecordingStage.from_config, cfg.recording_stage.resources, "segmented", feed=feed, progress=state, job=cfg
    )
    seg = cfg.segment_stage
    asr_threads = None if cfg.models.use_gpu(seg.resources) else seg.asr.cpu_threads  # on a CPU: ASR's own count
    ds = map_actor(
        ds,
        SegmentStage.from_config,
        seg.resources,
        "transcribed",
        last=True,
        threads=asr_threads,
        progress=state,
        windows_at_once=seg.windows_at_once,
        job=cfg,
    )
    # recordings with older rows in the output: their group commits replace those rows
    replacing = todo.filter(todo.column("replaces")).column("recording_id").to_pylist()
    sink = TranscriptSink(cfg.output, run_id, fingerprint, diar, state=state, replacing=replacing)
    progress = Reporter(snapshot, total_files=todo.num_rows, interval_s=cfg.progress.log_interval_s).start()
    try:
        ds.write_datasink(sink, ray_remote_args={"num_cpus": 0.1}, concurrency=cfg.output.writers)
    finally:
        progress.stop()
    return sink.summary
