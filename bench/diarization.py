"""Does diarization cost words? WER per language with diarization off and on, side by side in one
run, plus DER (0.25 s collar) and the speaker count on the corpus's multi-speaker files.

    .venv/bin/python bench/diarization.py                      # ../shared/corpus, embedded default
    .venv/bin/python bench/diarization.py --override recording_stage.diarization.min_speaker_s=2

Both runs go through the public API (`pipeline.runner.run`) on the same files; only
`recording_stage.diarization.enabled` differs. WER uses pipeline/eval.py's normalisation (whisper-normalizer + jiwer),
DER its `der` against the corpus's RTTM, with the segments' speakers as the hypothesis.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


def _run(inp: Path, out: Path, overrides: list[str]):
    from pipeline.config import load_config
    from pipeline.ledger import read_output
    from pipeline.runner import run

    cfg = load_config(REPO / "conf/local.yaml", [f"input.uri={inp}", f"output.uri={out}", *overrides])
    run(cfg)
    return read_output(cfg.output, "segments").to_pylist(), read_output(cfg.output, "recordings").to_pylist()


def _wer_by_language(segments: list[dict], refs: dict[str, dict]) -> dict[str, float]:
    import jiwer

    from pipeline.eval import normalise

    texts: dict[str, list[str]] = {}
    for s in sorted(segments, key=lambda s: (s["uri"], s["start"])):
        texts.setdefault(Path(s["uri"]).name, []).append(s["text"])
    pairs: dict[str, tuple[list[str], list[str]]] = {}
    for name, ref in refs.items():
        if not ref.get("text") or (ref.get("num_speakers") or 1) > 1:
            continue
        lang = ref["lang"]
        r, h = pairs.setdefault(lang, ([], []))
        r.append(normalise(ref["text"], lang))
        h.append(normalise(" ".join(texts.get(name, [])), lang) or "<empty>")
    return {lang: round(jiwer.wer(r, h), 4) for lang, (r, h) in sorted(pairs.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--override", action="append", default=[], help="extra dotted.key=value for both runs")
    args = parser.parse_args()
    from pipeline.eval import der, read_rttm

    refs = {}
    for line in (CORPUS / "references.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            refs[Path(r["audio_filepath"]).name] = r
    with tempfile.TemporaryDirectory() as tmp:
        off_segs, _ = _run(CORPUS, Path(tmp) / "off", ["recording_stage.diarization.enabled=false", *args.override])
        on_segs, on_recs = _run(CORPUS, Path(tmp) / "on", ["recording_stage.diarization.enabled=true", *args.override])
    off, on = _wer_by_language(off_segs, refs), _wer_by_language(on_segs, refs)
    print("| language | WER diarization off | WER diarization on | change |")
    print("| --- | --- | --- | --- |")
    for lang in off:
        print(f"| {lang} | {off[lang]:.4f} | {on[lang]:.4f} | {on[lang] - off[lang]:+.4f} |")
    single = [
        r for r in on_recs if (refs.get(Path(r["uri"]).name, {}).get("num_speakers") or 1) == 1 and r["status"] == "ok"
    ]
    print(
        f"\nsingle-speaker files found as 1 speaker: {sum(1 for r in single if r['num_speakers'] == 1)} / {len(single)}"
    )
    print("\n| file | reference speakers | found | DER (0.25 s collar) | missed s | false alarm s | confusion s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, ref in refs.items():
        if not ref.get("rttm_filepath"):
            continue
        hyp = [(s["start"], s["end"], s["speaker"]) for s in on_segs if Path(s["uri"]).name == name]
        d = der(read_rttm((CORPUS / ref["rttm_filepath"]).read_text()), hyp, collar=0.25)
        print(
            f"| {name} | {d['ref_speakers']} | {d['hyp_speakers']} | {d['der']:.3f} | {d['missed_s']:.2f} | "
            f"{d['false_alarm_s']:.2f} | {d['confusion_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
