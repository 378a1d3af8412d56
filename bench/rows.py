"""The measured rows of bench/throughput.py: what each row runs (the children, each in a fresh
interpreter: `throughput.py _child ...`), and running one row (or the NeMo model build) while its
process tree is sampled (bench/sampling.py).

Rows:
  1  naive: one `WhisperModel.transcribe` per file, sequentially
  2  per-file batching (what WhisperX does): `BatchedInferencePipeline` per file, Silero VAD on
  3  Scriptorium end to end (decode + VAD + LID + ASR + Parquet), Whisper, bucketing on
  4  the same with bucketing off (segments packed in arrival order)
  5  row 3 with a NeMo FastConformer CTC model (+ AmberNet-style NeMo LID), bucketing on
  6  row 5 with bucketing off
  7  what a NeMo user runs instead of rows 5-6: the same FastConformer through NeMo's own
     `ASRModel.transcribe()` on the whole files, one process, same torch threads, same batch size
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import corpora
import nemo_models
from sampling import run_sampled

REPO = Path(__file__).resolve().parents[1]
ENTRY = Path(__file__).resolve().with_name("throughput.py")  # children run as `throughput.py _child ...`

ROW_NAMES = {
    1: "naive Whisper, per file",
    2: "BatchedInferencePipeline per file",
    3: "Scriptorium, Whisper, bucketing on",
    4: "Scriptorium, Whisper, bucketing off",
    5: "Scriptorium, NeMo FC-CTC, bucketing on",
    6: "Scriptorium, NeMo FC-CTC, bucketing off",
    7: "NeMo transcribe(), FC-CTC",
}
SCRIPTORIUM_ROWS = (3, 4, 5, 6)  # run on Ray: a process tree, a run report, an output folder
NEMO_ROWS = (5, 6, 7)  # read the NeMo models the bench builds (bench/nemo_models.py), warmed first
SINGLE_PROCESS_ROWS = (1, 2, 7)  # peak RSS = the process's own ru_maxrss
WHISPER_BATCH = 16  # BatchedInferencePipeline batch size (the environment notes measured 8-16)
# The NeMo rows' model calls: at most this many utterances and this much padded audio (rows 5-6's
# segment_stage.batching); row 7 passes NEMO_CALL_ITEMS to transcribe() as its batch_size
NEMO_CALL_ITEMS = 16
NEMO_CALL_S = 480


# ----------------------------------------------------------------------------------------------
# children: one per measured row


def _child_whisper(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from pipeline.backends.whisper import embedded_model_dir

    model = WhisperModel(str(embedded_model_dir("base")), device="cpu", compute_type="int8", cpu_threads=2)
    runner = BatchedInferencePipeline(model) if args.row == 2 else model
    load_s = time.perf_counter() - t0
    common = dict(beam_size=args.beam_size, temperature=0.0, word_timestamps=True)
    if args.row == 2:
        common.update(batch_size=WHISPER_BATCH, vad_filter=True)
    else:
        common.update(vad_filter=False)
    audio_s = chars = segments = 0
    asr_s = 0.0
    hypotheses = {}
    for path in sorted(Path(args.input).glob("*.flac")):
        t = time.perf_counter()
        segs, info = runner.transcribe(str(path), **common)
        segs = list(segs)  # the generator does the work
        asr_s += time.perf_counter() - t
        audio_s += info.duration
        chars += sum(len(s.text.strip()) for s in segs)
        segments += len(segs)
        hypotheses[path.name] = " ".join(s.text.strip() for s in segs)
    wall = time.perf_counter() - t0
    return {
        "audio_seconds": round(audio_s, 3),
        "wall_seconds": round(wall, 3),
        "startup_seconds": round(load_s, 3),
        "transcribe_seconds": round(asr_s, 3),
        "padding_ratio": None,
        "segments": segments,
        "chars": chars,
        "self_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "hypotheses": hypotheses,
    }


def _child_scriptorium(args: argparse.Namespace) -> dict:
    from pipeline.config import load_config
    from pipeline.execution import init_ray
    from pipeline.runner import run

    nemo = args.row in NEMO_ROWS
    overrides = [
        f"input.uri={args.input}",
        f"output.uri={args.output}",
        f"segment_stage.batching.enabled={'true' if args.row in (3, 5) else 'false'}",
        "ray.num_cpus=2",
        f"segment_stage.asr.beam_size={args.beam_size}",
    ]
    if nemo:
        overrides += [
            "segment_stage.asr.backend=nemo",
            f"segment_stage.asr.model={args.nemo_dir}/asr.nemo",
            "segment_stage.lid.backend=nemo",
            f"segment_stage.lid.model={args.nemo_dir}/lid.nemo",
            # calls as large as the issue-5 runs had (conf/local.yaml's 2 x 30 s are sized for Whisper)
            f"segment_stage.batching.max_padded_s={NEMO_CALL_S}",
            f"segment_stage.batching.max_items={NEMO_CALL_ITEMS}",
            # ... and pools of four calls' audio: bucketing sorts within a pool, and local.yaml's 300 s
            # / 16 files held less than one call here (200 clips: 144 calls of median 1 utterance, 12%
            # slower than these pools' 44 alone, 16% with 20% of a core busy elsewhere:
            # bench/nemo_pools.py). Row 6 gets the same pools, in arrival order.
            "pooling.window_audio_s=1920",
            "pooling.max_files=256",
        ]
    overrides += args.override or []
    cfg = load_config(REPO / "conf" / "local.yaml", overrides)
    t0 = time.perf_counter()
    init_ray(cfg.ray)  # timed on its own; run() then finds Ray up and reuses it
    ray_s = time.perf_counter() - t0
    report = run(cfg)
    wall = time.perf_counter() - t0
    import ray

    from pipeline.ledger import read_output

    ray.shutdown()
    # each file's text: its committed segments in time order (what `scriptorium eval` scores)
    rows = read_output(cfg.output).select(["uri", "start", "text"]).to_pylist()
    by_file: dict[str, list[tuple[float, str]]] = {}
    for r in rows:
        by_file.setdefault(Path(r["uri"]).name, []).append((r["start"], r["text"] or ""))
    hypotheses = {name: " ".join(t for _, t in sorted(segs)) for name, segs in by_file.items()}
    segments, chars = len(rows), sum(len(r["text"] or "") for r in rows)
    return {
        "audio_seconds": report.audio_seconds,
        "wall_seconds": round(wall, 3),
        "startup_seconds": round(ray_s, 3),
        "report_wall_seconds": report.wall_seconds,
        "asr_audio_seconds": report.asr_audio_seconds,
        "asr_padded_seconds": report.asr_padded_seconds,
        "asr_wall_seconds": report.asr_wall_seconds,
        "padding_ratio": report.padding_ratio,
        "driver_peak_rss_mb": report.driver_peak_rss_mb,
        "ok": report.ok,
        "no_speech": report.no_speech,
        "error": report.error,
        "errors": report.errors[:3],
        "segments": segments,
        "chars": chars,
        "vad_seconds": getattr(report, "recording_stage_wall_seconds", None),  # VAD (+diarization), summed
        "hypotheses": hypotheses,
        "report": report.model_dump(exclude={"errors", "warnings"}),
    }


def _child_nemo_transcribe(args: argparse.Namespace) -> dict:
    """Row 7: the script a NeMo user would write instead of Scriptorium, on the same model, files and
    threads: `ASRModel.restore_from(...)` and one `transcribe()` over the list of files, word
    timestamps on (rows 5-6 compute them too). No VAD, no language ID: the whole of each file goes
    through the model, in the listed order (NeMo's transcribe loader does not shuffle or bucket).

    Short clips: `batch_size` = the NeMo rows' utterances per call (16). Long files (`--long-form`):
    NeMo's long-audio recipe, limited-context attention (`rel_pos_local_attn`, 128 frames each side)
    and chunked subsampling, and one file per call: each long file alone is past the NeMo rows'
    480 s call budget, and full attention over a 20 min file in a batch does not fit in memory here.

    `padding_ratio` uses the NeMo rows' cost model (longest item x count per call), from the calls
    the model actually received (a hook on its preprocessor)."""
    t0 = time.perf_counter()
    import soundfile as sf
    import torch

    torch.set_num_threads(args.threads)  # as NemoAsr does in the segment actor (asr.cpu_threads)
    from nemo.collections.asr.models import ASRModel

    model = ASRModel.restore_from(f"{args.nemo_dir}/asr.nemo", map_location="cpu")
    batch_size = NEMO_CALL_ITEMS
    if args.long_form:
        model.change_attention_model("rel_pos_local_attn", [128, 128])
        model.change_subsampling_conv_chunking_factor(1)
        batch_size = 1
    calls: list[tuple[int, int]] = []  # (longest input in samples, items) per model call

    def _record(_module, _args, kwargs):
        lens = kwargs.get("length")
        if lens is not None:
            calls.append((int(lens.max()), int(lens.numel())))

    model.preprocessor.register_forward_pre_hook(_record, with_kwargs=True)
    load_s = time.perf_counter() - t0
    paths = sorted(Path(args.input).glob("*.flac"))
    t = time.perf_counter()
    hyps = model.transcribe([str(p) for p in paths], batch_size=batch_size, timestamps=True, verbose=False)
    asr_s = time.perf_counter() - t
    if isinstance(hyps, tuple):  # older NeMo: (best, all)
        hyps = hyps[0]
    wall = time.perf_counter() - t0
    audio_s = sum(sf.info(str(p)).duration for p in paths)
    rate = model.preprocessor._sample_rate
    padded_s = sum(longest * n for longest, n in calls) / rate
    texts = [(h.text if isinstance(h.text, str) else "").strip() for h in hyps]
    words = sum(len((h.timestamp or {}).get("word") or []) for h in hyps if isinstance(h.timestamp, dict))
    return {
        "audio_seconds": round(audio_s, 3),
        "wall_seconds": round(wall, 3),
        "startup_seconds": round(load_s, 3),
        "transcribe_seconds": round(asr_s, 3),
        "padding_ratio": round(max(0.0, 1 - audio_s / padded_s), 4) if padded_s > 0 else None,
        "asr_padded_seconds": round(padded_s, 3),
        "model_calls": len(calls),
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        "segments": len(hyps),
        "timestamped_words": words,
        "chars": sum(len(x) for x in texts),
        "self_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "hypotheses": {p.name: x for p, x in zip(paths, texts)},
    }


def _child_build_nemo(args: argparse.Namespace) -> dict:
    """FastConformer CTC (BPE) of `--nemo-size` and a small AmberNet-style LID, random weights
    (bench/nemo_models.py, the builder the tests' tiny models come from too)."""
    return nemo_models.build_benchmark_models(Path(args.nemo_dir), args.nemo_size, Path(args.corpus))


def child_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--row", type=int, default=0)
    p.add_argument("--input", default="")
    p.add_argument("--output", default="")
    p.add_argument("--result", required=True)
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument("--nemo-dir", default="")
    p.add_argument("--nemo-size", default="medium")
    p.add_argument("--corpus", default="")
    p.add_argument("--override", action="append")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--long-form", action="store_true")
    args = p.parse_args(argv)
    if args.row == 0:
        res = _child_build_nemo(args)
    elif args.row in (1, 2):
        res = _child_whisper(args)
    elif args.row == 7:
        res = _child_nemo_transcribe(args)
    else:
        res = _child_scriptorium(args)
    Path(args.result).write_text(json.dumps(res))
    # Done: skip the interpreter's teardown. Threads pyarrow's dataset scan leaves behind (the Delta
    # read of the output above) can release Python objects while Python finalises, which aborted a
    # row-3 child after it had written its result (Ray's terminate handler, in a clean-clone run).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ----------------------------------------------------------------------------------------------
# orchestrator side


def run_child(name: str, child_args: list[str], logs: Path, env_extra: dict[str, str] | None = None) -> dict:
    """Run one measurement in a fresh interpreter, sampling its process tree's memory.

    The child imports this checkout's `pipeline` (PYTHONPATH = the repository root, which its Ray
    workers inherit), whatever else the environment would resolve it to."""
    result = Path(tempfile.mkstemp(prefix="res-", suffix=".json", dir=logs)[1])
    log_path = logs / f"{name}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, str(ENTRY), "_child", "--result", str(result), *child_args]
    run = run_sampled(cmd, log_path, env, REPO)
    if run.returncode != 0 or result.stat().st_size == 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"{name} failed (exit {run.returncode}); log {log_path}:\n{tail}")
    res = json.loads(result.read_text())
    result.unlink()
    res.update(
        tree_peak_rss_mb=round(run.peak_rss_mb, 1),
        tree_peak_pss_mb=round(run.peak_pss_mb, 1),
        tree_processes_at_peak=run.processes_at_peak,
        process_seconds=round(run.elapsed_s, 1),
        cpu_seconds=round(sum(run.cpu.values()), 1),
        load1_max=max(run.load),
    )
    res["cpu_seconds_by_process"] = run.cpu_seconds_by_process()
    res["rss_mb_at_peak_by_process"] = run.rss_mb_at_peak_by_process()
    # share of the time the whole tree, and the ASR actor, kept 0 / 1 / 2 cores busy
    res["cores_busy"] = {"tree": run.cores_busy(), "segment actor": run.cores_busy("SegmentStage")}
    return res


def measure_row(row: int, corpus: corpora.CorpusInfo, label: str, args: argparse.Namespace, work: Path) -> dict:
    name = f"row{row}-{label}"
    child = ["--row", str(row), "--input", corpus.path, "--beam-size", str(args.beam_size)]
    env = {}
    if row in NEMO_ROWS:
        nemo_dir = work / "models" / args.nemo_size
        child += ["--nemo-dir", str(nemo_dir)]
        warm_s = warm_nemo(nemo_dir)
    if row in SCRIPTORIUM_ROWS:
        out = work / "out" / name
        shutil.rmtree(out, ignore_errors=True)
        ray_tmp = Path(tempfile.mkdtemp(prefix="sbr", dir="/tmp"))  # short: Ray's socket paths are length-limited
        child += ["--output", str(out)]
        for o in args.override or []:
            child += ["--override", o]
        # torch inside a Ray actor would otherwise get OMP_NUM_THREADS=<actor num_cpus> = 1 thread;
        # Whisper (CTranslate2) is given cpu_threads=2 explicitly. Same threads for every row: 2.
        env = {"RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "2"}
    elif row == 7:
        # the thread pools the segment actor gets (engine.map_actor: asr.cpu_threads), and torch's
        n = str(args.asr_threads)
        child += ["--threads", n] + (["--long-form"] if label.startswith("long") else [])
        env = {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}
    print(f"  {name}: {ROW_NAMES[row]} on {corpus.files} files ({corpus.audio_seconds:.0f} s) ...", end="", flush=True)
    try:
        res = run_child(name, child, work / "logs", env)
    finally:
        if row in SCRIPTORIUM_ROWS:
            for f in Path(env["RAY_TMPDIR"]).glob("ray/session_latest/logs/ray-data/ray-data.log"):
                shutil.copyfile(f, work / "logs" / f"{name}-ray-data.log")  # per-operator stats, for diagnosis
            shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
            shutil.rmtree(work / "out" / name, ignore_errors=True)
    if row in NEMO_ROWS:
        res["warm_seconds"] = warm_s
    res["wer"] = corpora.score(corpus, res.pop("hypotheses", {}))
    res["peak_rss_mb"] = res["self_peak_rss_mb"] if row in SINGLE_PROCESS_ROWS else res["tree_peak_rss_mb"]
    res["rtf"] = round(res["audio_seconds"] / res["wall_seconds"], 3) if res["wall_seconds"] else 0.0
    res["audio_per_cpu_s"] = round(res["audio_seconds"] / res["cpu_seconds"], 3) if res["cpu_seconds"] else 0.0
    res.update(row=row, name=ROW_NAMES[row], corpus=label, files=corpus.files)
    print(f" {res['wall_seconds']:.1f} s wall, {res['rtf']:.2f}x real time, peak {res['peak_rss_mb']:.0f} MB")
    return res


def warm_nemo(nemo_dir: Path) -> float:
    """Import NeMo and read the row's models in a throwaway process, untimed, right before a NeMo
    row. This machine's kernel pages out memory that has gone cold (DAMON, action "pageout"), page
    cache included: a cold `import nemo.collections.asr` + model restore read ~1 GB from disk and
    took 54 s (16 s CPU), warm 13 s. Between two rows NeMo's files go cold again, so each NeMo row
    is warmed the same way and its segment actor starts as on a machine that keeps them cached.
    Returns the seconds it took (in the row's result as `warm_seconds`)."""
    code = (
        "import pathlib, nemo.collections.asr.models\n"
        f"for f in ('asr.nemo', 'lid.nemo'): pathlib.Path({str(nemo_dir)!r}, f).read_bytes()"
    )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return round(time.perf_counter() - t0, 1)


def build_nemo(args: argparse.Namespace, work: Path) -> None:
    target = work / "models" / args.nemo_size
    if (target / "models.json").exists() and (target / "asr.nemo").exists() and (target / "lid.nemo").exists():
        return
    print(f"building NeMo models ({args.nemo_size}) ...", flush=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    run_child(
        "build-nemo",
        ["--nemo-dir", str(target), "--nemo-size", args.nemo_size, "--corpus", str(args.corpus)],
        work / "logs",
    )
