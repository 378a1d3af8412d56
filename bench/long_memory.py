"""Memory per stage against recording length (issue 16): a 1 h and a 4 h recording, whole and in pieces.

    .venv/bin/python bench/long_memory.py                  # 1 h and 4 h, pieces (default) and whole
    .venv/bin/python bench/long_memory.py --hours 1,4 --modes pieces

Each recording joins speech clips of ../shared/corpus with near-silence between them (`--speech-share`
of it speech, so that a 4 h file costs minutes of ASR on a CPU, not hours), written as 16 kHz FLAC
block by block. Each (length, mode) is one `scriptorium run conf/local.yaml` in a subprocess into a
fresh output; while it runs, every process of it is sampled (/proc, 0.2 s) for its private memory
(RssAnon), by stage; its report.json gives each stage's ru_maxrss, which also counts the object
store's shared pages that a worker maps to read a block in place (so it grows with what a worker has
read, not with what it holds). "whole"
sets `decode.piece_s=0` (every recording decoded into one buffer, as before pieces existed).
The table puts 4 h next to 1 h: the issue's target is every stage within 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.corpora import SR, load_sources  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus"
STAGES = ["driver_peak_rss_mb", "decode_peak_rss_mb", "recording_stage_peak_rss_mb", "segment_stage_peak_rss_mb"]


def build(path: Path, hours: float, speech_share: float = 0.15, seed: int = 3) -> None:
    """A `hours`-long FLAC of corpus speech clips and near-silence, written as it is made."""
    import soundfile as sf

    if path.exists():
        return
    clips = [audio for _, audio in load_sources(CORPUS)]
    rng = np.random.default_rng(seed)
    total, written = int(hours * 3600 * SR), 0
    tmp = path.with_suffix(".tmp.flac")
    with sf.SoundFile(str(tmp), "w", SR, 1, format="FLAC", subtype="PCM_16") as f:
        while written < total:
            clip = clips[int(rng.integers(len(clips)))]
            gap_s = len(clip) / SR * (1 - speech_share) / speech_share * rng.uniform(0.5, 1.5)
            gap = (rng.standard_normal(int(gap_s * SR)) * 1e-4).astype(np.float32)
            block = np.concatenate([gap, clip])[: total - written]
            f.write(np.clip(block, -1, 1))
            written += len(block)
    os.replace(tmp, path)


#: Which stage a process of the run is, from its command line (Ray names its workers after the
#: operator's actor class, or `_per_window` for the decode tasks; with `decode.in_recording_stage`,
#: conf/local.yaml's default, decode is part of the recording stage's process).
ROLES = [
    ("RecordingStageActor", "recording"),
    ("SegmentStageActor", "segment"),
    ("_per_window", "decode"),
    ("decode_stream", "decode"),
    ("pipeline.cli", "driver"),
]


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _private_mb(pid: int) -> tuple[str, float] | None:
    """(role, private resident MB) of one process: RssAnon, i.e. without the object store's shared
    pages that a worker maps when it reads a block in place (ru_maxrss counts those too)."""
    try:
        cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        return None
    role = next((r for key, r in ROLES if key in cmd), None)
    if role is None:
        return None
    kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("RssAnon:")), 0)
    return role, kb / 1024


def run_one(audio: Path, out: Path, mode: str, overrides: list[str] | None = None) -> dict:
    """One run; its report's peak RSS per stage, and each stage's peak private memory sampled every
    0.2 s from /proc while it runs."""
    args = [f"input.uri={audio.parent}", f"output.uri={out}", *(overrides or [])]
    if mode == "whole":
        args.append("decode.piece_s=0")
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(REPO / "conf" / "local.yaml"), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    private: dict[str, float] = {}
    first_piece = None  # when the sink staged a first transcribed piece: ASR had started on the file
    while proc.poll() is None:
        if first_piece is None and (out / "_pieces").exists():
            first_piece = time.time() - t0
        for pid in _descendants(proc.pid):
            got = _private_mb(pid)
            if got is not None:
                private[got[0]] = max(private.get(got[0], 0.0), got[1])
        time.sleep(0.2)
    _, err = proc.communicate()
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{err[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    return {
        "wall_s": wall,
        "first_piece_s": first_piece,
        **{k: report[k] for k in STAGES},
        **{f"private_{k}": v for k, v in private.items()},
        "segments": report.get("accepted_segments", 0) + report.get("rejected_segments", 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", default="1,4")
    ap.add_argument("--modes", default="pieces,whole")
    ap.add_argument("--speech-share", type=float, default=0.15, help="about this share of each file is speech")
    ap.add_argument("--work", type=Path, default=Path("/tmp/scriptorium-long-memory"))
    ap.add_argument("--override", action="append", default=[], help="extra dotted.key=value for every run")
    a = ap.parse_args()
    hours = [float(h) for h in a.hours.split(",")]
    modes = a.modes.split(",")
    results: dict[tuple[str, float], dict] = {}
    for h in hours:
        audio = a.work / f"in-{h:g}h-{a.speech_share:g}" / f"talk-{h:g}h.flac"
        audio.parent.mkdir(parents=True, exist_ok=True)
        build(audio, h, a.speech_share)
        for mode in modes:
            out = a.work / f"out-{h:g}h-{mode}-{int(time.time())}"
            results[(mode, h)] = r = run_one(audio, out, mode, a.override)
            print(f"  {mode} {h:g} h: {r['wall_s']:.0f} s, " + ", ".join(f"{k} {r[k]:.0f}" for k in STAGES), flush=True)
    roles = ["driver", "decode", "recording", "segment"]
    print(
        f"\nPeak memory per stage (MB), load average at the end {os.getloadavg()[0]:.1f}. 'private': the largest "
        "RssAnon sampled every 0.2 s; 'ru_maxrss': the report's, which also counts object-store pages read in place.\n"
    )
    print(
        "| mode | hours | wall s | first piece transcribed s | segments | "
        + " | ".join(f"{r} private" for r in roles)
        + " | "
        + " | ".join(k.replace("_peak_rss_mb", "") + " ru_maxrss" for k in STAGES)
        + " |"
    )
    print("|---|---|---|---|---|" + "---|" * (len(roles) + len(STAGES)))
    for (mode, h), r in results.items():
        first = f"{r['first_piece_s']:.0f}" if r["first_piece_s"] is not None else "—"
        print(
            f"| {mode} | {h:g} | {r['wall_s']:.0f} | {first} | {r['segments']} | "
            + " | ".join(f"{r['private_' + k]:.0f}" if "private_" + k in r else "—" for k in roles)
            + " | "
            + " | ".join(f"{r[k]:.0f}" for k in STAGES)
            + " |"
        )
    for mode in modes:
        if len(hours) > 1 and (mode, hours[0]) in results and (mode, hours[-1]) in results:
            lo, hi = results[(mode, hours[0])], results[(mode, hours[-1])]
            ratios = ", ".join(
                f"{k} {hi['private_' + k] / lo['private_' + k]:.2f}x"
                for k in roles
                if "private_" + k in lo and "private_" + k in hi
            )  # no decode row: it ran in the recording stage
            print(f"{mode}: {hours[-1]:g} h / {hours[0]:g} h, private peak: {ratios}")


if __name__ == "__main__":
    main()
