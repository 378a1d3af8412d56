"""`scriptorium eval REFERENCES OUTPUT`: how good are the transcripts and the pseudo-labels.

REFERENCES is a NeMo-style manifest (one JSON object a line): `audio_filepath` (relative to the manifest's
folder, or absolute / a URI), optional `text`, `lang` (ISO 639-1; a file holding several languages lists
them joined by "+", e.g. `en+de`, and any of them is a correct language ID) and `rttm_filepath` (reference
speaker turns) or `num_speakers`. An input manifest can serve as its own references: discovery keeps its
extra fields.

Matching a reference line to a recording of the output, first rule that finds one wins (`match_rule` of
each file in eval.json; the table prints how many each rule matched):
  1. `uri`: the same absolute URI (`audio_filepath` resolved against the manifest's folder);
  2. `relative`: `audio_filepath` as written equals the recording's path relative to the input root (the
     last run's input folder, else the recordings' common folder), so references kept beside another copy
     of the audio still match;
  3. `basename`: the file name alone, when exactly one recording and one reference line carry it.
A line none of them matches is reported as missing, with its `audio_filepath`.

What is measured (all numbers land in eval.json, and a table is printed):

* **WER and CER per language** (jiwer 4), corpus-level (errors summed over files / reference words).
  Text normalisation: whisper-normalizer's `EnglishTextNormalizer` for `en` (spelling, numbers,
  contractions), `BasicTextNormalizer` otherwise (lower case, punctuation and diacritic-free marks removed).
  A file's hypothesis is its segments' texts in start order, each normalised, joined by one space; a
  file without segments is all deletions.
* **WER of all / accepted / rejected segments** and the yield (share of segments and of segment audio
  accepted). References are per file; jiwer's alignment of the file's reference to its hypothesis assigns
  each reference word to the segment holding its aligned hypothesis word (a deleted word to the segment of
  the hypothesis word before it), so the errors of every segment are counted exactly once and
  accepted + rejected errors add up to the total.
* **Language ID accuracy per file**: the recording's language (its segments' majority language) against
  the reference `lang`.
* **DER** with a 0.25 s collar around every reference boundary (NIST md-eval convention; overlap scored),
  on a 10 ms grid, with the optimal one-to-one speaker mapping (Hungarian, scipy's linear_sum_assignment),
  split into missed speech, false alarm and confusion; and the **speaker-count error** (hypothesis speakers
  minus reference speakers; the reference count is `num_speakers`, else the RTTM's speakers) of every
  file whose reference gives either: its mean absolute value is over exactly those files. The scoring itself
  (`der`, `read_rttm`) lives in pipeline/der.py; this module matches files and adds the numbers up.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections import defaultdict
from typing import Any

import numpy as np

from pipeline.config import OutputConfig
from pipeline.der import COLLAR_S, FRAME_S, der, read_rttm  # noqa: F401 - FRAME_S: importable from here as before
from pipeline.errors import UserError
from pipeline.export import _input_root
from pipeline.ledger import Ledger, read_output
from pipeline.storage import filesystem, put_atomic


class EvalError(UserError, RuntimeError):
    """References or output cannot be read (exit 2)."""


# -- text ---------------------------------------------------------------------------------------------
_NORMALISERS: dict[str, Any] = {}


def normalise(text: str, lang: str | None) -> str:
    """The documented normalisation: EnglishTextNormalizer for en, BasicTextNormalizer otherwise."""
    key = "en" if lang == "en" else "basic"
    if key not in _NORMALISERS:
        if key == "en":
            # optional: the `test` extra; only `scriptorium eval` needs it
            from whisper_normalizer.english import EnglishTextNormalizer

            _NORMALISERS[key] = EnglishTextNormalizer()
        else:
            # optional: the `test` extra; only `scriptorium eval` needs it
            from whisper_normalizer.basic import BasicTextNormalizer

            _NORMALISERS[key] = BasicTextNormalizer()
    return " ".join(_NORMALISERS[key](text or "").split())


def segment_errors(ref: str, hyp_segments: list[str]) -> tuple[list[dict[str, int]], dict[str, int]]:
    """Errors of a file split over its segments. `ref` and each hypothesis segment are normalised text.
    Returns per-segment {ref_words, sub, del, ins} and the file's totals (equal to jiwer's counts)."""
    import jiwer  # optional: the `test` extra; only `scriptorium eval` needs it

    per = [{"ref_words": 0, "sub": 0, "del": 0, "ins": 0} for _ in hyp_segments]
    owner = [k for k, h in enumerate(hyp_segments) for _ in h.split()]
    hyp = " ".join(h for h in hyp_segments if h.split())
    ref_words = len(ref.split())
    if not ref_words:
        return per, {"ref_words": 0, "sub": 0, "del": 0, "ins": len(owner)}
    if not owner:
        return per, {"ref_words": ref_words, "sub": 0, "del": ref_words, "ins": 0}
    out = jiwer.process_words(ref, hyp)
    for ch in out.alignments[0]:
        if ch.type in ("equal", "substitute"):
            for i in range(ch.ref_end_idx - ch.ref_start_idx):
                seg = per[owner[ch.hyp_start_idx + i]]
                seg["ref_words"] += 1
                seg["sub"] += ch.type == "substitute"
        elif ch.type == "delete":
            seg = per[owner[max(0, ch.hyp_start_idx - 1)]]
            seg["ref_words"] += ch.ref_end_idx - ch.ref_start_idx
            seg["del"] += ch.ref_end_idx - ch.ref_start_idx
        else:  # insert
            for j in range(ch.hyp_start_idx, ch.hyp_end_idx):
                per[owner[j]]["ins"] += 1
    total = {"ref_words": ref_words, "sub": out.substitutions, "del": out.deletions, "ins": out.insertions}
    return per, total


def _wer(c: dict[str, int]) -> float | None:
    return round((c["sub"] + c["del"] + c["ins"]) / c["ref_words"], 6) if c["ref_words"] else None


def _add(a: dict[str, int], b: dict[str, int]) -> None:
    for k in ("ref_words", "sub", "del", "ins"):
        a[k] = a.get(k, 0) + b[k]


# -- evaluation ---------------------------------------------------------------------------------------
def _key(uri: str) -> str:
    if uri.startswith("file://"):
        uri = uri[7:]
    return os.path.normpath(uri) if "://" not in uri else uri


def read_references(path: str, output: OutputConfig) -> list[dict[str, Any]]:
    fs, p = filesystem(path, output.storage)
    try:
        text = fs.cat_file(p).decode("utf-8")
    except FileNotFoundError:
        raise EvalError(f"references {path!r} do not exist") from None
    base = path.rsplit("/", 1)[0] if "/" in path else "."
    refs = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may stand inside a JSON string
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            audio = row["audio_filepath"]
        except (ValueError, KeyError, TypeError):
            raise EvalError(f"{path} line {n}: not a JSON object with 'audio_filepath'") from None
        resolve = lambda a: a if ("://" in a or a.startswith("/")) else posixpath.join(base, a)  # noqa: E731
        row["uri"] = os.path.abspath(resolve(audio)) if "://" not in resolve(audio) else resolve(audio)
        if row.get("rttm_filepath"):
            row["rttm_filepath"] = resolve(row["rttm_filepath"])
        refs.append(row)
    return refs


#: How a reference line found its recording, in the order the rules are tried.
MATCH_RULES = ("uri", "relative", "basename")


def _relative_key(path: str) -> str:
    return posixpath.normpath(path.replace("\\", "/")) if path else ""


def match_references(
    refs: list[dict[str, Any]], recs: list[dict[str, Any]], root: str
) -> list[tuple[dict | None, str | None]]:
    """(recording, rule) for each reference line, by the module's three rules (None, None: no match)."""
    by_uri = {_key(r["uri"]): r for r in recs}
    prefix = root.rstrip("/") + "/" if root else ""
    by_rel = {_relative_key(r["uri"][len(prefix) :]): r for r in recs if prefix and r["uri"].startswith(prefix)}
    names: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        names[posixpath.basename(r["uri"])].append(r)
    ref_names = defaultdict(int)
    for ref in refs:
        ref_names[posixpath.basename(ref["audio_filepath"])] += 1
    out: list[tuple[dict | None, str | None]] = []
    for ref in refs:
        name = posixpath.basename(ref["audio_filepath"])
        if (rec := by_uri.get(_key(ref["uri"]))) is not None:
            out.append((rec, "uri"))
        elif (rec := by_rel.get(_relative_key(ref["audio_filepath"]))) is not None:
            out.append((rec, "relative"))
        elif len(names.get(name, [])) == 1 and ref_names[name] == 1:
            out.append((names[name][0], "basename"))
        else:
            out.append((None, None))
    return out


