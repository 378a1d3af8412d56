"""NeMo FastConformer on a CPU: how the pooling window's size sets the size of bucketed calls, and
what small calls cost when another process takes part of a core, side by side on the same clips.

    .venv/bin/python bench/throughput.py --rows 5 --corpora short --scale 0   # builds both inputs
    .venv/bin/python bench/nemo_pools.py /tmp/scriptorium-bench/short-200/audio \\
        /tmp/scriptorium-bench/models/large/asr.nemo --busy 0 --busy 0.2

Utterances are cut as the recording stage cuts them (conf/local.yaml's Silero VAD and segmentation),
pools by the runner's own `discover_table` + `batching.windows` (files longest first), each pool's
utterances are planned with `plan_batches` as the segment stage plans them, and every call goes
through `NemoAsr.transcribe`, the stage's own call. `--busy F` runs a second process
that keeps F of one core busy meanwhile (the driver and Ray's own actors take ~20% of one in a run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (name, pooling.window_audio_s, pooling.max_files, bucketing on, max_extra_padding); calls of at
# most 480 padded s / 16 utterances, as bench/rows.py gives the NeMo rows
VARIANTS = (
    ("bucketing on, local.yaml's pools (300 s / 16 files)", 300.0, 16, True, 0.05),
    ("bucketing on, the NeMo rows' pools (1920 s / 256 files)", 1920.0, 256, True, 0.05),
    ("bucketing on, no padding cap, the NeMo rows' pools", 1920.0, 256, True, None),
    ("bucketing off, local.yaml's pools", 300.0, 16, False, None),
)
BUSY = "import time\nwhile True:\n    t = time.perf_counter()\n    while time.perf_counter() - t < {on}: pass\n    time.sleep({off})"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio", type=Path, help="a folder of short clips (16 kHz FLAC)")
    p.add_argument("model", type=Path, help="a FastConformer .nemo (bench/nemo_models.py --size large)")
    p.add_argument("--busy", type=float, action="append", help="share of one core kept busy elsewhere (repeat)")
    p.add_argument("--clips", type=int, default=200)
    args = p.parse_args(argv)

    import numpy as np
    import soundfile as sf

    from pipeline.backends.nemo.asr import NemoAsr
    from pipeline.backends.registry import make_vad
    from pipeline.batching import plan_batches, windows
    from pipeline.config import AsrConfig, load_config
    from pipeline.config.job import ModelsConfig
    from pipeline.discover import discover_table
    from pipeline.timeline import utterances

    job = load_config(
        REPO / "conf" / "local.yaml", [f"input.uri={args.audio}", "output.uri=unused", f"input.limit={args.clips}"]
    )
    listing = discover_table(job.input)  # longest first, as the runner orders its work
    vad = make_vad(job.recording_stage.vad, job.models, False)
    clips: list = []  # every file's utterances
    utts_of: list[list[int]] = []  # per listed file: its utterances (indices into clips), in time order
    for uri in listing.column("uri").to_pylist():
        audio = sf.read(uri.removeprefix("file://"), dtype="float32")[0]
        utts_of.append([])
        for span in utterances(vad.speech_regions(audio), job.recording_stage.segmentation, audio):
            utts_of[-1].append(len(clips))
            clips.append(audio[int(span.start * 16000) : int(span.end * 16000)])
    d = [len(c) / 16000 for c in clips]
    asr = NemoAsr(AsrConfig(backend="nemo", model=str(args.model), cpu_threads=2), ModelsConfig(), False)
    cost = asr.padded_seconds
    asr.transcribe([clips[0]], [None])  # warm-up
    print(f"{len(clips)} utterances of {listing.num_rows} files, {sum(d):.0f} s; torch threads 2\n")
    print("| plan | busy elsewhere | calls | median utterances per call | padding | wall s | CPU s |")
    print("|---|---|---|---|---|---|---|")
    for busy in args.busy or [0.0]:
        noise = None
        if busy > 0:
            code = BUSY.format(on=0.01 * busy, off=0.01 * (1 - busy))
            noise = subprocess.Popen([sys.executable, "-c", code])
        try:
            for name, window_s, max_files, sort, cap in VARIANTS:
                plans = []
                for offset, length in windows(listing, window_s, max_files):
                    pool = [i for f in range(offset, offset + length) for i in utts_of[f]]  # arrival order
                    plans += [
                        [pool[j] for j in b] for b in plan_batches([d[i] for i in pool], cost, 480, 16, sort, cap)
                    ]
                padded = sum(cost([d[i] for i in b]) for b in plans)
                t, c = time.perf_counter(), time.process_time()
                for b in plans:
                    asr.transcribe([clips[i] for i in b], [None] * len(b))
                wall, cpu = time.perf_counter() - t, time.process_time() - c
                print(
                    f"| {name} | {busy:.0%} of a core | {len(plans)} | {int(np.median([len(b) for b in plans]))} | "
                    f"{1 - sum(d) / padded:.1%} | {wall:.1f} | {cpu:.1f} |",
                    flush=True,
                )
        finally:
            if noise is not None:
                noise.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
