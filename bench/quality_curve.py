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

Calibration that generalises (issue 35): with `--cv`, and degraded copies of the corpus run through the
same job (bench/degrade.py makes them; `--degraded KIND REFERENCES OUTPUT`, repeatable), thresholds are
FITTED on some folds and SCORED on the one left out, never on the data they were fitted on:

    .venv/bin/python bench/quality_curve.py REFS OUT --cv --degraded noise N/references.jsonl N_OUT ...

3. leave-one-language-out folds (every copy of a file in its file's fold) and 5 folds by file, for
   each signal family: text (`min_confidence` + the rules already there), + word-probability
   statistics, + audio signals, all; held-out accepted WER / WER of all and speech kept per fold;
4. per-language `min_confidence` fitted inside the file folds against the global one (held-out);
5. degraded vs clean: the AUC of each stored audio signal alone, and of a logistic regression on all of
   them fitted on the other folds (by file).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipeline.config import OutputConfig, QualityConfig
from pipeline.eval import _key, normalise, read_references, segment_errors
from pipeline.ledger import read_output
from pipeline.stages.quality import judge

TARGET_RATIO, MIN_KEPT = 0.6, 0.6


def scored_segments(
    references: str, output: OutputConfig, lost_by_file: dict[str, int] | None = None
) -> tuple[list[dict], int]:
    """Segments of referenced files with their reference words and errors; plus reference words of files
    that have no segment at all (all deleted), in total and (`lost_by_file`) per file."""
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
        if lost_by_file is not None:
            lost_by_file[_file(ref)] = total["ref_words"] - sum(p["ref_words"] for p in per)
        for s, p in zip(segs, per):
            rows.append(
                {
                    **s,
                    "file": _file(ref),
                    "ref_lang": ref.get("lang"),
                    "ref_words": p["ref_words"],
                    "errors": p["sub"] + p["del"] + p["ins"],
                    "seconds": s["end"] - s["start"],
                }
            )
    return rows, lost


def _file(ref: dict) -> str:
    """A referenced file's name without folder or extension: a degraded copy has its original's."""
    return Path(ref["audio_filepath"]).stem


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
    ap.add_argument("--cv", action="store_true", help="cross-validated calibration (issue 35) instead of the curve")
    ap.add_argument("--fit-ratio", type=float, default=FIT_RATIO, help="the ratio fitting aims under (a margin)")
    ap.add_argument("--degraded", nargs=3, action="append", default=[], metavar=("KIND", "REFERENCES", "OUTPUT"))
    a = ap.parse_args(argv)
    from pipeline.filter import load_rules

    base = load_rules(None, a.rules)
    if a.cv:
        globals()["FIT_RATIO"] = a.fit_ratio
        return cross_validate([("clean", a.references, a.output), *map(tuple, a.degraded)], a.rules, a.json)
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


# -- cross-validated calibration (issue 35) ---------------------------------------------------------------
CONF_STEPS = [0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9]
WORD_GRID = {"max_low_word_share": [None, 0.1, 0.2, 0.34], "min_avg_logprob": [None, -1.0, -0.8, -0.6, -0.5, -0.4]}
AUDIO_GRID = {"min_snr_db": [None, 5, 10, 15, 20], "min_mos": [None, 1.8, 2.1, 2.4], "min_bandwidth_hz": [None, 4500]}
FAMILIES = {
    "text": {"min_confidence": CONF_STEPS},
    "text+2nd opinion": {"min_confidence": CONF_STEPS, **WORD_GRID},
    "text+audio": {"min_confidence": CONF_STEPS, **AUDIO_GRID},
    "all": {"min_confidence": CONF_STEPS, **WORD_GRID, **AUDIO_GRID},
}
#: (stored signal, the QualityRules bound, kind) of the swept rules, as `pipeline.audio_quality.reasons`.
SWEPT = {
    "min_confidence": ("confidence", "min"),
    "min_word_confidence": ("min_word_confidence", "min"),
    "max_low_word_share": ("low_word_share", "max"),
    "min_avg_logprob": ("avg_logprob", "min"),
    "min_snr_db": ("snr_db", "min"),
    "min_mos": ("mos", "min"),
    "min_bandwidth_hz": ("bandwidth_hz", "min"),
}
AUDIO_COLUMNS = ("snr_db", "bandwidth_hz", "mos", "clipped_share", "level_dbfs")
FIT_RATIO = 0.55  # fitting asks for a margin under the 0.6 target, so that held-out folds can meet it


class Scored:
    """Every scored segment of every condition as numpy columns, for sweeping thresholds fast: a rule
    set's verdict is the judge's verdict on the rules not swept (`base_ok`) AND the swept thresholds."""

    def __init__(self, rows: list[dict], lost: dict[tuple[str, str], int], base_ok: list[bool]):
        self.rows, self.lost = rows, lost
        self.base_ok = np.array(base_ok)
        self.values = {
            sig: np.array([np.nan if r.get(sig) is None else r[sig] for r in rows], dtype=float)
            for sig, _ in SWEPT.values()
        }
        self.words = np.array([r["ref_words"] for r in rows], dtype=float)
        self.errors = np.array([r["errors"] for r in rows], dtype=float)
        self.seconds = np.array([r["seconds"] for r in rows], dtype=float)
        self.file = np.array([r["file"] for r in rows])
        self.lang = np.array([r["ref_lang"] or "" for r in rows])
        self.condition = np.array([r["condition"] for r in rows])

    def accepted(self, params: dict, where: np.ndarray | None = None) -> np.ndarray:
        ok = self.base_ok.copy()
        for bound, limit in params.items():
            if limit is None:
                continue
            sig, kind = SWEPT[bound]
            v = self.values[sig]
            if where is None:
                ok &= ~(v < limit) if kind == "min" else ~(v > limit)  # NaN (no signal) passes, as in the judge
            else:
                ok &= ~where | (~(v < limit) if kind == "min" else ~(v > limit))
        return ok

    def score(self, rows: np.ndarray, acc: np.ndarray) -> dict:
        files = {(c, f) for c, f in zip(self.condition[rows], self.file[rows])}
        lost = sum(self.lost.get(k, 0) for k in files)
        words_all, err_all = self.words[rows].sum() + lost, self.errors[rows].sum() + lost
        a = rows & acc
        wa = self.words[a].sum()
        m = {
            "wer_all": err_all / words_all if words_all else None,
            "wer_accepted": self.errors[a].sum() / wa if wa else None,
            "speech_kept": self.seconds[a].sum() / self.seconds[rows].sum() if rows.any() else None,
            "segments": int(rows.sum()),
        }
        m["ratio"] = m["wer_accepted"] / m["wer_all"] if m["wer_accepted"] is not None and m["wer_all"] else None
        return m


def _grid(family: dict) -> list[dict]:
    keys = list(family)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(family[k] for k in keys))]


