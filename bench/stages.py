"""Model stages without Ray: this checkout against another commit, side by side, on real speech.

    .venv/bin/python bench/stages.py --against 29ddede                 # ../shared/corpus, WER + LID too
    .venv/bin/python bench/stages.py --input /tmp/scriptorium-bench/long-3-300-450/audio --against 29ddede
    .venv/bin/python bench/stages.py --override segment_stage.packing.mode=corpus   # every variant, same code
    .venv/bin/python bench/stages.py --variant filled:segment_stage.packing.min_piece_s=3   # this checkout twice

Why: `throughput.py` measures the whole job on Ray, where start-up, scheduling and other tenants of
this shared machine move wall times by +-5% from run to run. A change inside a model stage is seen
more sharply here: decode -> recording stage -> segment stage called as plain functions in one
process, on the same files, in windows of `--window-files` recordings (as Ray would pool them).
Each variant runs in a fresh interpreter (`--against` from a `git worktree` of that commit), the
variants take turns `--repeat` times, and the table keeps each one's fastest segment stage.

Where the input has a NeMo-style `references.jsonl` (as ../shared/corpus does), word error rate per
language and wrong recording languages are printed too, so a faster variant that transcribes worse
shows it in the same table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AUDIO = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
repo, inp, out, window = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
overrides = json.loads(sys.argv[5])
import pyarrow as pa  # run with cwd=repo: `python -c` puts it first on sys.path, so `pipeline` is that checkout's
from pipeline.config import load_config
from pipeline.stages.decode import decode_batch
try:
    from pipeline.records import INPUT_SCHEMA
except ImportError:  # a revision from before the schemas moved to records.py (bench --against)
    from pipeline.stages.decode import INPUT_SCHEMA
from pipeline.stages.recording import RecordingStage
from pipeline.stages.segment import SegmentStage

AUDIO = %r
files = sorted(p for p in inp.rglob("*") if p.suffix.lower() in AUDIO)
cfg = load_config(Path(repo) / "conf" / "local.yaml", ["input.uri=/in", "output.uri=/out", *overrides])
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
# model loads are not timed; `from_config` since the stages receive their own config section
recording, segment = (getattr(c, "from_config", c)(cfg) for c in (RecordingStage, SegmentStage))
took = {"decode": 0.0, "recording": 0.0, "segment": 0.0, "segment_cpu": 0.0}
rows = []
for k in range(0, len(files), window):
    batch = pa.Table.from_pylist(
        [{"recording_id": str(i), "uri": str(f), "size": f.stat().st_size, "etag": None, "mtime": None}
         for i, f in enumerate(files[k : k + window], start=k)], schema=INPUT_SCHEMA)
    t = time.perf_counter(); decoded = decode_batch(batch, cfg.decode, cfg.input.storage); took["decode"] += time.perf_counter() - t
    t = time.perf_counter(); segmented = recording(decoded); took["recording"] += time.perf_counter() - t
    t, c = time.perf_counter(), cpu(); done = segment(segmented)
    took["segment"] += time.perf_counter() - t; took["segment_cpu"] += cpu() - c
    rows += done.to_pylist()
Path(out).write_text(json.dumps({"took": took, "rows": [
    {"uri": r["uri"], "status": r["status"], "duration": r["duration"], "language": r["language"],
     "padded": r["asr_padded_seconds"], "text": " ".join(s["text"] for s in r["segments"])} for r in rows]}))
""" % (AUDIO,)


