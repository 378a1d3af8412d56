"""Memory per stage against recording length (issue 16): a 1 h and a 4 h recording, whole and in pieces.

    .venv/bin/python bench/long_memory.py                  # 1 h and 4 h, pieces (default) and whole
    .venv/bin/python bench/long_memory.py --hours 1,4 --modes pieces

Each recording joins speech clips of ../shared/corpus with 20-90 s of near-silence between them
(about 15% speech, so a 4 h file costs minutes of ASR on a CPU, not hours), written as 16 kHz FLAC
block by block. Each (length, mode) is one `scriptorium run conf/local.yaml` in a subprocess into a
fresh output; its report.json gives each stage's peak RSS (the largest worker of the stage). "whole"
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


def build(path: Path, hours: float, seed: int = 3) -> None:
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
            gap = (rng.standard_normal(int(rng.uniform(20, 90) * SR)) * 1e-4).astype(np.float32)
            clip = clips[int(rng.integers(len(clips)))]
            block = np.concatenate([gap, clip])[: total - written]
            f.write(np.clip(block, -1, 1))
            written += len(block)
    os.replace(tmp, path)


def run_one(audio: Path, out: Path, mode: str) -> dict:
    args = [f"input.uri={audio.parent}", f"output.uri={out}"]
    if mode == "whole":
        args.append("decode.piece_s=0")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(REPO / "conf" / "local.yaml"), *args],
                          cwd=REPO, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    return {"wall_s": wall, **{k: report[k] for k in STAGES}, "ok": report["ok"], "segments":
            report.get("accepted_segments", 0) + report.get("rejected_segments", 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", default="1,4")
    ap.add_argument("--modes", default="pieces,whole")
    ap.add_argument("--work", type=Path, default=Path("/tmp/scriptorium-long-memory"))
    a = ap.parse_args()
    hours = [float(h) for h in a.hours.split(",")]
    modes = a.modes.split(",")
    results: dict[tuple[str, float], dict] = {}
    for h in hours:
        audio = a.work / f"in-{h:g}h" / f"talk-{h:g}h.flac"
        audio.parent.mkdir(parents=True, exist_ok=True)
        build(audio, h)
        for mode in modes:
            out = a.work / f"out-{h:g}h-{mode}-{int(time.time())}"
            results[(mode, h)] = r = run_one(audio, out, mode)
            print(f"  {mode} {h:g} h: {r['wall_s']:.0f} s, " + ", ".join(f"{k} {r[k]:.0f}" for k in STAGES), flush=True)
    print(f"\nPeak RSS per stage (MB), load average at the end {os.getloadavg()[0]:.1f}\n")
    print("| mode | hours | wall s | segments | " + " | ".join(k.replace("_peak_rss_mb", "") for k in STAGES) + " |")
    print("|---|---|---|---|" + "---|" * len(STAGES))
    for (mode, h), r in results.items():
        print(f"| {mode} | {h:g} | {r['wall_s']:.0f} | {r['segments']} | " + " | ".join(f"{r[k]:.0f}" for k in STAGES) + " |")
    for mode in modes:
        if (mode, hours[0]) in results and (mode, hours[-1]) in results and len(hours) > 1:
            lo, hi = results[(mode, hours[0])], results[(mode, hours[-1])]
            ratios = ", ".join(f"{k.replace('_peak_rss_mb', '')} {hi[k] / max(lo[k], 1):.2f}x" for k in STAGES)
            print(f"{mode}: {hours[-1]:g} h / {hours[0]:g} h peak RSS: {ratios}")


if __name__ == "__main__":
    main()