def _objective(m: dict) -> tuple:
    """Larger is better: meet the target with a margin and keep the most speech; else the lowest ratio."""
    if m["ratio"] is None or m["speech_kept"] < MIN_KEPT:
        return (0, -9.0, 0.0)
    if m["ratio"] <= FIT_RATIO:
        return (2, m["speech_kept"], -m["ratio"])
    return (1, -m["ratio"], m["speech_kept"])


def fit(sc: Scored, train: np.ndarray, grid: list[dict], base: dict | None = None) -> dict:
    """The rule set of `grid` (over the rules `base`) that scores best on the `train` rows."""
    best, best_key = grid[0], None
    for params in grid:
        key = _objective(sc.score(train, sc.accepted({**(base or {}), **params})))
        if best_key is None or key > best_key:
            best, best_key = params, key
    return best


def _fmt(m: dict) -> str:
    r = f"{m['ratio']:.2f}x" if m["ratio"] is not None else "  -  "
    wa = f"{m['wer_accepted']:.3f}" if m["wer_accepted"] is not None else "  -  "
    ok = m["ratio"] is not None and m["ratio"] <= TARGET_RATIO and m["speech_kept"] >= MIN_KEPT
    return f"{wa} / {m['wer_all']:.3f} = {r} kept {m['speech_kept']:.2f}" + (" ok" if ok else " MISS")