def git_worktree(rev: str) -> Path:
    """A detached checkout of `rev` beside /tmp (made once per commit, reused)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    path = Path(tempfile.gettempdir()) / f"scriptorium-{sha}"
    if not (path / "pipeline").exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-f", str(path), sha], cwd=REPO, check=True, capture_output=True
        )
    return path


def run_variant(repo: Path, args: argparse.Namespace, extra: list[str] = ()) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [
            sys.executable,
            "-c",
            _CHILD,
            str(repo),
            str(args.input.resolve()),
            out.name,
            str(args.window_files),
            json.dumps([*(args.override or []), *extra]),
        ]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
        if p.returncode != 0:
            raise RuntimeError(f"variant {repo} failed:\n{p.stderr[-3000:]}")
        return json.loads(Path(out.name).read_text())


def quality(rows: list[dict], refs_path: Path) -> tuple[dict[str, float], int] | None:
    """Mean WER per language and recordings whose language is wrong, against references.jsonl."""
    if not refs_path.exists():
        return None
    import jiwer
    from whisper_normalizer.basic import BasicTextNormalizer
    from whisper_normalizer.english import EnglishTextNormalizer

    refs = {}
    for line in refs_path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            refs[str((refs_path.parent / r["audio_filepath"]).resolve())] = r
    wer: dict[str, list[float]] = {}
    wrong = 0
    for row in rows:
        ref = refs.get(str(Path(row["uri"]).resolve()))
        if not ref or not ref.get("text"):
            continue
        norm = EnglishTextNormalizer() if ref["lang"] == "en" else BasicTextNormalizer()
        wer.setdefault(ref["lang"], []).append(jiwer.wer(norm(ref["text"]), norm(row["text"]) or "<empty>"))
        wrong += row["language"] != ref["lang"]
    return {lang: sum(v) / len(v) for lang, v in sorted(wer.items())}, wrong


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, default=REPO.parent / "shared" / "corpus")
    p.add_argument("--against", help="a commit to compare this checkout with")
    p.add_argument("--override", action="append", help="dotted.key=value for every variant (repeatable)")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:key=value[,key=value]: this checkout once more with these overrides (repeatable)",
    )
    p.add_argument("--window-files", type=int, default=16, help="recordings pooled per segment-stage call")
    p.add_argument("--repeat", type=int, default=2, help="runs per variant, taking turns; the fastest counts")
    args = p.parse_args(argv)
    variants: dict[str, tuple[Path, list[str]]] = {"this checkout": (REPO, [])}
    if args.against:
        variants[f"{args.against}"] = (git_worktree(args.against), [])
    for v in args.variant:  # e.g. "filled:segment_stage.packing.min_piece_s=3"
        name, _, keys = v.partition(":")
        variants[name] = (REPO, keys.split(","))
    best: dict[str, dict] = {}
    for k in range(args.repeat):
        for name, (repo, extra) in variants.items():
            print(f"  run {k + 1}/{args.repeat}: {name} ...", flush=True)
            res = run_variant(repo, args, extra)
            if name not in best or res["took"]["segment"] < best[name]["took"]["segment"]:
                best[name] = res
    refs = args.input / "references.jsonl"
    base = best["this checkout"]["took"]["segment"]
    print(
        f"\n{len(best['this checkout']['rows'])} recordings from {args.input}, windows of {args.window_files}, "
        f"overrides {args.override or 'none'}\n"
    )
    head = "| variant | audio s | decode s | VAD s | segment stage s | CPU s | x real time | vs this | padded s | WER by language | wrong language |"
    print(head + "\n|" + "---|" * (head.count("|") - 1))
    for name, res in best.items():
        t, rows = res["took"], res["rows"]
        audio = sum(r["duration"] or 0.0 for r in rows)
        q = quality(rows, refs)
        wer = " ".join(f"{lang} {w:.3f}" for lang, w in q[0].items()) if q else "—"
        print(
            f"| {name} | {audio:.0f} | {t['decode']:.1f} | {t['recording']:.1f} | {t['segment']:.1f} | "
            f"{t['segment_cpu']:.0f} | {audio / t['segment']:.1f} | {base / t['segment']:.2f} | "
            f"{sum(r['padded'] or 0.0 for r in rows):.0f} | {wer} | {q[1] if q else '—'} |"
        )
    print("\n'vs this': this checkout's segment-stage time / the variant's (above 1: the variant is faster).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
