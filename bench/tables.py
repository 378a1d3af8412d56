"""The tables bench/throughput.py prints: the rows side by side, the footnote saying what every row
runs, the scaling run, and the targets met or missed."""

from __future__ import annotations


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
    head = (
        "| # | system | corpus | files | audio s | wall s | x real time | vs row 2 | padding | peak RSS MB "
        "| start-up s | VAD s | ASR s | CPU s | audio s / CPU s | vs row 2 (CPU) | load | ok/no speech/error |"
    )
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
    scored = [r for r in results if r.get("wer")]
    if scored:  # corpora with references.jsonl (the long files): WER per language, scored the same way
        langs = sorted({k for r in scored for k in r["wer"]} - {"all"})
        lines += [
            "",
            "| # | corpus | WER all | " + " | ".join(langs) + " | tree peak RSS MB | tree peak PSS MB |",
            "|" + "---|" * (len(langs) + 5),
        ]
        for r in scored:
            lines.append(
                f"| {r['row']} | {r['corpus']} | {r['wer']['all']:.3f} | "
                + " | ".join(_fmt(r["wer"].get(k), ".3f") for k in langs)
                + f" | {r['tree_peak_rss_mb']:.0f} | {r['tree_peak_pss_mb']:.0f} |"
            )
    return "\n".join(lines)


FOOTNOTE = """\
Same model, threads and beam in every Whisper row: embedded Whisper base, CTranslate2 int8, 2 threads, beam {beam},
temperature 0 (no fallback), word timestamps on; NeMo rows 5-6: FastConformer-CTC {nemo} ({params}) + AmberNet-style LID,
random weights, torch 2 threads; row 7: that FastConformer through NeMo's own transcribe() in one process, whole files
(no VAD, no LID), batch {nb} in file order (long files: one per call, local attention), word timestamps on, torch
{threads} threads (the segment actor's asr.cpu_threads). What differs: row 1 runs no VAD (Whisper's own 30 s windows
over the whole file, language detected once per file); row 2 runs faster-whisper's Silero VAD and batches the chunks of ONE file
(batch {wb}), one language per file; rows 3-6 add PyAV decode, Silero VAD, per-segment language ID, Parquet
output and Ray (start-up included in wall; 'start-up s' = imports + model load for rows 1, 2, 7, ray.init for rows 3-6).
'ASR s' = time inside the model calls (rows 1, 2, 7: the whole transcribe() incl. their VAD/features; rows 3-6:
the segment stage's ASR+LID calls; 'VAD s' = the recording stage's VAD time, from the run report). Padding = share of ASR compute spent on padding, from the backend's cost model
(Whisper: every item is a 30 s window; FastConformer: longest item x count, row 7's from the calls NeMo made).
Peak RSS: rows 1, 2, 7 the process's own
(ru_maxrss); rows 3-6 the peak of the summed RSS of the process tree (driver + Ray GCS/raylet + all workers).
'CPU s' = CPU seconds used by the row's whole process tree (robust to other load; 'vs row 2 (CPU)' compares audio
per CPU second); 'load' = highest 1-min load average seen during the row
(this machine has 2 cores: a load above ~2.5 means other jobs competed with the row and its wall time is inflated)."""


def scaling_table(one: dict, many: dict, factor: int) -> str:
    lines = [
        "| corpus | files | audio s | wall s | x real time | peak RSS MB (tree) | peak PSS MB (tree) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in (("1x", one), (f"{factor}x", many)):
        lines.append(
            f"| short {label} | {r['files']} | {r['audio_seconds']:.0f} | {r['wall_seconds']:.1f} | "
            f"{r['rtf']:.2f} | {r['tree_peak_rss_mb']:.0f} | {r['tree_peak_pss_mb']:.0f} |"
        )
    lines.append("")
    lines.append(
        f"wall {factor}x/1x = {many['wall_seconds'] / one['wall_seconds']:.2f} (linear = {factor}), "
        f"peak RSS {factor}x/1x = {many['tree_peak_rss_mb'] / one['tree_peak_rss_mb']:.2f}, "
        f"peak PSS {factor}x/1x = {many['tree_peak_pss_mb'] / one['tree_peak_pss_mb']:.2f}"
    )
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
    a, b = get.get((3, "long")), get.get((2, "long"))  # issue 16: long recordings
    if a and b:
        v = a["rtf"] / b["rtf"]
        check("long, Whisper: row 3 / row 2 throughput (issue 16)", v, v >= 1.1, ">= 1.1")
        if a.get("wer") and b.get("wer"):
            w = a["wer"]["all"]
            check(f"long, Whisper: row 3 WER (row 2: {b['wer']['all']:.3f})", w, w <= b["wer"]["all"], "<= row 2")
        m = a["tree_peak_rss_mb"] / b["tree_peak_rss_mb"]
        check("long, Whisper: row 3 / row 2 process-tree peak RSS", m, m <= 1.5, "<= 1.5")
        m = a["tree_peak_pss_mb"] / b["tree_peak_pss_mb"]
        check("long, Whisper: row 3 / row 2 process-tree peak PSS (shared pages counted once)", m, m <= 1.5, "<= 1.5")
    for corpus in ("short", "long"):
        r5, r6 = get.get((5, corpus)), get.get((6, corpus))
        pad = r5["padding_ratio"] if r5 else None
        check(f"{corpus}, NeMo: padding with bucketing on", pad, pad is not None and pad <= 0.05, "<= 0.05")
        v = r5["rtf"] / r6["rtf"] if r5 and r6 else None
        check(f"{corpus}, NeMo: row 5 / row 6 throughput", v, v is not None and v >= 1.3, ">= 1.3")
        r7 = get.get((7, corpus))
        if r7:  # no target: Scriptorium against what a NeMo user runs on the same model and threads
            for r in (r5, r6):
                if r:
                    out.append(
                        f"- {corpus}, NeMo: row {r['row']} / row 7 (NeMo's transcribe()) throughput "
                        f"{r['rtf'] / r7['rtf']:.2f}, audio per CPU second "
                        f"{r['audio_per_cpu_s'] / r7['audio_per_cpu_s']:.2f} (no target)"
                    )
    if scale:
        v = scale["many"]["tree_peak_rss_mb"] / scale["one"]["tree_peak_rss_mb"]
        check(f"peak RSS {scale['factor']}x / 1x short corpus", v, v <= 1.2, "<= 1.2")
    bad = [f"row {r['row']} {r['corpus']}" for r in results + ([scale["many"]] if scale else []) if r.get("error")]
    if bad:
        out.append(f"- INVALID rows (recordings failed, so their work differs): {', '.join(bad)}")
    return out