def cross_validate(conditions: list[tuple[str, str, str]], rules: list[str], json_path: str | None) -> int:
    """Fit on folds, score on the fold left out; print the tables (module docstring, 3-5)."""
    from pipeline.filter import load_rules

    # the rules not swept, as the job has them; the swept ones start open
    open_rules = [*rules, "quality.per_language={}", "quality.min_confidence=0"]
    base_cfg = load_rules(None, open_rules)
    rows, lost = [], {}
    for cond, refs, out in conditions:
        per_file: dict[str, int] = {}
        got, _ = scored_segments(refs, OutputConfig(uri=out), per_file)
        rows += [{**r, "condition": cond} for r in got]
        lost.update({(cond, f): n for f, n in per_file.items()})
    sc = Scored(rows, lost, [judge(r, base_cfg)[0] for r in rows])
    job_cfg = load_rules(None, rules)  # the rules as they are (conf defaults + --rules), for comparison
    current = np.array([judge(r, job_cfg)[0] for r in rows])
    everything = np.ones(len(rows), dtype=bool)
    print(
        f"{len(rows)} scored segments, {len(set(sc.file))} files x {len(conditions)} conditions "
        f"({', '.join(c for c, _, _ in conditions)}); target: accepted WER <= {TARGET_RATIO} x all, kept >= {MIN_KEPT}"
    )
    langs = sorted(set(sc.lang) - {""})
    files = sorted(set(sc.file))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(files))
    file_fold = {files[i]: k % 5 for k, i in enumerate(order)}
    schemes = {
        "leave-one-language-out": [(lang, sc.lang == lang) for lang in langs],
        "5 folds by file": [(f"fold {k}", np.array([file_fold[f] == k for f in sc.file])) for k in range(5)],
    }
    report: dict = {"families": {}, "per_language": {}, "auc": {}}
    for family, spec in FAMILIES.items():
        grid = _grid(spec)
        report["families"][family] = {}
        for scheme, folds in schemes.items():
            print(f"\n{family}: {scheme} (fitted on the other folds; held-out accepted WER / all = ratio, kept)")
            fold_rows = []
            for name, test in folds:
                params = fit(sc, ~test, grid)
                m = sc.score(test, sc.accepted(params))
                by_cond = {c: sc.score(test & (sc.condition == c), sc.accepted(params)) for c, _, _ in conditions}
                fold_rows.append({"fold": name, "params": params, **m, "by_condition": by_cond})
                shown = {k: v for k, v in params.items() if v is not None}
                print(f"  {name:<7} {_fmt(m)}   {shown}")
                print("          " + "  ".join(f"{c}: {_fmt(x)}" for c, x in by_cond.items() if x["segments"]))
            now = [sc.score(test, current) for _, test in folds]
            print("  current rules on the same folds: " + "; ".join(f"{n} {_fmt(m)}" for (n, _), m in zip(folds, now)))
            met = sum(
                1
                for r in fold_rows
                if r["ratio"] is not None and r["ratio"] <= TARGET_RATIO and r["speech_kept"] >= MIN_KEPT
            )
            print(f"  folds meeting the target: {met}/{len(fold_rows)}")
            report["families"][family][scheme] = fold_rows
        params = fit(sc, everything, grid)
        print(f"  fitted on everything (NOT held-out): {_fmt(sc.score(everything, sc.accepted(params)))} {params}")
        report["families"][family]["fitted_on_all"] = params
    _separation(sc, conditions, report)
    _per_language(sc, schemes["5 folds by file"], langs, report)
    _auc(conditions, report)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=1, default=str))
    return 0


#: Text signals compared for the second opinion: (column, True when higher means a better segment).
TEXT_CANDIDATES = (
    ("confidence", True),
    ("min_word_confidence", True),
    ("low_word_share", False),
    ("avg_logprob", True),
    ("no_speech_prob", False),
    ("compression_ratio", False),
)
BAD_WER = 0.25  # a segment whose own WER is above this counts as a bad pseudo-label


def _separation(sc: Scored, conditions: list[tuple[str, str, str]], report: dict) -> None:
    """How well each text signal alone tells bad segments (own WER > BAD_WER) from good ones: AUC, no
    threshold fitted, per condition and over all; and whether a word statistic adds to `confidence`
    (AUC of a logistic regression on both, fitted on the other file folds)."""
    from sklearn.linear_model import LogisticRegression  # heavy: scikit-learn, this bench only
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    wer = np.where(sc.words > 0, sc.errors / np.maximum(sc.words, 1), 1.0)
    bad = wer > BAD_WER
    cols = {
        c: np.array([np.nan if r.get(c) is None else r[c] for r in sc.rows], dtype=float) for c, _ in TEXT_CANDIDATES
    }
    print(
        f"\nbad (own WER > {BAD_WER}) vs good segments: AUC of each text signal alone ({int(bad.sum())} bad of {len(bad)})"
    )
    print(f"  {'condition':<10} " + " ".join(f"{c:>19}" for c, _ in TEXT_CANDIDATES))
    report["separation"] = {}
    for cond in ["all", *[c for c, _, _ in conditions]]:
        sel = np.ones(len(bad), dtype=bool) if cond == "all" else sc.condition == cond
        aucs = []
        for c, higher_good in TEXT_CANDIDATES:
            v, ok = cols[c][sel], ~np.isnan(cols[c][sel])
            y = bad[sel][ok]
            aucs.append(roc_auc_score(y, -v[ok] if higher_good else v[ok]) if 0 < y.sum() < len(y) else float("nan"))
        print(f"  {cond:<10} " + " ".join(f"{a:>19.3f}" for a in aucs))
        report["separation"][cond] = dict(zip([c for c, _ in TEXT_CANDIDATES], aucs))
    for extra in ("min_word_confidence", "low_word_share"):
        x = np.column_stack([cols["confidence"], cols[extra]])
        x = np.where(np.isnan(x), np.nanmedian(x, axis=0), x)
        held = {}
        for feats in ((0,), (0, 1)):
            p = np.zeros(len(bad))
            for tr, te in GroupKFold(5).split(x, bad, sc.file):
                m = LogisticRegression(max_iter=1000).fit(x[tr][:, feats], bad[tr])
                p[te] = m.predict_proba(x[te][:, feats])[:, 1]
            held[feats] = roc_auc_score(bad, p)
        print(f"  held-out AUC, confidence alone {held[(0,)]:.3f} -> with {extra} {held[(0, 1)]:.3f}")
        report["separation"][f"confidence+{extra}"] = held[(0, 1)]


