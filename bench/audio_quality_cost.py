"""What the audio-quality signals cost against the segment stage they sit beside (issue 35: <= 10%).

    .venv/bin/python bench/audio_quality_cost.py [--input ../shared/corpus] [--window-files 16] [--repeat 3]

In one process, without Ray, on conf/local.yaml (Whisper base int8, two calls at once): decode and the
recording stage (signals off) once, untimed; then, on the same utterances, the CPU seconds of
`pipeline.audio_quality.span_signals` without and with DNSMOS, and of the segment stage (LID + ASR +
quality). CPU is `resource.getrusage` (all threads); each number is the least of `--repeat` runs,
so other tenants of the machine inflate it less.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402 - after the path

from pipeline.audio_quality import dnsmos_session, span_signals  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.records import INPUT_SCHEMA, SAMPLE_RATE, Span, samples_at  # noqa: E402
from pipeline.stages.decode import decode_batch  # noqa: E402
from pipeline.stages.recording import RecordingStage  # noqa: E402
from pipeline.stages.segment import SegmentStage  # noqa: E402

AUDIO = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, default=REPO.parent / "shared" / "corpus")
    ap.add_argument("--window-files", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    files = sorted(p for p in a.input.rglob("*") if p.suffix.lower() in AUDIO)
    cfg = load_config(REPO / "conf" / "local.yaml", ["input.uri=/in", "output.uri=/out"])
    cfg_off = cfg.model_copy(deep=True)
    cfg_off.recording_stage.audio_quality.enabled = False
    recording, segment = RecordingStage.from_config(cfg_off), SegmentStage.from_config(cfg)
    dnsmos_session()  # loading the model is not timed
    windows, decoded = [], []
    for k in range(0, len(files), a.window_files):
        batch = pa.Table.from_pylist(
            [
                {"recording_id": str(i), "uri": str(f), "size": f.stat().st_size, "etag": None, "mtime": None}
                for i, f in enumerate(files[k : k + a.window_files], start=k)
            ],
            schema=INPUT_SCHEMA,
        )
        d = decode_batch(batch, cfg.decode, cfg.input.storage)
        decoded.append(d)
        windows.append(recording(d))
    # the utterances as the recording stage cut them, with their recording's audio
    work = []
    for d, w in zip(decoded, windows):
        rows = w.drop_columns(["audio"]).to_pylist()
        for r, row in enumerate(rows):
            if row["spans"]:
                audio = samples_at(d.column("audio"), r)
                clips = [audio[int(s["start"] * SAMPLE_RATE) : int(s["end"] * SAMPLE_RATE)] for s in row["spans"]]
                work.append((audio, [Span(s["start"], s["end"]) for s in row["spans"]], clips))
    speech_s = sum(len(c) for _, _, clips in work for c in clips) / SAMPLE_RATE
    best = {"signals": 1e9, "signals + MOS": 1e9, "segment stage": 1e9}
    for _ in range(a.repeat):
        for name, mos in (("signals", False), ("signals + MOS", True)):
            c = cpu()
            for audio, regions, clips in work:
                span_signals(audio, regions, clips, with_mos=mos)
            best[name] = min(best[name], cpu() - c)
        c = cpu()
        for w in windows:
            segment(w)
        best["segment stage"] = min(best["segment stage"], cpu() - c)
    utterances = sum(len(clips) for _, _, clips in work)
    print(
        f"{len(files)} files, {utterances} utterances, {speech_s:.0f} s of speech; conf/local.yaml; least of {a.repeat}"
    )
    print("| what | CPU s | CPU ms per utterance | vs the segment stage |\n|---|---:|---:|---:|")
    for name, s in best.items():
        print(f"| {name} | {s:.2f} | {1000 * s / utterances:.1f} | {s / best['segment stage']:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