def _langs(lang: str | None) -> set[str]:
    """A reference `lang`, "en" or "en+de", as the set of languages a correct language ID may name."""
    return {x.strip() for x in (lang or "").split("+") if x.strip()}


def evaluate(references: str, output: OutputConfig, collar: float = COLLAR_S) -> dict[str, Any]:
    led = Ledger(output)
    if led.table("recordings") is None or led.table("segments") is None:
        raise EvalError(f"no Scriptorium output at {output.uri!r}")
    refs = read_references(references, output)
    all_recs = read_output(output, "recordings")
    root = _input_root(led, all_recs.select(["uri"]))
    matches = match_references(refs, all_recs.to_pylist(), root)
    segs: dict[str, list[dict]] = defaultdict(list)
    cols = ["recording_id", "start", "end", "text", "language", "speaker", "accepted"]
    for s in read_output(output, "segments").select(cols).to_pylist():
        segs[s["recording_id"]].append(s)
    files, per_lang, lid_rows, der_rows = [], {}, [], []
    groups = {"all": {}, "accepted": {}, "rejected": {}}
    yield_c = {"segments": 0, "accepted_segments": 0, "seconds": 0.0, "accepted_seconds": 0.0}
    matched = 0
    rules = dict.fromkeys(MATCH_RULES, 0)
    for ref, (rec, rule) in zip(refs, matches):
        if rec is None:
            files.append({"audio_filepath": ref["audio_filepath"], "missing": True})
            continue
        matched += 1
        rules[rule] += 1
        mine = sorted(segs.get(rec["recording_id"], []), key=lambda s: s["start"])
        spoken = [s for s in mine if s["text"]]
        lang = ref.get("lang")
        row: dict[str, Any] = {
            "audio_filepath": ref["audio_filepath"],
            "uri": rec["uri"],
            "match_rule": rule,
            "lang": lang,
            "hyp_lang": rec["language"],
            "segments": len(spoken),
            "accepted": sum(1 for s in spoken if s["accepted"]),
        }
        if lang:
            row["lid_correct"] = rec["language"] in _langs(lang)
            lid_rows.append(row["lid_correct"])
        if ref.get("text") is not None:
            norm_lang = lang if len(_langs(lang)) == 1 else None  # en+de: the language-neutral normaliser
            norm_ref = normalise(ref["text"], norm_lang)
            norm_hyp = [normalise(s["text"], norm_lang) for s in spoken]
            per, total = segment_errors(norm_ref, norm_hyp)
            import jiwer  # optional: the `test` extra; only `scriptorium eval` needs it

            hyp_joined = " ".join(h for h in norm_hyp if h)
            cer = jiwer.process_characters(norm_ref, hyp_joined) if norm_ref else None
            lang_c = per_lang.setdefault(
                lang or "?",
                {"ref_words": 0, "sub": 0, "del": 0, "ins": 0, "ref_chars": 0, "char_errors": 0, "files": 0},
            )
            _add(lang_c, total)
            lang_c["files"] += 1
            if cer is not None:
                lang_c["ref_chars"] += cer.substitutions + cer.deletions + cer.hits
                lang_c["char_errors"] += cer.substitutions + cer.deletions + cer.insertions
            _add(groups["all"], total)
            for s, c in zip(spoken, per):
                _add(groups["accepted" if s["accepted"] else "rejected"], c)
            unassigned = dict(total)
            for c in per:
                for k in unassigned:
                    unassigned[k] -= c[k]
            _add(groups["rejected"], unassigned)  # a file without any segment: its words were lost
            for s in spoken:
                yield_c["segments"] += 1
                yield_c["seconds"] += s["end"] - s["start"]
                if s["accepted"]:
                    yield_c["accepted_segments"] += 1
                    yield_c["accepted_seconds"] += s["end"] - s["start"]
            row.update(ref_text=norm_ref, hyp_text=hyp_joined, wer=_wer(total))
        n_ref_spk = ref.get("num_speakers")
        hyp_turns = [(s["start"], s["end"], s["speaker"] or "spk") for s in spoken]
        if ref.get("rttm_filepath"):
            fs, p = filesystem(ref["rttm_filepath"], output.storage)
            d = der(read_rttm(fs.cat_file(p).decode()), hyp_turns, collar)
            d["audio_filepath"] = ref["audio_filepath"]
            der_rows.append(d)
            row["der"] = d["der"]
            if n_ref_spk is None:
                n_ref_spk = d["ref_speakers"]  # the RTTM's speakers are the reference count
        if n_ref_spk is not None and (spoken or n_ref_spk):
            row["speaker_count_error"] = len({t[2] for t in hyp_turns}) - int(n_ref_spk)
        files.append(row)
    if not matched:
        sample = ", ".join(repr(r["audio_filepath"]) for r in refs[:3])
        raise EvalError(
            f"none of the {len(refs)} references is a recording of {output.uri!r} (e.g. {sample}); a line matches "
            f"by absolute URI, by its path relative to the input root {root or '(none)'!r}, or by a file name "
            "that one recording and one line alone carry"
        )
    languages = {}
    for lang, c in sorted(per_lang.items()):
        if not c["ref_words"]:
            continue  # an empty reference (a file without speech): nothing to score
        languages[lang] = {
            "files": c["files"],
            "ref_words": c["ref_words"],
            "wer": _wer(c),
            "cer": round(c["char_errors"] / c["ref_chars"], 6) if c["ref_chars"] else None,
        }
    wer_groups = {k: {"wer": _wer(v), **v} if v else {"wer": None, "ref_words": 0} for k, v in groups.items()}
    y = yield_c
    scored = sum(d["scored_s"] for d in der_rows)
    spk_err = [f["speaker_count_error"] for f in files if "speaker_count_error" in f]
    return {
        "references": references,
        "output": output.uri,
        "files": len(refs),
        "matched": matched,
        "matched_by": rules,
        "input_root": root,
        "missing": [f["audio_filepath"] for f in files if f.get("missing")],
        "languages": languages,
        "overall": {
            "wer": _wer(groups["all"]) if groups["all"] else None,
            "ref_words": groups["all"].get("ref_words", 0),
        },
        "wer_by_judgement": wer_groups,
        "yield": {
            "segments": y["segments"],
            "accepted_segments": y["accepted_segments"],
            "segment_share": round(y["accepted_segments"] / y["segments"], 6) if y["segments"] else None,
            "seconds": round(y["seconds"], 3),
            "accepted_seconds": round(y["accepted_seconds"], 3),
            "audio_share": round(y["accepted_seconds"] / y["seconds"], 6) if y["seconds"] else None,
        },
        "lid": {
            "files": len(lid_rows),
            "correct": sum(lid_rows),
            "accuracy": round(sum(lid_rows) / len(lid_rows), 6) if lid_rows else None,
            "misses": [
                {"audio_filepath": f["audio_filepath"], "lang": f["lang"], "hyp_lang": f["hyp_lang"]}
                for f in files
                if f.get("lid_correct") is False
            ],
        },
        "diarization": {
            "collar_s": collar,
            "files": len(der_rows),
            "der": round(sum((d["der"] or 0) * d["scored_s"] for d in der_rows) / scored, 6) if scored else None,
            "per_file": der_rows,
            "missed_s": round(sum(d["missed_s"] for d in der_rows), 3),
            "false_alarm_s": round(sum(d["false_alarm_s"] for d in der_rows), 3),
            "confusion_s": round(sum(d["confusion_s"] for d in der_rows), 3),
            "scored_s": round(scored, 3),
            "speaker_count_files": len(spk_err),
            "speaker_count_mean_abs_error": round(float(np.mean(np.abs(spk_err))), 4) if spk_err else None,
            "speaker_count_within_one": sum(abs(e) <= 1 for e in spk_err),
        },
        "per_file": files,
    }


