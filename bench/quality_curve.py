"""WER of the accepted pseudo-labels against yield, from a run's output and references (no model).

    .venv/bin/python bench/quality_curve.py REFERENCES OUTPUT [--rules quality.key=value ...] [--json FILE]

Each segment's reference words and errors come from `pipeline.eval.segment_errors` (jiwer alignment of the
file's normalised reference to its segments), once; then every candidate rule set is applied with the
pipeline's own judge (`pipeline.stages.quality.judge`), so the numbers are what `scriptorium filter` +
`scriptorium eval` would give. Prints:

1. the curve: accepted-segment WER and the share of speech kept as `min_confidence` rises (other rules
   as given), overall and per language;
2. the best single `min_confidence` meeting the target (accepted WER <= 0.6 x WER of all segments with
   >= 60% of the speech kept), and per-language thresholds found the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from pipeline.config import OutputConfig, QualityConfig
from pipeline.eval import _key, normalise, read_references, segment_errors
from pipeline.ledger import read_output
from pipeline.stages.quality import judge

TARGET_RATIO, MIN_KEPT = 0.6, 0.6


def scored_segments(references: str, output: OutputConfig) -> tuple[list[dict], int]:
    """Segments of referenced files with their reference words and errors; plus reference words of files
    that have no segment at all (all deleted)."""
    refs = read_references(references, output)
    recs = {_key(r["uri"]): r for r in read_output(output, "recordings").to_pylist()}
    by_rec = defaultdict(list)
    for s in read_output(output, "segments").to_pylist():
        if s["text"]:
            by_rec[s["recording_id"]].append(s)
    rows, lost = [], 0
    for ref in refs:
        rec = recs.get(_key(ref["uri"]))
        if rec is None or ref.get("text") is None:
            continue
        segs = sorted(by_rec.get(rec["recording_id"], []), key=lambda s: s["start"])
        per, total = segment_errors(
            normalise(ref["text"], ref.get("lang")), [normalise(s["text"], ref.get("lang")) for s in segs]
        )
        lost += total["ref_words"] - sum(p["ref_words"] for p in per)
        for s, p in zip(segs, per):
            rows.append(
                {
                    **s,
                    "ref_lang": ref.get("lang"),
                    "ref_words": p["ref_words"],
                    "errors": p["sub"] + p["del"] + p["ins"],
                    "seconds": s["end"] - s["start"],
                }
            )
    return rows, lost


def measure(rows: list[dict], cfg: QualityConfig, lost: int = 0) -> dict:
    acc = [r for r in rows if judge(r, cfg)[0]]
    words_all = sum(r["ref_words"] for r in rows) + lost
    err_all = sum(r["errors"] for r in rows) + lost
    words_acc = sum(r["ref_words"] for r in acc)
    secs = sum(r["seconds"] for r in rows)
    return {
        "wer_all": err_all / words_all if words_all else None,
        "wer_accepted": sum(r["errors"] for r in acc) / words_acc if words_acc else None,
        "segments_kept": len(acc) / len(rows) if rows else None,
        "speech_kept": sum(r["seconds"] for r in acc) / secs if secs else None,
    }


def meets(m: dict) -> bool:
    return (
        m["wer_accepted"] is not None
        and m["speech_kept"] >= MIN_KEPT
        and m["wer_accepted"] <= TARGET_RATIO * m["wer_all"]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("references")
    ap.add_argument("output")
    ap.add_argument("--rules", nargs="*", default=[], help="quality.key=value: the other rules held fixed")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    from pipeline.filter import load_rules

    base = load_rules(None, a.rules)
    rows, lost = scored_segments(a.references, OutputConfig(uri=a.output))
    steps = [round(x * 0.05, 2) for x in range(0, 20)]
    out: dict = {"curve": [], "per_language": {}}
    print(
        f"{len(rows)} segments with references ({sum(r['ref_words'] for r in rows)} words; {lost} words in files "
        "without segments)"
    )
    print(f"current rules: {measure(rows, base, lost)}")
    print(f"\n{'min_conf':>8} {'WER acc':>8} {'WER all':>8} {'ratio':>6} {'segs kept':>9} {'speech kept':>11}")
    best = None
    for t in steps:
        cfg = base.model_copy(update={"min_confidence": t})
        m = measure(rows, cfg, lost)
        out["curve"].append({"min_confidence": t, **m})
        ratio = m["wer_accepted"] / m["wer_all"] if m["wer_accepted"] is not None and m["wer_all"] else None
        print(
            f"{t:>8.2f} {m['wer_accepted'] or 0:>8.4f} {m['wer_all']:>8.4f} {ratio or 0:>6.3f} "
            f"{m['segments_kept']:>9.3f} {m['speech_kept']:>11.3f}" + ("  <- meets target" if meets(m) else "")
        )
        if meets(m) and best is None:
            best = t
    out["best_min_confidence"] = best
    print(f"\nsmallest min_confidence meeting the target: {best}")
    langs = sorted({r["ref_lang"] for r in rows if r["ref_lang"]})
    print(f"\n{'lang':<5} {'segs':>4} {'WER all':>8}  curve (min_conf: WER acc / speech kept)")
    for lang in langs:
        sub = [r for r in rows if r["ref_lang"] == lang]
        pts = []
        for t in steps[::2]:
            m = measure(sub, base.model_copy(update={"min_confidence": t}))
            pts.append((t, m))
        out["per_language"][lang] = [{"min_confidence": t, **m} for t, m in pts]
        print(
            f"{lang:<5} {len(sub):>4} {pts[0][1]['wer_all']:>8.4f}  "
            + "  ".join(
                f"{t:.1f}:{(m['wer_accepted'] if m['wer_accepted'] is not None else float('nan')):.3f}/{m['speech_kept']:.2f}"
                for t, m in pts
            )
        )
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
