"""Window packing variants on long files: WER and segment-stage CPU, side by side (issue 16).

    .venv/bin/python -m bench.long_corpus /tmp/long16                       # 4 files with references
    .venv/bin/python bench/packing.py /tmp/long16 default: \
        noretry:segment_stage.packing.retry_below_cps=0 alone:segment_stage.packing.mode=none --faster-whisper

Runs decode and the recording stage (VAD) once per file, in this process and without Ray, then the
segment stage once per variant (`NAME:key=value,key=value`, overrides of conf/local.yaml) on the
same segments, so that variants differ only in how ASR windows are packed and decoded.
`--faster-whisper` adds faster-whisper's `BatchedInferencePipeline` with the same model and settings
(its own VAD included in its CPU time), the baseline of bench/throughput.py's row 2. WER per language
sums each file's errors and divides by the reference words (as bench/corpora.py `score` does);
d/s/i are deletions, substitutions and insertions. CPU seconds are this process's (both threads).
`--rec` sets overrides for the recording stage too (e.g. `segment_stage.packing.min_piece_s=3`,
which makes it pass the pauses that filling cuts at).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _errors(counts: dict[str, list[int]], lang: str, ref: str, hyp: str) -> None:
    from corpora import word_errors

    out = word_errors(ref, hyp, lang)
    acc = counts.setdefault(lang, [0, 0, 0, 0])
    for k, n in enumerate((out.deletions, out.substitutions, out.insertions, len(out.references[0]))):
        acc[k] += n


def _line(name: str, cpu: float, counts: dict[str, list[int]]) -> str:
    cells = [f"{(d + s + i) / n:.3f} (d{d} s{s} i{i})" for _, (d, s, i, n) in sorted(counts.items())]
    return f"| {name} | {cpu:.0f} | " + " | ".join(cells) + " |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="a folder with audio/ and references.jsonl (bench/long_corpus.py)")
    p.add_argument("variants", nargs="+", help="NAME:key=value,... ('default:' for conf/local.yaml as it is)")
    p.add_argument("--rec", default="", help="overrides for decode and the recording stage, comma-separated")
    p.add_argument("--faster-whisper", action="store_true", help="add faster-whisper's batched pipeline")
    p.add_argument("--dump", type=Path, help="write each variant's segments to DUMP/NAME.jsonl (to read what changed)")
    args = p.parse_args()

    import pyarrow as pa
    from corpora import references

    from pipeline.config import load_config
    from pipeline.records import INPUT_SCHEMA
    from pipeline.stages.decode import decode_batch
    from pipeline.stages.recording import RecordingStage
    from pipeline.stages.segment import SegmentStage

    refs = [r for r in references(args.input).values() if r.get("text")]

    def config(extra: str):
        return load_config(
            REPO / "conf" / "local.yaml", ["input.uri=/in", "output.uri=/out", *[e for e in extra.split(",") if e]]
        )

    cfg = config(args.rec)
    rec = RecordingStage.from_config(cfg)
    segmented = []
    for r in refs:
        f = args.input / r["audio_filepath"]
        row = {
            "recording_id": r["audio_filepath"],
            "uri": str(f),
            "size": f.stat().st_size,
            "etag": None,
            "mtime": None,
        }
        segmented.append(
            rec(decode_batch(pa.Table.from_pylist([row], schema=INPUT_SCHEMA), cfg.decode, cfg.input.storage))
        )
    langs = sorted({r["lang"] for r in refs})
    print(f"{len(refs)} files, {sum(t.column('duration')[0].as_py() or 0 for t in segmented):.0f} s of audio\n")
    print("| variant | CPU s | " + " | ".join(f"WER {lang}" for lang in langs) + " |")
    print("|---|---|" + "---|" * len(langs))
    for variant in args.variants:
        name, _, extra = variant.partition(":")
        stage = SegmentStage.from_config(config(",".join(x for x in (args.rec, extra) if x)))
        counts: dict[str, list[int]] = {}
        t0 = time.process_time()
        dump = []
        for r, table in zip(refs, segmented):
            segments = stage(table).column("segments")[0].as_py()
            dump += [
                {"file": r["audio_filepath"], **{k: s[k] for k in ("start", "end", "text", "compression_ratio")}}
                for s in segments
            ]
            _errors(
                counts, r["lang"], r["text"], " ".join(s["text"] for s in sorted(segments, key=lambda s: s["start"]))
            )
        print(_line(name, time.process_time() - t0, counts), flush=True)
        if args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            (args.dump / f"{name}.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dump))
    if args.faster_whisper:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        from pipeline.backends.whisper import embedded_model_dir

        asr = cfg.segment_stage.asr
        model = WhisperModel(
            str(embedded_model_dir(asr.model)), device="cpu", compute_type=asr.compute_type, cpu_threads=asr.cpu_threads
        )
        runner, counts = BatchedInferencePipeline(model), {}
        t0 = time.process_time()
        for r in refs:
            segs, _ = runner.transcribe(
                str(args.input / r["audio_filepath"]),
                beam_size=asr.beam_size,
                temperature=0.0,
                word_timestamps=True,
                batch_size=16,
                vad_filter=True,
            )
            _errors(counts, r["lang"], r["text"], " ".join(s.text.strip() for s in segs))
        print(_line("faster-whisper batched", time.process_time() - t0, counts), flush=True)


if __name__ == "__main__":
    main()