def table(res: dict[str, Any]) -> str:
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    by = res.get("matched_by") or {}
    how = {
        "uri": "by absolute URI",
        "relative": "by path relative to the input root",
        "basename": "by unique file name",
    }
    lines = [
        f"eval of {res['output']} against {res['references']}: {res['matched']}/{res['files']} files matched"
        + (" (" + ", ".join(f"{n} {how[k]}" for k, n in by.items() if n) + ")" if res["matched"] else ""),
    ]
    if by.get("relative"):
        lines.append(f"  input root: {res['input_root']}")
    missing = res.get("missing") or []
    lines += [f"  not found: {m}" for m in missing[:10]]
    if len(missing) > 10:
        lines.append(f"  ... and {len(missing) - 10} more not found (eval.json)")
    lines += [
        "",
        f"{'language':<10}{'files':>6}{'words':>7}{'WER':>9}{'CER':>9}",
    ]
    for lang, v in res["languages"].items():
        lines.append(f"{lang:<10}{v['files']:>6}{v['ref_words']:>7}{f(v['wer']):>9}{f(v['cer']):>9}")
    lines.append(f"{'all':<10}{'':>6}{res['overall']['ref_words']:>7}{f(res['overall']['wer']):>9}")
    w, y = res["wer_by_judgement"], res["yield"]
    lines += [
        "",
        f"segments    WER all {f(w['all']['wer'])}   accepted {f(w['accepted']['wer'])}   "
        f"rejected {f(w['rejected']['wer'])}",
        f"yield       {y['accepted_segments']}/{y['segments']} segments ({f(y['segment_share'])}), "
        f"{y['accepted_seconds']:.1f}/{y['seconds']:.1f} s of audio ({f(y['audio_share'])})",
        f"language ID {res['lid']['correct']}/{res['lid']['files']} files ({f(res['lid']['accuracy'])})",
    ]
    misses = res["lid"].get("misses") or []
    lines += [f"  miss: {m['audio_filepath']}: reference {m['lang']}, found {m['hyp_lang']}" for m in misses[:20]]
    if len(misses) > 20:
        lines.append(f"  ... and {len(misses) - 20} more misses (eval.json)")
    d = res["diarization"]
    if d["files"]:
        lines.append(
            f"DER         {f(d['der'])} over {d['files']} file(s), collar {d['collar_s']} s: missed "
            f"{d['missed_s']} s, false alarm {d['false_alarm_s']} s, confusion {d['confusion_s']} s of "
            f"{d['scored_s']} s scored"
        )
        for r in d["per_file"]:
            lines.append(
                f"  {r['audio_filepath']}: DER {f(r['der'])} (missed {r['missed_s']} s, false alarm "
                f"{r['false_alarm_s']} s, confusion {r['confusion_s']} s), speakers {r['hyp_speakers']} "
                f"vs {r['ref_speakers']}"
            )
    if d["speaker_count_files"]:
        lines.append(
            f"speakers    count mean |error| {d['speaker_count_mean_abs_error']} over {d['speaker_count_files']} "
            f"file(s), within one on {d['speaker_count_within_one']}"
        )
    return "\n".join(lines)


def write_json(res: dict[str, Any], output: OutputConfig, path: str | None = None) -> str:
    if path is None:
        led = Ledger(output)
        fs, p = led.fs, led.path("eval.json")
    else:
        fs, p = filesystem(path, output.storage)
    put_atomic(fs, p, json.dumps(res, indent=1, ensure_ascii=False).encode())
    return f"wrote {path or p}"
