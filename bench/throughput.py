"""Throughput benchmark (issue 5): Scriptorium against per-file Whisper baselines, one table per run.

    .venv/bin/python bench/throughput.py --quick                       # smoke: a few minutes
    .venv/bin/python bench/throughput.py --short-clips 200 --long-files 10 --long-min-s 300 --long-max-s 1200
    .venv/bin/python bench/throughput.py --quick --rows 2,3 --corpora short --scale 0 --json /tmp/r.json

Rows (each run in a fresh subprocess, so model caches, Ray sessions and peak memory are isolated):
  1  naive: one `WhisperModel.transcribe` per file, sequentially
  2  per-file batching (what WhisperX does): `BatchedInferencePipeline` per file, Silero VAD on
  3  Scriptorium end to end (decode + VAD + LID + ASR + Parquet), Whisper, bucketing on
  4  the same with bucketing off (segments packed in arrival order)
  5  row 3 with a NeMo FastConformer CTC model (+ AmberNet-style NeMo LID), bucketing on
  6  row 5 with bucketing off
All Whisper rows: the embedded Whisper base, CTranslate2 int8, 2 threads, beam = conf asr.beam_size,
greedy without temperature fallback, word timestamps on. The NeMo models are built here with random
weights at a real architecture's size (`--nemo-size`): their cost is what is measured, not their words.

Corpora are generated from ../shared/corpus into `--cache` (see bench/corpora.py) and reused.
Peak RSS: rows 1-2 the process's own (ru_maxrss); Scriptorium rows the peak of the summed RSS of the
whole process tree (driver, GCS, raylet, every worker), sampled every 0.5 s. PSS (shared pages split
between processes, e.g. Ray's object store) is recorded in the JSON too.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import corpora  # noqa: E402

ROW_NAMES = {
    1: "naive Whisper, per file",
    2: "BatchedInferencePipeline per file",
    3: "Scriptorium, Whisper, bucketing on",
    4: "Scriptorium, Whisper, bucketing off",
    5: "Scriptorium, NeMo FC-CTC, bucketing on",
    6: "Scriptorium, NeMo FC-CTC, bucketing off",
}
# FastConformer encoder sizes: (d_model, layers, heads, subsampling channels). "large" is the shape of
# stt_en_fastconformer_ctc_large (~115M parameters); "medium"/"small" follow NeMo's smaller configs.
NEMO_SIZES = {"tiny": (32, 2, 2, 16), "small": (176, 16, 4, 176), "medium": (256, 16, 4, 256), "large": (512, 17, 8, 256)}
WHISPER_BATCH = 16  # BatchedInferencePipeline batch size (the environment notes measured 8-16)


# ----------------------------------------------------------------------------------------------
# process-tree memory sampling (/proc; no psutil in the venv)


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _kb(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


_TICK = os.sysconf("SC_CLK_TCK")
_NAMES: dict[int, str] = {}


def _name(pid: int) -> str:
    """A short process label: Ray's process title (ray::SegmentStageActor...) or the executable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        first = argv[0].decode(errors="replace")
        if first.startswith("ray::"):
            return first.split(" ")[0][:60]
        if "default_worker.py" in b" ".join(argv).decode(errors="replace"):
            return "ray worker (starting or idle)"
        if "throughput.py" in b" ".join(argv).decode(errors="replace"):
            return "driver"
        return os.path.basename(first)[:40] or "?"
    except OSError:
        return "?"


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    except (OSError, ValueError, IndexError):
        return 0.0


def sample_tree(pid: int, cpu: dict[int, float] | None = None) -> tuple[float, float, int]:
    """(RSS MB, PSS MB, processes) summed over `pid` and all its descendants; records each
    process's CPU seconds so far in `cpu` (pid -> s)."""
    pids = _tree(pid)
    rss = sum(_kb(f"/proc/{p}/status", "VmRSS:") for p in pids)
    pss = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
    if cpu is not None:
        for p in pids:
            cpu[p] = max(cpu.get(p, 0.0), _cpu_s(p))
            label = _name(p)  # Ray retitles a worker when it becomes an actor: keep the most specific
            if p not in _NAMES or (label.startswith("ray::") and label != "ray::IDLE"):
                _NAMES[p] = label
    return rss / 1024, pss / 1024, len(pids)