def _per_language(sc: Scored, folds, langs: list[str], report: dict) -> None:
    """Global `min_confidence` against global + a per-language one fitted on the language's training
    rows, both scored on held-out file folds."""
    grid = _grid(FAMILIES["text"])
    print("\nper-language min_confidence (5 folds by file, held out): global vs global + per-language")
    print(f"  segments per language: {dict(zip(*np.unique(sc.lang, return_counts=True)))}")
    for name, test in folds:
        params = fit(sc, ~test, grid)
        acc = sc.accepted(params)
        over = {}
        for lang in langs:
            where = sc.lang == lang
            p = fit(sc, ~test & where, grid, base=params)
            over[lang] = p["min_confidence"]
            acc = np.where(where, sc.accepted({**params, **p}), acc)
        g, pl = sc.score(test, sc.accepted(params)), sc.score(test, acc)
        per_lang_g = {lang: sc.score(test & (sc.lang == lang), sc.accepted(params)) for lang in langs}
        print(f"  {name}: global {_fmt(g)}  | per-language {_fmt(pl)}  {over}")
        report["per_language"][name] = {"global": g, "per_language": pl, "overrides": over, "by_language": per_lang_g}


def _auc(conditions: list[tuple[str, str, str]], report: dict) -> None:
    """Degraded vs clean from the stored audio signals alone: every segment of every output (references
    not needed); one signal at a time (lower = degraded, clipping higher), then a logistic regression on
    all of them fitted on the other file folds."""
    from sklearn.linear_model import LogisticRegression  # heavy: scikit-learn, this bench only
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    from pipeline.ledger import read_output

    rows = []
    for cond, _, out in conditions:
        for s in read_output(OutputConfig(uri=out), "segments").to_pylist():
            if s["text"] and s.get("snr_db") is not None:
                rows.append({**s, "condition": cond, "file": Path(s["uri"]).stem})
    if not rows or len({r["condition"] for r in rows}) < 2:
        print("\n(no degraded outputs with audio signals: no AUC)")
        return
    x = np.array([[np.nan if r[c] is None else r[c] for c in AUDIO_COLUMNS] for r in rows], dtype=float)
    x = np.where(np.isnan(x), np.nanmedian(x, axis=0), x)
    x = np.nan_to_num(x)
    cond = np.array([r["condition"] for r in rows])
    groups = np.array([r["file"] for r in rows])
    sign = np.array([-1, -1, -1, 1, -1])  # degraded: lower SNR, bandwidth, MOS, level; more clipping
    y = (cond != "clean").astype(int)

    def held_out(cols: list[int]) -> np.ndarray:
        p = np.zeros(len(rows))
        for tr, te in GroupKFold(5).split(x, y, groups):
            mu, sd = x[tr][:, cols].mean(0), x[tr][:, cols].std(0) + 1e-9
            model = LogisticRegression(max_iter=1000).fit((x[tr][:, cols] - mu) / sd, y[tr])
            p[te] = model.predict_proba((x[te][:, cols] - mu) / sd)[:, 1]
        return p

    held = held_out(list(range(len(AUDIO_COLUMNS))))
    no_mos = held_out([j for j, c in enumerate(AUDIO_COLUMNS) if c != "mos"])  # the default: MOS off
    print(f"\ndegraded vs clean AUC from the stored audio signals ({len(rows)} segments; per signal: lower = degraded)")
    print(
        f"  {'against clean':<14} "
        + " ".join(f"{c:>13}" for c in AUDIO_COLUMNS)
        + f" {'all (held-out LR)':>18} {'all but MOS':>12}"
    )
    for kind in ["all degraded", *sorted({c for c in cond} - {"clean"})]:
        sel = (cond == "clean") | ((cond != "clean") if kind == "all degraded" else (cond == kind))
        yy = y[sel]
        per = [roc_auc_score(yy, sign[j] * x[sel, j]) for j in range(len(AUDIO_COLUMNS))]
        lr, lr_no_mos = roc_auc_score(yy, held[sel]), roc_auc_score(yy, no_mos[sel])
        print(f"  {kind:<14} " + " ".join(f"{a:>13.3f}" for a in per) + f" {lr:>18.3f} {lr_no_mos:>12.3f}")
        report["auc"][kind] = {**dict(zip(AUDIO_COLUMNS, per)), "logistic_heldout": lr, "without_mos": lr_no_mos}


if __name__ == "__main__":
    sys.exit(main())
