"""Where the CPU goes besides the models (issue 29, item 2): each stage of the pipeline run in this
one process, without Ray, on the simulated accelerator (pipeline/backends/simulated.py, holds of ~0 s),
then the same files through the whole pipeline on a local Ray in a cgroup. The difference is what
Ray costs: scheduling, the object store, serialisation between processes, idle workers, its daemons.

    .venv/bin/python bench/cpu_breakdown.py                      # 400 and 1,200 clips, conf/local.yaml's pooling
    .venv/bin/python bench/cpu_breakdown.py --preset 8x          # conf/nemo-gpu-8x.yaml's pooling

Two sizes, and the table is the margin between them (the fixed start-up of Ray and the workers
cancels out): CPU ms per recording and audio seconds per CPU second, first of each stage in one
process (decode, the recording stage's VAD hand-off and utterance cutting, the segment stage's
packing, ASR hand-off, words and quality, the window hand-offs, the sink's flatten, summary and
Parquet staging, the group commit), then of each process of the real run (by its Ray name), and the
whole run's process tree from a cgroup. CPU is this process's `time.process_time` per stage (decode's
native threads included), /proc per process, and the cgroup's `cpuacct.usage` for the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.fleet import SIMULATED, CpuGroup, poolings, run_light  # noqa: E402 - after the path

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
    cpu = dict.fromkeys(
        (
            "discover + plan",
            "decode",
            "recording stage",
            "segment stage",
            "window hand-offs",
            "sink: flatten, summary, stage",
            "group commit",
        ),
        0.0,
    )

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
    """The same files through `scriptorium run` on a local Ray, its process tree in a cgroup:
    the cgroup's CPU seconds, and each process's (by its Ray name) read from /proc every 0.5 s."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_TMPDIR=tempfile.mkdtemp(prefix="cbd", dir="/tmp"))
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "run",
        str(REPO / "conf" / "local.yaml"),
        f"input.uri={folder}",
        f"output.uri={out}",
        *overrides,
    ]
    group = CpuGroup(f"scriptorium-breakdown-{os.getpid()}-{out.name}")
    with group:
        sampled = run_light(group.wrap(cmd), out.parent / f"{out.name}.log", env, group, interval_s=0.5)
        cpu = group.seconds()
    if sampled["returncode"] != 0:
        raise SystemExit(f"run failed ({sampled['returncode']}): see {out.parent / f'{out.name}.log'}")
    return {"cpu": cpu, "wall": sampled["elapsed_s"], "by_process": sampled["by_process"]}


def _label(name: str) -> str:
    """A process's row in the table: the stage it serves, or what part of Ray it is."""
    for needle, label in (
        ("RecordingStage", "run: recording actor (decode inside)"),
        ("SegmentStage", "run: segment actor"),
        ("Write", "run: write tasks"),
        ("RunState", "run: RunState actor (progress, pieces, staged blocks)"),
    ):
        if needle in name:
            return label
    if name in ("python", "scriptorium") or name.endswith("python"):
        return "run: driver (plan, Ray Data's executor, committer, progress)"
    return "run: Ray's own processes (GCS, raylet, agents, idle workers)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", default="400,1200", help="two sizes: the margin between them is the table")
    ap.add_argument("--preset", choices=("local", "8x"), default="local", help="whose pooling")
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/scriptorium-bench"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not CpuGroup.available():
        raise SystemExit("needs a writable cgroup v1 cpuacct hierarchy (root): see ../shared/notes/environment.md")
    small, large = (int(x) for x in args.clips.split(","))
    overrides = [*SIMULATED, *FAST, *poolings()[args.preset]]
    work = Path(tempfile.mkdtemp(prefix="breakdown-"))
    res = {}
    try:
        for n in (small, large):
            folder = _clips(n, args.cache, args.corpus)
            res[n] = {
                "inproc": in_process(folder, overrides, work / f"inproc-{n}"),
                "run": whole_run(folder, overrides, work / f"run-{n}"),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    d_rec = res[large]["inproc"]["recordings"] - res[small]["inproc"]["recordings"]
    d_audio = res[large]["inproc"]["audio_s"] - res[small]["inproc"]["audio_s"]
    rows: dict[str, float] = {}
    for name in res[large]["inproc"]["cpu"]:
        rows[f"in one process: {name}"] = res[large]["inproc"]["cpu"][name] - res[small]["inproc"]["cpu"][name]
    by = {n: {} for n in (small, large)}
    for n in (small, large):
        for proc, sec in res[n]["run"]["by_process"].items():
            by[n][_label(proc)] = by[n].get(_label(proc), 0.0) + sec
    for label in sorted(set(by[small]) | set(by[large])):
        rows[label] = by[large].get(label, 0.0) - by[small].get(label, 0.0)
    total = res[large]["run"]["cpu"] - res[small]["run"]["cpu"]
    rows["run: whole process tree (cgroup)"] = total
    print(
        f"\nmargin of {large} over {small} short clips ({d_rec} recordings, {d_audio:.0f} s of audio), pooling of "
        f"{args.preset}, simulated accelerator; whole runs {res[small]['run']['cpu']:.1f} and "
        f"{res[large]['run']['cpu']:.1f} CPU s; load {os.getloadavg()[0]:.1f}"
    )
    print("| part | CPU s | ms per recording | audio s per CPU s | share of the run |")
    print("|---|---|---|---|---|")
    for name, sec in rows.items():
        rate = f"{d_audio / sec:,.0f}" if sec > 0 else "-"
        print(f"| {name} | {sec:.2f} | {1000 * sec / d_rec:.2f} | {rate} | {100 * sec / total:.0f}% |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "clips": [small, large],
                    "preset": args.preset,
                    "margin": rows,
                    "recordings": d_rec,
                    "audio_s": d_audio,
                    "runs": res,
                },
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
