"""Word boosting (issue 17), measured side by side in one run: Whisper without and with the vocabulary.

    .venv/bin/python bench/vocabulary.py [--max-prompt-tokens 40] [--json out.json]

Three sets, all decoded by the embedded Whisper base through `WhisperAsr.transcribe` (the segment
stage's own call), each clip with its reference language, once without and once with the list:

* term clips: espeak-ng sentences naming invented products/people/places (and two real but rare
  names), several voices and speeds, each laid between two pieces of real speech from
  ../shared/corpus (clips without a reference transcript, so the WER set stays disjoint).
  Recall = term occurrences found in the output (case-insensitive, whole words) / occurrences said.
* the rest of the corpus: every clip of ../shared/corpus/references.jsonl with a reference text
  (English, and FLEURS de/en/es/fr/pt): WER, lower-cased, punctuation stripped, both sides.
* false alarms: vocabulary terms in the outputs of the rest of the corpus and of the no-speech clip
  (none of the terms is said there).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np

from pipeline import vocabulary as vocab
from pipeline.audio import decode
from pipeline.config import AsrConfig, VocabularyConfig

REPO = Path(__file__).resolve().parents[1]

CORPUS = REPO.parent / "shared" / "corpus"
SR = 16000

# (sentence, term said in it, espeak-ng voice, words per minute)
SENTENCES = [
    ("Please open Zorblax Studio before the meeting starts.", "Zorblax", "en-us", 150),
    ("The Quentrova sensor reported a fault this morning.", "Quentrova", "en-us", 160),
    ("Our team switched from Jenkins to Flumio for every release.", "Flumio", "en-gb", 150),
    ("We render every frame with Vextorial now.", "Vextorial", "en-us", 140),
    ("Doctor Amrakesh will present the results on Friday.", "Amrakesh", "en-gb", 155),
    ("The shipment left the port of Tellurivo yesterday.", "Tellurivo", "en-us", 165),
    ("Install the Plonkify plugin and restart the server.", "Plonkify", "en-us", 150),
    ("Mira Oskavell signed the contract in the afternoon.", "Oskavell", "en-gb", 145),
    ("Every node runs Kubernetes and the dashboard shows it.", "Kubernetes", "en-us", 160),
    ("I built the image pipeline in ComfyUI last week.", "ComfyUI", "en-gb", 150),
    ("The Brimwald valley floods every spring.", "Brimwald", "en-us", 150),
    ("Send the report to Zentharo before noon.", "Zentharo", "en-gb", 160),
]
# real speech around the synthetic sentences: corpus clips WITHOUT a reference transcript
CONTEXT = [
    "speech/speechbrain_spk1_snt6.wav",
    "speech/speechbrain_spk2_snt6.wav",
    "speech/lhotse_2412-153948-0001.flac",
    "speech/lhotse_common_voice_en_651325.mp3",
    "speech/silerovad_test.wav",
]


def load(path: Path | str) -> np.ndarray:
    return decode(str(path)).samples


def espeak(text: str, voice: str, wpm: int, out: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(out), text], check=True, capture_output=True)
    x = load(out)
    return (x / max(1e-6, float(np.abs(x).max())) * 0.5).astype(np.float32)


def term_clips(tmp: Path) -> list[np.ndarray]:
    ctx = [load(CORPUS / p) for p in CONTEXT]
    pieces = [c[i : i + 3 * SR] for c in ctx for i in range(0, max(1, len(c) - 3 * SR), 3 * SR)][:24]
    gap = np.zeros(SR // 3, np.float32)
    clips = []
    for k, (text, _term, voice, wpm) in enumerate(SENTENCES):
        synth = espeak(text, voice, wpm, tmp / f"{k}.wav")
        before, after = pieces[(2 * k) % len(pieces)], pieces[(2 * k + 1) % len(pieces)]
        clips.append(np.concatenate([before, gap, synth, gap, after]).astype(np.float32))
    return clips


def normalise(text: str) -> list[str]:
    text = unicodedata.normalize("NFC", text.lower())
    text = re.sub(r"[^\w\s']", " ", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(refs: list[str], hyps: list[str]) -> float:
    errors = sum(edit_distance(normalise(r), normalise(h)) for r, h in zip(refs, hyps))
    return errors / max(1, sum(len(normalise(r)) for r in refs))


def transcribe(asr, clips: list[np.ndarray], langs: list[str], batch: int = 8) -> list[str]:
    out = []
    for i in range(0, len(clips), batch):
        chunk, chunk_langs = clips[i : i + batch], langs[i : i + batch]
        for lang in sorted(set(chunk_langs)):  # WhisperAsr decodes one language per call
            idx = [k for k, x in enumerate(chunk_langs) if x == lang]
            res = asr.transcribe([chunk[k] for k in idx], [lang] * len(idx))
            for k, r in zip(idx, res):
                out.append((i + k, r.text))
    return [t for _, t in sorted(out)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-prompt-tokens", type=int, default=VocabularyConfig().max_prompt_tokens)
    ap.add_argument("--model", default="base")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()

    from pipeline.backends.whisper import WhisperAsr

    asr = WhisperAsr(AsrConfig(model=args.model))
    terms = [t for _, t, _, _ in SENTENCES]
    vcfg = VocabularyConfig(terms=terms, max_prompt_tokens=args.max_prompt_tokens)
    refs = [json.loads(line) for line in (CORPUS / "references.jsonl").read_text().splitlines() if line.strip()]
    rest = [r for r in refs if r.get("text")]
    rest_clips = [load(CORPUS / r["audio_filepath"]) for r in rest]
    rest_langs = [r["lang"] for r in rest]
    negative = [load(CORPUS / r["audio_filepath"]) for r in refs if "negative/" in r["audio_filepath"]]
    with tempfile.TemporaryDirectory() as tmp:
        clips = term_clips(Path(tmp))
    matcher = vocab.matcher(terms)

    rows = {}
    for name, vocabulary in (("without list", None), ("with list", vcfg)):
        asr.vocabulary, asr._hotwords = vocabulary, {}
        t0 = time.perf_counter()
        term_out = transcribe(asr, clips, ["en"] * len(clips))
        rest_out = transcribe(asr, rest_clips, rest_langs)
        neg_out = transcribe(asr, negative, ["en"] * len(negative))
        wall = time.perf_counter() - t0
        found = sum(vocab.contains_term(h, vocab.matcher([t])) for h, t in zip(term_out, terms))
        en = [i for i, r in enumerate(rest) if r["lang"] == "en"]
        rows[name] = {
            "term_recall": found / len(terms),
            "terms_found": found,
            "terms_said": len(terms),
            "wer_rest": wer([r["text"] for r in rest], rest_out),
            "wer_rest_en": wer([rest[i]["text"] for i in en], [rest_out[i] for i in en]),
            "false_alarms": sum(len(matcher.findall(h)) for h in rest_out + neg_out),
            "rest_clips": len(rest),
            "wall_s": wall,
            "term_outputs": term_out,
        }
        print(f"[{name}] {wall:.0f} s", file=sys.stderr)
        for t, h in zip(terms, term_out):
            print(f"  {t:<11} {'+' if vocab.contains_term(h, vocab.matcher([t])) else '-'} {h}", file=sys.stderr)

    a, b = rows["without list"], rows["with list"]
    print(
        f"Whisper {args.model}, int8, beam 1; {len(terms)} terms, max_prompt_tokens={args.max_prompt_tokens}; "
        f"term clips: {len(clips)}; rest of the corpus: {len(rest)} clips ({sum(1 for r in rest if r['lang'] == 'en')} English)"
    )
    print()
    print(
        "| decoding | term recall | WER, rest of corpus (all) | WER, rest (English) | false alarms (rest + no-speech clip) |"
    )
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['terms_found']}/{r['terms_said']} ({r['term_recall']:.0%}) | {r['wer_rest']:.4f} | "
            f"{r['wer_rest_en']:.4f} | {r['false_alarms']} |"
        )
    print(
        f"| change | {b['term_recall'] - a['term_recall']:+.0%} | {b['wer_rest'] - a['wer_rest']:+.4f} | "
        f"{b['wer_rest_en'] - a['wer_rest_en']:+.4f} | {b['false_alarms'] - a['false_alarms']:+d} |"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
