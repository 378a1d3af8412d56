"""Throughput benchmark (issue 5): Scriptorium against per-file Whisper baselines, one table per run.

    .venv/bin/python bench/throughput.py --quick                       # smoke: a few minutes
    .venv/bin/python bench/throughput.py --short-clips 200 --long-files 10 --long-min-s 300 --long-max-s 1200
    .venv/bin/python bench/throughput.py --quick --rows 2,3 --corpora short --scale 0 --json /tmp/r.json

Rows 1-7 are listed in bench/rows.py (each runs in a fresh subprocess, so model caches, Ray sessions
and peak memory are isolated).
All Whisper rows: the embedded Whisper base, CTranslate2 int8, 2 threads, beam = conf segment_stage.asr.beam_size,
greedy without temperature fallback, word timestamps on. The NeMo models are built here with random
weights at a real architecture's size (`--nemo-size`): their cost is what is measured, not their words.
Row 7 runs that model through NeMo's own `transcribe()` in one process (what a NeMo user would run).

Corpora are generated from ../shared/corpus into `--cache` (see bench/corpora.py) and reused.
The code: this file (arguments, the run), bench/rows.py (what each row runs, and running it),
bench/sampling.py (process-tree memory and CPU from /proc), bench/tables.py (the printed tables and
targets), bench/nemo_models.py (the NeMo models, shared with the tests).
Peak RSS: rows 1, 2 and 7 the process's own (ru_maxrss); Scriptorium rows the peak of the summed RSS of the
whole process tree (driver, GCS, raylet, every worker), sampled every 0.5 s. PSS (shared pages split
between processes, e.g. Ray's object store) is recorded in the JSON too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# bench/ is sys.path[0] when this file runs as a script: its modules are imported by their names
import corpora
from nemo_models import NEMO_SIZES
from rows import NEMO_CALL_ITEMS, NEMO_ROWS, WHISPER_BATCH, build_nemo, child_main, measure_row
from tables import FOOTNOTE, scaling_table, table, targets

REPO = Path(__file__).resolve().parents[1]


def git_state() -> str:
    """The pipeline code measured: commit, plus '+dirty' when the working tree has local changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "pipeline", "conf"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus", help="real speech to cut from")
    p.add_argument("--cache", type=Path, default=Path("/tmp/scriptorium-bench"), help="generated corpora, models, logs")
    p.add_argument("--short-clips", type=int, default=None, help="default 200 (quick: 24)")
    p.add_argument("--short-min-s", type=float, default=2.0)
    p.add_argument("--short-max-s", type=float, default=15.0)
    p.add_argument("--long-files", type=int, default=None, help="default 10 (quick: 2)")
    p.add_argument("--long-min-s", type=float, default=None, help="default 300 (quick: 60)")
    p.add_argument("--long-max-s", type=float, default=None, help="default 1200 (quick: 90)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke scale: 24 short clips, 2 long files of 60-90 s, NeMo 'small' (explicit flags win)",
    )
    p.add_argument("--rows", default="1,2,3,4,5,6,7")
    p.add_argument("--corpora", default="short,long")
    p.add_argument("--scale", type=int, default=4, help="also run the scale row on k x the short corpus (0: off)")
    p.add_argument("--scale-row", type=int, default=3)
    p.add_argument(
        "--scale-clips",
        type=int,
        default=None,
        help="short clips in the scaling run's 1x corpus (default: --short-clips; smaller keeps k x affordable)",
    )
    p.add_argument("--nemo-size", choices=sorted(NEMO_SIZES), default=None, help="default: large (quick: small)")
    p.add_argument(
        "--beam-size", type=int, default=None, help="default: segment_stage.asr.beam_size of conf/local.yaml"
    )
    p.add_argument("--override", action="append", help="extra dotted.key=value for Scriptorium rows")
    p.add_argument("--json", type=Path, default=None, help="write all results here")
    args = p.parse_args(argv)
    for key, full, quick in (
        ("short_clips", 200, 24),
        ("long_files", 10, 2),
        ("long_min_s", 300.0, 60.0),
        ("long_max_s", 1200.0, 90.0),
    ):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    args.nemo_size = args.nemo_size or ("small" if args.quick else "large")
    from pipeline.config import load_config

    if args.beam_size is None:
        args.beam_size = load_config(
            REPO / "conf" / "local.yaml", ["input.uri=x", "output.uri=y"]
        ).segment_stage.asr.beam_size
    # row 7's torch threads: the segment actor's (asr.cpu_threads, with the Scriptorium rows' overrides)
    args.asr_threads = load_config(
        REPO / "conf" / "local.yaml", ["input.uri=x", "output.uri=y", *(args.override or [])]
    ).segment_stage.asr.cpu_threads
    rows = [int(x) for x in args.rows.split(",") if x]
    which = [c for c in args.corpora.split(",") if c]
    work = args.cache
    (work / "logs").mkdir(parents=True, exist_ok=True)
    started = time.time()
    code = git_state()  # the pipeline changes under us in a shared checkout: say which code ran

    print(f"corpora under {work} (from {args.corpus}) ...", flush=True)
    sources = None  # each builder decodes the shared corpus only when its cached corpus is stale
    built: dict[str, corpora.CorpusInfo] = {}
    if "short" in which:
        built["short"] = corpora.build_short_clips(
            args.corpus,
            work / f"short-{args.short_clips}",
            args.short_clips,
            args.short_min_s,
            args.short_max_s,
            sources=sources,
        )
    if "long" in which:
        built["long"] = corpora.build_long_files(
            args.corpus,
            work / f"long-{args.long_files}-{args.long_min_s:g}-{args.long_max_s:g}",
            args.long_files,
            args.long_min_s,
            args.long_max_s,
            sources=sources,
        )
    for k, c in built.items():
        print(f"  {k}: {c.files} files, {c.audio_seconds:.0f} s audio, {c.path}")
    if any(r in NEMO_ROWS for r in rows) or (args.scale and args.scale_row in NEMO_ROWS):
        build_nemo(args, work)

    results = []
    for label, corpus in built.items():
        for row in rows:
            results.append(measure_row(row, corpus, label, args, work))
    scale = None
    if args.scale and "short" in built:
        n = args.scale_clips or args.short_clips
        base = (
            built["short"]
            if n == args.short_clips
            else corpora.build_short_clips(args.corpus, work / f"short-{n}", n, args.short_min_s, args.short_max_s)
        )
        one = next((r for r in results if r["row"] == args.scale_row and r["corpus"] == "short"), None)
        if one is None or base is not built["short"]:
            one = measure_row(args.scale_row, base, "short", args, work)
        big = corpora.scaled_copy(base, work / f"short-{n}-x{args.scale}", args.scale)
        many = measure_row(args.scale_row, big, f"short-x{args.scale}", args, work)
        scale = {"factor": args.scale, "row": args.scale_row, "one": one, "many": many}

    params = None
    if any(r in NEMO_ROWS for r in rows):
        params = json.loads((work / "models" / args.nemo_size / "models.json").read_text())["asr_params"]
    print()
    print(
        f"## Throughput ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, pipeline {code}, "
        f"command: bench/throughput.py {' '.join(argv)})"
    )
    print()
    print(table(results))
    print()
    print(
        FOOTNOTE.format(
            beam=args.beam_size,
            nemo=args.nemo_size,
            wb=WHISPER_BATCH,
            nb=NEMO_CALL_ITEMS,
            threads=args.asr_threads,
            params=f"{params / 1e6:.1f}M parameters" if params else "not run",
        )
    )
    if scale:
        print()
        print(f"## Scaling: row {args.scale_row} on 1x vs {args.scale}x the short-clip corpus")
        print()
        print(scaling_table(scale["one"], scale["many"], args.scale))
    print()
    print("## Targets")
    print("\n".join(targets(results, scale)))
    total = time.time() - started
    print(f"\nbenchmark took {total / 60:.1f} min")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "argv": argv,
                    "pipeline_code": code,
                    "cores": os.cpu_count(),
                    "beam_size": args.beam_size,
                    "nemo_size": args.nemo_size,
                    "asr_threads": args.asr_threads,
                    "nemo_asr_params": params,
                    "corpora": {k: c.to_json() for k, c in built.items()},
                    "rows": results,
                    "scaling": scale,
                    "targets": targets(results, scale),
                    "seconds": round(total, 1),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child_main(sys.argv[2:])
    else:
        sys.exit(main(sys.argv[1:]))
