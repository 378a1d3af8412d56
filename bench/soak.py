"""Soak: N consecutive small `scriptorium run`s, each counted for what a run must never leave (issue 32).

    .venv/bin/python bench/soak.py                    # 30 runs of conf/local.yaml on 3 short clips
    .venv/bin/python bench/soak.py --runs 10 --simulated    # simulated models: the Ray/Delta path, fast
    .venv/bin/python bench/soak.py --against 183b89e --runs 10 --simulated   # and that commit, alternating

Per run, as a user runs it (`python -m pipeline.cli run`, a fresh driver and local Ray each time):
  fatal       "Fatal Python error" in the driver's output AND in the Ray session's worker logs (a worker
              that aborts while the driver exits is never forwarded to the driver's screen)
  procs       processes of the run's Ray session still alive 5 s after the CLI exited (found by the
              session's own RAY_TMPDIR in their command line or environment; killed by pid after counting)
  tmp         temporary files left: `.tmp-*` under the output, and anything left in the run's own TMPDIR
  rc, wall    the CLI's exit code (0 expected) and seconds

Each run gets its own output, TMPDIR and RAY_TMPDIR (short, under /tmp), removed afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
CLIPS = ["speechbrain_spk1_snt1.wav", "speechbrain_spk1_snt2.wav", "lhotse_2412-153948-0000.flac"]
SIMULATED = [
    "recording_stage.vad.backend=simulated",
    "segment_stage.lid.backend=simulated",
    "segment_stage.asr.backend=simulated",
]
FATAL = "Fatal Python error"


def _session_pids(marker: str) -> list[int]:
    """Live processes whose command line or environment names `marker` (the run's RAY_TMPDIR)."""
    found = []
    needle = marker.encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if needle in (d / "cmdline").read_bytes() or needle in (d / "environ").read_bytes():
                found.append(int(d.name))
        except OSError:
            continue
    return found


def _fatal_in_ray_logs(ray_tmp: Path) -> int:
    n = 0
    for f in ray_tmp.rglob("*"):
        if f.is_file() and f.suffix in (".err", ".out", ".log"):
            try:
                n += f.read_bytes().count(FATAL.encode())
            except OSError:
                pass
    return n


def one_run(repo: Path, inp: Path, overrides: list[str], keep: bool, timeout: float) -> dict:
    base = Path(tempfile.mkdtemp(prefix="soak-", dir="/tmp"))  # short: Ray's socket paths stay < 107 bytes
    out, tmp, ray_tmp = base / "out", base / "t", base / "r"
    tmp.mkdir()
    ray_tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), RAY_TMPDIR=str(ray_tmp), RAY_AUTH_MODE="disabled")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(repo / "conf" / "local.yaml")]
    cmd += [f"input.uri={inp}", f"output.uri={out}", "ray.num_cpus=2", *overrides]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
        rc, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, text = "timeout", f"{exc.stdout or ''}{exc.stderr or ''}"
    wall = time.time() - t0
    time.sleep(5)  # Ray's processes get a few seconds to go after the driver
    left = _session_pids(str(ray_tmp))
    for pid in left:  # only this run's processes, by pid
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    tmp_left = sorted(str(p.relative_to(base)) for p in out.rglob(".tmp-*")) if out.exists() else []
    tmp_left += sorted(str(p.relative_to(base)) for p in tmp.rglob("*") if not p.is_dir())
    row = {
        "rc": rc,
        "wall": wall,
        "fatal_driver": text.count(FATAL),
        "fatal_ray_logs": _fatal_in_ray_logs(ray_tmp),
        "procs": len(left),
        "proc_names": sorted(
            {Path(f"/proc/{p}/comm").read_text().strip() for p in left if Path(f"/proc/{p}").exists()}
        ),
        "tmp": len(tmp_left),
        "tmp_names": tmp_left[:3],
        "last_line": (text.strip().splitlines() or [""])[-1][:160],
        "base": str(base),
    }
    if not keep:
        shutil.rmtree(base, ignore_errors=True)
    return row


def _worktree(commit: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="soak-rev-", dir="/tmp")) / "repo"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), commit], check=True, capture_output=True
    )
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--simulated", action="store_true", help="simulated VAD/LID/ASR: the Ray and Delta path only")
    ap.add_argument("--against", help="also soak this commit (a git worktree of it), runs alternating")
    ap.add_argument("--override", action="append", default=[], help="dotted.key=value for every run")
    ap.add_argument("--keep", action="store_true", help="keep each run's folder (its Ray logs included)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--corpus", type=Path, default=CORPUS, help="the shared speech corpus (default ../shared/corpus)")
    args = ap.parse_args()
    inp = Path(tempfile.mkdtemp(prefix="soak-in-", dir="/tmp"))
    for c in CLIPS:
        shutil.copyfile(args.corpus / "speech" / c, inp / c)
    overrides = (SIMULATED if args.simulated else []) + args.override
    variants = {"this checkout": REPO}
    if args.against:
        variants[args.against] = _worktree(args.against)
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    try:
        for i in range(args.runs):
            for name, repo in variants.items():
                r = one_run(repo, inp, overrides, args.keep, args.timeout)
                rows[name].append(r)
                print(
                    f"run {i + 1:3d} {name:>14}: rc={r['rc']} wall={r['wall']:.0f}s fatal={r['fatal_driver']}"
                    f"/{r['fatal_ray_logs']} procs={r['procs']} {r['proc_names'] or ''} tmp={r['tmp']} "
                    f"{r['tmp_names'] or ''}" + (f" last: {r['last_line']}" if r["rc"] != 0 else ""),
                    flush=True,
                )
    finally:
        shutil.rmtree(inp, ignore_errors=True)
        for repo in variants.values():
            if repo != REPO:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(repo)], capture_output=True
                )
                shutil.rmtree(repo.parent, ignore_errors=True)
    print()
    mode = "simulated models" if args.simulated else "conf/local.yaml models"
    print(f"soak: {args.runs} consecutive runs per variant, {len(CLIPS)} clips each, {mode}")
    print()
    print(
        "| variant | runs | exit 0 | Fatal Python error (driver / Ray logs) | runs with one | leftover processes | leftover temp files | median wall s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, rs in rows.items():
        walls = sorted(r["wall"] for r in rs)
        med = walls[len(walls) // 2] if walls else float("nan")
        print(
            f"| {name} | {len(rs)} | {sum(r['rc'] == 0 for r in rs)} | {sum(r['fatal_driver'] for r in rs)} / "
            f"{sum(r['fatal_ray_logs'] for r in rs)} | {sum(bool(r['fatal_driver'] or r['fatal_ray_logs']) for r in rs)} | "
            f"{sum(r['procs'] for r in rs)} | {sum(r['tmp'] for r in rs)} | {med:.1f} |"
        )


if __name__ == "__main__":
    main()
