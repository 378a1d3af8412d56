"""Long single-language recordings WITH reference text, for `bench/stages.py` WER on long files.

    .venv/bin/python -m bench.long_corpus /tmp/long16 --files 4 --min-s 240 --max-s 360
    .venv/bin/python bench/stages.py --input /tmp/long16 --window-files 4 --against <commit>

Each file joins whole clips of one language from ../shared/corpus (those with a reference text and
one speaker) with 0.3-1.5 s of near-silence between them, so pauses are short enough for the
recording stage to merge clips into utterances, as in continuous speech; `references.jsonl` holds
each file's clips' texts joined in order (the NeMo manifest shape `stages.py` reads).
`corpora.build_long_files` (bench/throughput.py's long corpus) is built the same way
(`corpora.join_clips`), with longer files and pauses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.corpora import SR, _write, join_clips, load_sources, references

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def build(dest: Path, files: int, min_s: float, max_s: float, seed: int = 7, corpus: Path = CORPUS) -> list[dict]:
    refs = references(corpus)
    by_lang: dict[str, list[tuple[np.ndarray, str]]] = {}
    for name, audio in load_sources(corpus):
        ref = refs.get(name, {})
        if ref.get("text") and ref.get("num_speakers", 1) == 1:
            by_lang.setdefault(ref["lang"], []).append((audio, ref["text"]))
    langs = [lang for lang in sorted(by_lang) if len(by_lang[lang]) >= 2]
    rng = np.random.default_rng(seed)
    (dest / "audio").mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(files):
        lang = langs[i % len(langs)]
        audio, text = join_clips(by_lang[lang], rng.uniform(min_s, max_s), (0.3, 1.5), rng)
        rel = f"audio/long_{lang}_{i:02d}.flac"
        _write(dest / rel, audio)
        out.append({"audio_filepath": rel, "lang": lang, "text": text, "duration": round(len(audio) / SR, 3)})
    (dest / "references.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dest", type=Path)
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--min-s", type=float, default=240.0)
    p.add_argument("--max-s", type=float, default=360.0)
    p.add_argument("--seed", type=int, default=7, help="another seed draws other clips in another order")
    args = p.parse_args()
    made = build(args.dest, args.files, args.min_s, args.max_s, seed=args.seed)
    print(f"{len(made)} files, {sum(r['duration'] for r in made):.0f} s: {', '.join(r['lang'] for r in made)}")


if __name__ == "__main__":
    main()