def _load1() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


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
    for path in sorted(Path(args.input).glob("*.flac")):
        t = time.perf_counter()
        segs, info = runner.transcribe(str(path), **common)
        segs = list(segs)  # the generator does the work
        asr_s += time.perf_counter() - t
        audio_s += info.duration
        chars += sum(len(s.text.strip()) for s in segs)
        segments += len(segs)
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
    }


def _child_scriptorium(args: argparse.Namespace) -> dict:
    from pipeline.config import load_config
    from pipeline.engine import init_ray
    from pipeline.runner import run

    nemo = args.row in (5, 6)
    overrides = [
        f"input.uri={args.input}",
        f"output.uri={args.output}",
        f"batching.enabled={'true' if args.row in (3, 5) else 'false'}",
        "ray.num_cpus=2",
        f"asr.beam_size={args.beam_size}",
    ]
    if nemo:
        overrides += [
            "asr.backend=nemo",
            f"asr.model={args.nemo_dir}/asr.nemo",
            "lid.backend=nemo",
            f"lid.model={args.nemo_dir}/lid.nemo",
        ]
    overrides += args.override or []
    cfg = load_config(REPO / "conf" / "local.yaml", overrides)
    t0 = time.perf_counter()
    init_ray(cfg.ray)  # timed on its own; run() then finds Ray up and reuses it
    ray_s = time.perf_counter() - t0
    report = run(cfg)
    wall = time.perf_counter() - t0
    import ray

    chars = segments = 0
    try:
        import pyarrow.parquet as pq

        for p in Path(args.output).rglob("segments/*.parquet"):
            texts = pq.read_table(p, columns=["text"]).column("text").to_pylist()
            segments += len(texts)
            chars += sum(len(t or "") for t in texts)
    except Exception as exc:  # noqa: BLE001 - sanity numbers only
        chars = f"unreadable: {exc}"
    ray.shutdown()
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
        "report": report.model_dump(exclude={"errors", "warnings"}),
    }


def _child_build_nemo(args: argparse.Namespace) -> dict:
    """FastConformer CTC (BPE) of `--nemo-size` and a small AmberNet-style LID, random weights."""
    import torch
    from omegaconf import OmegaConf

    from nemo.collections.asr.models import EncDecCTCModelBPE, EncDecSpeakerLabelModel
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    torch.manual_seed(0)
    out = Path(args.nemo_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for line in (Path(args.corpus) / "references.jsonl").read_text().splitlines():
        text = json.loads(line).get("text")
        if text:
            lines.append("".join(c for c in text.lower() if c.isalpha() or c in " '"))
    (out / "text.txt").write_text("\n".join(lines) + "\n")
    create_spt_model(str(out / "text.txt"), vocab_size=128, sample_size=-1, do_lower_case=True,
                     tokenizer_type="bpe", output_dir=str(out / "tok"))
    d, layers, heads, conv = NEMO_SIZES[args.nemo_size]
    stub = {"manifest_filepath": None, "sample_rate": 16000, "batch_size": 1, "defer_setup": True}

    def pre(feats: int) -> dict:
        return {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor", "sample_rate": 16000,
                "normalize": "per_feature", "window_size": 0.025, "window_stride": 0.01, "window": "hann",
                "features": feats, "n_fft": 512, "frame_splicing": 1, "dither": 0.0, "pad_to": 0}

    asr_cfg = {
        "sample_rate": 16000,
        "tokenizer": {"dir": str(out / "tok"), "type": "bpe"},
        "preprocessor": pre(80),
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": 80, "feat_out": -1,
            "n_layers": layers, "d_model": d, "subsampling": "dw_striding", "subsampling_factor": 8,
            "subsampling_conv_channels": conv, "causal_downsampling": False, "ff_expansion_factor": 4,
            "self_attention_model": "rel_pos", "n_heads": heads, "att_context_size": [-1, -1], "xscaling": True,
            "untie_biases": True, "pos_emb_max_len": 5000, "conv_kernel_size": 9, "conv_norm_type": "batch_norm",
            "dropout": 0.0, "dropout_pre_encoder": 0.0, "dropout_emb": 0.0, "dropout_att": 0.0,
        },
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": d, "num_classes": -1, "vocabulary": []},
        "decoding": {"strategy": "greedy_batch"},
        "train_ds": stub, "validation_ds": stub, "optim": None,
    }
    asr = EncDecCTCModelBPE(cfg=OmegaConf.create(asr_cfg))
    asr.save_to(str(out / "asr.nemo"))

    def block(filters: int, kernel: int, residual: bool) -> dict:
        return {"filters": filters, "repeat": 1, "kernel": [kernel], "stride": [1], "dilation": [1], "dropout": 0.0,
                "residual": residual, "separable": True, "se": True, "se_context_size": -1}

    labels = ["de", "en", "es", "fr", "pt"]
    lid_cfg = {
        "sample_rate": 16000, "labels": labels, "train_ds": {**stub, "labels": labels}, "preprocessor": pre(40),
        "encoder": {"_target_": "nemo.collections.asr.modules.ConvASREncoder", "feat_in": 40, "activation": "relu",
                    "conv_mask": True, "jasper": [block(64, 3, False), block(64, 7, True), block(128, 1, False)]},
        "decoder": {"_target_": "nemo.collections.asr.modules.SpeakerDecoder", "feat_in": 128, "num_classes": len(labels),
                    "pool_mode": "attention", "emb_sizes": 64},
        "loss": {"_target_": "nemo.collections.asr.losses.angularloss.AngularSoftmaxLoss", "scale": 30, "margin": 0.2},
        "optim": None,
    }
    EncDecSpeakerLabelModel(cfg=OmegaConf.create(lid_cfg)).save_to(str(out / "lid.nemo"))
    params = sum(p.numel() for p in asr.parameters())
    info = {"size": args.nemo_size, "asr_params": params}
    (out / "models.json").write_text(json.dumps(info))
    return info


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
    args = p.parse_args(argv)
    if args.row == 0:
        res = _child_build_nemo(args)
    elif args.row in (1, 2):
        res = _child_whisper(args)
    else:
        res = _child_scriptorium(args)
    Path(args.result).write_text(json.dumps(res))


