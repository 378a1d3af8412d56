"""Whisper on a CPU: one CTranslate2 worker with all threads against several with fewer, calls made
at once (what `segment_stage.asr.workers` chooses), side by side on the same windows.

    .venv/bin/python -m bench.long_corpus /tmp/long16
    .venv/bin/python bench/whisper_workers.py /tmp/long16 --fill 28 --fill 15

Each setting runs the same 16 windows (`--fill` seconds of each file's speech laid end to end,
encoded up to their end + 1 s as `asr.encode_pad_s: 1` does) through encode, greedy decode and word
alignment, the three steps of `WhisperAsr.transcribe`, in calls of `batch` windows from `workers`
threads. CPU seconds and peak RSS are this process's (a fresh one per setting).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ((1, 2, 2), (2, 1, 1), (2, 1, 2))  # (workers, threads each, windows per call)


def one(folder: Path, fill: float, workers: int, threads: int, batch: int) -> dict:
    """Runs in its own process: times the 16 windows for one setting."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from faster_whisper import WhisperModel
    from faster_whisper.audio import decode_audio, pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    from pipeline.backends.whisper_models import embedded_model_dir

    audio = np.concatenate([decode_audio(str(f)) for f in sorted((folder / "audio").iterdir())])
    windows = [audio[int(k * 30 * 16000) : int((k * 30 + fill) * 16000)] for k in range(16)]
    model = WhisperModel(
        str(embedded_model_dir("base")), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=workers
    )
    tok = Tokenizer(model.hf_tokenizer, True, task="transcribe", language="en")
    prompt = model.get_prompt(tok, [], without_timestamps=True)
    frames = min(3000, int(np.ceil(fill + 1)) * 100)

    def call(first: int) -> int:
        clips = windows[first : first + batch]
        feats = np.stack([pad_or_trim(model.feature_extractor(c)[..., :-1], frames) for c in clips])
        encoded = model.encode(feats)
        gen = model.model.generate(
            encoded, [list(prompt)] * len(clips), beam_size=1, max_length=448, suppress_blank=True, suppress_tokens=[-1]
        )
        tokens = [[t for t in g.sequences_ids[0] if t < tok.eot] for g in gen]
        model.find_alignment(tok, tokens, encoded, [int(fill * 100)] * len(clips))
        return sum(map(len, tokens))

    call(0)  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(workers) as pool:
        tokens = sum(pool.map(call, range(0, 16, batch)))
    return {
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "tokens": tokens,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a corpus folder with audio/ (bench/long_corpus.py)")
    p.add_argument("--fill", type=float, action="append", help="seconds of audio per window (repeatable; default 28)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        fill, w, t, b = json.loads(args.child)
        print(json.dumps(one(args.folder, fill, w, t, b)))
        return
    print("| fill s | workers x threads | windows per call | wall s | vs 1 x 2 | CPU s | cores busy | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for fill in args.fill or [28.0]:
        base = None
        for w, t, b in SETTINGS:
            out = subprocess.run(
                [sys.executable, __file__, str(args.folder), "--child", json.dumps([fill, w, t, b])],
                check=True,
                capture_output=True,
                text=True,
                cwd=REPO,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            base = base or r["wall_s"]
            print(
                f"| {fill:.0f} | {w} x {t} | {b} | {r['wall_s']:.1f} | {base / r['wall_s']:.2f}x | {r['cpu_s']:.1f} "
                f"| {r['cpu_s'] / r['wall_s']:.2f} | {r['rss_mb']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
