"""Where the CPU goes besides the models (issue 29, item 2): each stage of the pipeline run in this
one process, without Ray, on the simulated accelerator (pipeline/backends/simulated.py, holds of ~0 s),
then the same files through the whole pipeline on a local Ray in a cgroup. The difference is what
Ray costs: scheduling, the object store, serialisation between processes, idle workers, its daemons.

    .venv/bin/python bench/cpu_breakdown.py --clips 400                     # conf/local.yaml's pooling
    .venv/bin/python bench/cpu_breakdown.py --clips 400 --preset 8x         # conf/nemo-gpu-8x.yaml's pooling

Prints one table: CPU ms per recording and audio seconds per CPU second for decode, the recording
stage (VAD hand-off and utterance cutting), the segment stage (packing, ASR hand-off, words,
quality), the sink (flatten, report summary, Parquet staging) and the group commit, then the whole
run measured by the cgroup, and Ray's share as the rest. CPU is this process's `time.process_time`
per stage (the native decode threads included) and the cgroup's `cpuacct.usage` for the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.fleet import SIMULATED, CpuGroup, poolings  # noqa: E402 - after the path

FAST = ["recording_stage.simulated_rtfx=1000000", "segment_stage.simulated_rtfx=1000000"]


def _clips(n: int, cache: Path, corpus: Path) -> Path:
    """n short clips (the bench's short corpus, copied to reach n) in a folder of their own."""
    from bench import corpora

    base = min(n, 200)
    info = corpora.build_short_clips(corpus, cache / f"short-{base}", base)
    src = sorted(Path(info.path).glob("*.flac"))
    dest = cache / f"breakdown-{n}"
    if not dest.exists() or len(list(dest.glob("*.flac"))) != n:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for i in range(n):
            shutil.copyfile(src[i % len(src)], dest / f"c{i // len(src)}-{src[i % len(src)].name}")
    return dest


def in_process(folder: Path, overrides: list[str], out: Path) -> dict:
    """Each stage over every pooling window, in this process: CPU seconds per stage."""
    from pipeline.batching import windows
    from pipeline.config import load_config
    from pipeline.discover import discover_table
    from pipeline.execution.operators import nest, unnest
    from pipeline.execution.sink import commit_blocks, stage_block
    from pipeline.fingerprint import job_fingerprint
    from pipeline.ledger import Ledger
    from pipeline.records import INPUT_SCHEMA
    from pipeline.stages.decode import decode_batch
    from pipeline.stages.recording import RecordingStage
    from pipeline.stages.segment import SegmentStage

    cfg = load_config(REPO / "conf" / "local.yaml", [f"input.uri={folder}", f"output.uri={out}", *overrides])
    fp = job_fingerprint(cfg, {})
    cpu = dict.fromkeys(("discover + plan", "decode", "recording stage", "segment stage", "window hand-offs",
                         "sink: flatten, summary, stage", "group commit"), 0.0)

    def timed(key: str, fn):
        t0 = time.process_time()
        out = fn()
        cpu[key] += time.process_time() - t0
        return out

    todo = timed("discover + plan", lambda: Ledger(cfg.output).plan(discover_table(cfg.input), fp)[0])
    rec_stage, seg_stage = RecordingStage.from_config(cfg), SegmentStage.from_config(cfg)
    led = Ledger(cfg.output)
    staged, audio = [], 0.0
    rows = todo.select(INPUT_SCHEMA.names)
    for offset, length in windows(todo, cfg.pooling.window_audio_s, cfg.pooling.max_files):
        window = timed("window hand-offs", lambda: unnest(nest(rows.slice(offset, length))))
        decoded = timed("decode", lambda: decode_batch(window, cfg.decode, cfg.input.storage))
        decoded = timed("window hand-offs", lambda: unnest(nest(decoded)))
        segmented = timed("recording stage", lambda: rec_stage(decoded))
        segmented = timed("window hand-offs", lambda: unnest(nest(segmented)))
        transcribed = timed("segment stage", lambda: seg_stage(segmented))
        staged.append(timed("sink: flatten, summary, stage", lambda: stage_block(led, transcribed, "bench", fp)))
        audio += sum(d or 0.0 for d in transcribed.column("duration").to_pylist())
    timed("group commit", lambda: commit_blocks(led, staged, replacing=()))
    return {"cpu": cpu, "recordings": todo.num_rows, "audio_s": audio, "windows": len(staged)}


def whole_run(folder: Path, overrides: list[str], out: Path) -> dict:
    """The same files through `scriptorium run` on a local Ray, its process tree in a cgroup."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_TMPDIR=tempfile.mkdtemp(prefix="cbd", dir="/tmp"))
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(REPO / "conf" / "local.yaml"), f"input.uri={folder}",
           f"output.uri={out}", *overrides]
    group = CpuGroup(f"scriptorium-breakdown-{os.getpid()}")
    t0 = time.perf_counter()
    with group:
        proc = subprocess.run(group.wrap(cmd), cwd=REPO, env=env, capture_output=True, text=True)
        cpu = group.seconds()
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {"cpu": cpu, "wall": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--preset", choices=("local", "8x"), default="local", help="whose pooling")
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/scriptorium-bench"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    folder = _clips(args.clips, args.cache, args.corpus)
    overrides = [*SIMULATED, *FAST, *poolings()[args.preset]]
    work = Path(tempfile.mkdtemp(prefix="breakdown-"))
    try:
        inproc = in_process(folder, overrides, work / "inproc")
        run = whole_run(folder, overrides, work / "run") if CpuGroup.available() else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n, audio = inproc["recordings"], inproc["audio_s"]
    rows = dict(inproc["cpu"])
    stages_total = sum(rows.values())
    if run is not None:
        rows["Ray: scheduling, object store, daemons (run - stages)"] = max(0.0, run["cpu"] - stages_total)
        rows["whole run (cgroup)"] = run["cpu"]
    print(f"\n{n} recordings, {audio:.0f} s of audio, {inproc['windows']} windows, pooling of {args.preset}; "
          f"load {os.getloadavg()[0]:.1f}")
    print("| part | CPU s | ms per recording | audio s per CPU s | share of the run |")
    print("|---|---|---|---|---|")
    total = run["cpu"] if run is not None else stages_total
    for name, sec in rows.items():
        rate = audio / sec if sec > 0 else float("inf")
        print(f"| {name} | {sec:.2f} | {1000 * sec / n:.2f} | {rate:,.0f} | {100 * sec / total:.0f}% |")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"corpus": str(args.corpus), "cache": str(args.cache),
                                                               "json": str(args.json)},
                                         "recordings": n, "audio_s": audio, "cpu": rows,
                                         "run": run}, indent=2, default=str))


if __name__ == "__main__":
    main()