# ----------------------------------------------------------------------------------------------
# orchestrator


def run_child(name: str, child_args: list[str], logs: Path, env_extra: dict[str, str] | None = None) -> dict:
    """Run one measurement in a fresh interpreter, sampling its process tree's memory."""
    result = Path(tempfile.mkstemp(prefix="res-", suffix=".json", dir=logs)[1])
    log_path = logs / f"{name}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    cmd = [sys.executable, str(Path(__file__).resolve()), "_child", "--result", str(result), *child_args]
    peak_rss = peak_pss = 0.0
    procs = 0
    cpu: dict[int, float] = {}
    load = [_load1()]
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        while proc.poll() is None:
            rss, pss, n = sample_tree(proc.pid, cpu)
            if rss > peak_rss:
                peak_rss, procs = rss, n
            peak_pss = max(peak_pss, pss)
            time.sleep(0.5)
            if len(cpu) and int(time.perf_counter() - t0) % 10 == 0:
                load.append(_load1())
    load.append(_load1())
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or result.stat().st_size == 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    res = json.loads(result.read_text())
    result.unlink()
    res.update(tree_peak_rss_mb=round(peak_rss, 1), tree_peak_pss_mb=round(peak_pss, 1),
               tree_processes_at_peak=procs, process_seconds=round(elapsed, 1),
               cpu_seconds=round(sum(cpu.values()), 1), load1_max=max(load))
    by_name: dict[str, float] = {}
    for pid, secs in cpu.items():
        label = _NAMES.get(pid, "?")
        by_name[label] = round(by_name.get(label, 0.0) + secs, 1)
    res["cpu_seconds_by_process"] = dict(sorted(by_name.items(), key=lambda kv: -kv[1]))
    return res


def measure_row(row: int, corpus: corpora.CorpusInfo, label: str, args: argparse.Namespace, work: Path) -> dict:
    name = f"row{row}-{label}"
    child = ["--row", str(row), "--input", corpus.path, "--beam-size", str(args.beam_size)]
    env = {}
    if row >= 3:
        out = work / "out" / name
        shutil.rmtree(out, ignore_errors=True)
        ray_tmp = Path(tempfile.mkdtemp(prefix="sbr", dir="/tmp"))  # short: Ray's socket paths are length-limited
        child += ["--output", str(out)]
        for o in args.override or []:
            child += ["--override", o]
        if row >= 5:
            child += ["--nemo-dir", str(work / "models" / args.nemo_size)]
        # torch inside a Ray actor would otherwise get OMP_NUM_THREADS=<actor num_cpus> = 1 thread;
        # Whisper (CTranslate2) is given cpu_threads=2 explicitly. Same threads for every row: 2.
        env = {"RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "2"}
    print(f"  {name}: {ROW_NAMES[row]} on {corpus.files} files ({corpus.audio_seconds:.0f} s) ...", end="", flush=True)
    try:
        res = run_child(name, child, work / "logs", env)
    finally:
        if row >= 3:
            for f in Path(env["RAY_TMPDIR"]).glob("ray/session_latest/logs/ray-data/ray-data.log"):
                shutil.copyfile(f, work / "logs" / f"{name}-ray-data.log")  # per-operator stats, for diagnosis
            shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
            shutil.rmtree(work / "out" / name, ignore_errors=True)
    res["peak_rss_mb"] = res["self_peak_rss_mb"] if row <= 2 else res["tree_peak_rss_mb"]
    res["rtf"] = round(res["audio_seconds"] / res["wall_seconds"], 3) if res["wall_seconds"] else 0.0
    res["audio_per_cpu_s"] = round(res["audio_seconds"] / res["cpu_seconds"], 3) if res["cpu_seconds"] else 0.0
    res.update(row=row, name=ROW_NAMES[row], corpus=label, files=corpus.files)
    print(f" {res['wall_seconds']:.1f} s wall, {res['rtf']:.2f}x real time, peak {res['peak_rss_mb']:.0f} MB")
    return res


def build_nemo(args: argparse.Namespace, work: Path) -> None:
    target = work / "models" / args.nemo_size
    if (target / "models.json").exists() and (target / "asr.nemo").exists() and (target / "lid.nemo").exists():
        return
    print(f"building NeMo models ({args.nemo_size}) ...", flush=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    run_child("build-nemo", ["--nemo-dir", str(target), "--nemo-size", args.nemo_size, "--corpus", str(args.corpus)],
              work / "logs")


def _fmt(x, spec: str, dash: str = "—") -> str:
    return dash if x is None else format(x, spec)


def status(r: dict) -> str:
    """Outcome per recording (Scriptorium rows); a row with errors did not do the same work: INVALID."""
    if "ok" not in r:
        return f"{r['files']} files"
    cell = f"{r['ok']}/{r['no_speech']}/{r['error']}"
    return cell + (" INVALID" if r["error"] else "")


def table(results: list[dict]) -> str:
    base = {r["corpus"]: r["rtf"] for r in results if r["row"] == 2}
    base_cpu = {r["corpus"]: r["audio_per_cpu_s"] for r in results if r["row"] == 2}
    head = ("| # | system | corpus | files | audio s | wall s | x real time | vs row 2 | padding | peak RSS MB "
            "| start-up s | VAD s | ASR s | CPU s | audio s / CPU s | vs row 2 (CPU) | load | ok/no speech/error |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for r in results:
        ratio = r["rtf"] / base[r["corpus"]] if base.get(r["corpus"]) else None
        cratio = r["audio_per_cpu_s"] / base_cpu[r["corpus"]] if base_cpu.get(r["corpus"]) else None
        asr = r.get("asr_wall_seconds", r.get("transcribe_seconds"))
        lines.append(
            f"| {r['row']} | {r['name']} | {r['corpus']} | {r['files']} | {r['audio_seconds']:.0f} | "
            f"{r['wall_seconds']:.1f} | {r['rtf']:.2f} | {_fmt(ratio, '.2f')} | {_fmt(r['padding_ratio'], '.1%')} | "
            f"{r['peak_rss_mb']:.0f} | {r['startup_seconds']:.1f} | {_fmt(r.get('vad_seconds'), '.1f')} | {_fmt(asr, '.1f')} | {r['cpu_seconds']:.0f} | "
            f"{r['audio_per_cpu_s']:.2f} | {_fmt(cratio, '.2f')} | {r['load1_max']:.1f} | {status(r)} |"
        )
    return "\n".join(lines)


FOOTNOTE = """\
Same model, threads and beam in every Whisper row: embedded Whisper base, CTranslate2 int8, 2 threads, beam {beam},
temperature 0 (no fallback), word timestamps on; NeMo rows: FastConformer-CTC {nemo} ({params}) + AmberNet-style LID,
random weights, torch 2 threads. What differs: row 1 runs no VAD (Whisper's own 30 s windows over the whole file,
language detected once per file); row 2 runs faster-whisper's Silero VAD and batches the chunks of ONE file
(batch {wb}), one language per file; rows 3-6 add PyAV decode, Silero VAD, per-segment language ID, Parquet
output and Ray (start-up included in wall; 'start-up s' = model load for rows 1-2, ray.init for rows 3-6).
'ASR s' = time inside the model calls (rows 1-2: the whole transcribe() incl. their VAD/features; rows 3-6:
the segment stage's ASR+LID calls; 'VAD s' = the recording stage's VAD time, from the run report). Padding = share of ASR compute spent on padding, from the backend's cost model
(Whisper: every item is a 30 s window; FastConformer: longest item x count). Peak RSS: rows 1-2 the process's own
(ru_maxrss); rows 3-6 the peak of the summed RSS of the process tree (driver + Ray GCS/raylet + all workers).
'CPU s' = CPU seconds used by the row's whole process tree (robust to other load; 'vs row 2 (CPU)' compares audio
per CPU second); 'load' = highest 1-min load average seen during the row
(this machine has 2 cores: a load above ~2.5 means other jobs competed with the row and its wall time is inflated)."""


def scaling_table(one: dict, many: dict, factor: int) -> str:
    lines = ["| corpus | files | audio s | wall s | x real time | peak RSS MB (tree) | peak PSS MB (tree) |",
             "|---|---|---|---|---|---|---|"]
    for label, r in (("1x", one), (f"{factor}x", many)):
        lines.append(f"| short {label} | {r['files']} | {r['audio_seconds']:.0f} | {r['wall_seconds']:.1f} | "
                     f"{r['rtf']:.2f} | {r['tree_peak_rss_mb']:.0f} | {r['tree_peak_pss_mb']:.0f} |")
    lines.append("")
    lines.append(f"wall {factor}x/1x = {many['wall_seconds'] / one['wall_seconds']:.2f} (linear = {factor}), "
                 f"peak RSS {factor}x/1x = {many['tree_peak_rss_mb'] / one['tree_peak_rss_mb']:.2f}, "
                 f"peak PSS {factor}x/1x = {many['tree_peak_pss_mb'] / one['tree_peak_pss_mb']:.2f}")
    return "\n".join(lines)


def targets(results: list[dict], scale: dict | None) -> list[str]:
    get = {(r["row"], r["corpus"]): r for r in results}
    out = []

    def check(label: str, value: float | None, ok: bool | None, goal: str) -> None:
        if value is None:
            out.append(f"- {label}: not measured")
        else:
            out.append(f"- {label}: {value:.2f} (target {goal}) {'MET' if ok else 'MISSED'}")

    for corpus, goal in (("short", 1.5), ("long", 1.0)):
        a, b = get.get((3, corpus)), get.get((2, corpus))
        v = a["rtf"] / b["rtf"] if a and b else None
        check(f"{corpus}, Whisper: row 3 / row 2 throughput", v, v is not None and v >= goal, f">= {goal}")
        if a and b:
            c = a["audio_per_cpu_s"] / b["audio_per_cpu_s"]
            check(f"{corpus}, Whisper: row 3 / row 2 audio per CPU second", c, c >= goal, f">= {goal}")
    for corpus in ("short", "long"):
        r5, r6 = get.get((5, corpus)), get.get((6, corpus))
        pad = r5["padding_ratio"] if r5 else None
        check(f"{corpus}, NeMo: padding with bucketing on", pad, pad is not None and pad <= 0.05, "<= 0.05")
        v = r5["rtf"] / r6["rtf"] if r5 and r6 else None
        check(f"{corpus}, NeMo: row 5 / row 6 throughput", v, v is not None and v >= 1.3, ">= 1.3")
    if scale:
        v = scale["many"]["tree_peak_rss_mb"] / scale["one"]["tree_peak_rss_mb"]
        check(f"peak RSS {scale['factor']}x / 1x short corpus", v, v <= 1.2, "<= 1.2")
    bad = [f"row {r['row']} {r['corpus']}" for r in results + ([scale["many"]] if scale else []) if r.get("error")]
    if bad:
        out.append(f"- INVALID rows (recordings failed, so their work differs): {', '.join(bad)}")
    return out


def git_state() -> str:
    """The pipeline code measured: commit, plus '+dirty' when the working tree has local changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "pipeline", "conf"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
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
    p.add_argument("--quick", action="store_true",
                   help="smoke scale: 24 short clips, 2 long files of 60-90 s, NeMo 'small' (explicit flags win)")
    p.add_argument("--rows", default="1,2,3,4,5,6")
    p.add_argument("--corpora", default="short,long")
    p.add_argument("--scale", type=int, default=4, help="also run the scale row on k x the short corpus (0: off)")
    p.add_argument("--scale-row", type=int, default=3)
    p.add_argument("--scale-clips", type=int, default=None,
                   help="short clips in the scaling run's 1x corpus (default: --short-clips; smaller keeps k x affordable)")
    p.add_argument("--nemo-size", choices=sorted(NEMO_SIZES), default=None, help="default: large (quick: small)")
    p.add_argument("--beam-size", type=int, default=None, help="default: asr.beam_size of conf/local.yaml")
    p.add_argument("--override", action="append", help="extra dotted.key=value for Scriptorium rows")
    p.add_argument("--json", type=Path, default=None, help="write all results here")
    args = p.parse_args(argv)
    for key, full, quick in (("short_clips", 200, 24), ("long_files", 10, 2), ("long_min_s", 300.0, 60.0),
                             ("long_max_s", 1200.0, 90.0)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    args.nemo_size = args.nemo_size or ("small" if args.quick else "large")
    if args.beam_size is None:
        from pipeline.config import load_config

        args.beam_size = load_config(REPO / "conf" / "local.yaml", ["input.uri=x", "output.uri=y"]).asr.beam_size
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
        built["short"] = corpora.build_short_clips(args.corpus, work / f"short-{args.short_clips}", args.short_clips,
                                                   args.short_min_s, args.short_max_s, sources=sources)
    if "long" in which:
        built["long"] = corpora.build_long_files(
            args.corpus, work / f"long-{args.long_files}-{args.long_min_s:g}-{args.long_max_s:g}", args.long_files,
            args.long_min_s, args.long_max_s, sources=sources)
    for k, c in built.items():
        print(f"  {k}: {c.files} files, {c.audio_seconds:.0f} s audio, {c.path}")
    if any(r >= 5 for r in rows) or (args.scale and args.scale_row >= 5):
        build_nemo(args, work)

    results = []
    for label, corpus in built.items():
        for row in rows:
            results.append(measure_row(row, corpus, label, args, work))
    scale = None
    if args.scale and "short" in built:
        n = args.scale_clips or args.short_clips
        base = built["short"] if n == args.short_clips else corpora.build_short_clips(
            args.corpus, work / f"short-{n}", n, args.short_min_s, args.short_max_s)
        one = next((r for r in results if r["row"] == args.scale_row and r["corpus"] == "short"), None)
        if one is None or base is not built["short"]:
            one = measure_row(args.scale_row, base, "short", args, work)
        big = corpora.scaled_copy(base, work / f"short-{n}-x{args.scale}", args.scale)
        many = measure_row(args.scale_row, big, f"short-x{args.scale}", args, work)
        scale = {"factor": args.scale, "row": args.scale_row, "one": one, "many": many}

    params = None
    if any(r >= 5 for r in rows):
        params = json.loads((work / "models" / args.nemo_size / "models.json").read_text())["asr_params"]
    print()
    print(f"## Throughput ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, pipeline {code}, "
          f"command: bench/throughput.py {' '.join(argv)})")
    print()
    print(table(results))
    print()
    print(FOOTNOTE.format(beam=args.beam_size, nemo=args.nemo_size, wb=WHISPER_BATCH,
                          params=f"{params / 1e6:.1f}M parameters" if params else "not run"))
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
        args.json.write_text(json.dumps({
            "argv": argv, "pipeline_code": code, "cores": os.cpu_count(), "beam_size": args.beam_size, "nemo_size": args.nemo_size,
            "nemo_asr_params": params, "corpora": {k: c.to_json() for k, c in built.items()},
            "rows": results, "scaling": scale, "targets": targets(results, scale), "seconds": round(total, 1),
        }, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child_main(sys.argv[2:])
    else:
        sys.exit(main(sys.argv[1:]))
