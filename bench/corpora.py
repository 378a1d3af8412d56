"""Benchmark corpora built from the real speech in ../shared/corpus (deterministic, seeded).

Two shapes of work, the two cases Scriptorium is for:

* short clips (pseudo-labelling): N clips of 2-15 s, each a window cut from a real recording; a
  window longer than its source is filled by joining further recordings with 0.3 s pauses.
* long files (archive): N files of `min_s`-`max_s` seconds made by joining whole recordings of ONE
  language (as an archive recording usually is; the language is drawn per file) with pauses of 0.5-3 s
  (silence at a low noise floor), so VAD has real work to do. Only recordings with a reference text
  are joined, and a file ends after a whole one, so `references.jsonl` beside `audio/` holds each
  file's texts joined in order and every system's WER can be scored (`score`).

All audio is written as 16 kHz mono FLAC. A corpus folder is reused when its `corpus.json` says it
was built with the same parameters; otherwise it is rebuilt. `scaled_copy` makes the k-fold corpus
for the scaling run by hard-linking (no extra disk, distinct names so the ledger sees new files).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SR = 16000
# Folders of ../shared/corpus that hold speech (negative/ is the no-speech clip: left out).
SPEECH_DIRS = ("speech", "multilingual", "diarization")
AUDIO_EXT = (".wav", ".flac", ".mp3", ".ogg", ".opus")
VERSION = 1
LONG_VERSION = 3  # 2: one language per long file; 3: whole recordings with text, references.jsonl


@dataclass
class CorpusInfo:
    kind: str
    path: str
    files: int
    audio_seconds: float
    params: dict

    def to_json(self) -> dict:
        return asdict(self)


def _decode(path: Path) -> np.ndarray:
    from faster_whisper.audio import decode_audio  # PyAV: every codec in the corpus, resampled to 16 kHz mono

    return np.asarray(decode_audio(str(path), sampling_rate=SR), dtype=np.float32)


def load_sources(corpus: Path) -> list[tuple[str, np.ndarray]]:
    """Every speech recording of the shared corpus, decoded, in a stable (sorted) order."""
    out = []
    for sub in SPEECH_DIRS:
        for p in sorted((corpus / sub).glob("*")):
            if p.suffix.lower() in AUDIO_EXT:
                audio = _decode(p)
                if len(audio) >= SR:  # at least 1 s
                    out.append((f"{sub}/{p.name}", audio))
    if not out:
        raise FileNotFoundError(f"no speech recordings under {corpus} ({', '.join(SPEECH_DIRS)})")
    return out


def _silence(rng: np.random.Generator, seconds: float) -> np.ndarray:
    return (rng.standard_normal(int(seconds * SR)) * 1e-4).astype(np.float32)


def join_clips(
    clips: list[tuple[np.ndarray, str]], target_s: float, pause_s: tuple[float, float], rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """Clips of one language (audio, reference text), drawn at random and joined with near-silent
    pauses of `pause_s` (low, high) seconds until `target_s`: the long file and its reference text.
    The one builder of both long corpora (`build_long_files`, bench/long_corpus.py)."""
    parts: list[np.ndarray] = []
    texts: list[str] = []
    total = 0.0
    while total < target_s:
        audio, text = clips[int(rng.integers(len(clips)))]
        pause = _silence(rng, float(rng.uniform(*pause_s)))
        parts += [audio, pause]
        texts.append(text)
        total += (len(audio) + len(pause)) / SR
    return np.concatenate(parts), " ".join(texts)


def _write(path: Path, audio: np.ndarray) -> None:
    import soundfile as sf

    tmp = path.with_suffix(".tmp.flac")
    sf.write(str(tmp), np.clip(audio, -1, 1), SR, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)


def _fresh(dest: Path, params: dict) -> CorpusInfo | None:
    meta = dest / "corpus.json"
    if meta.exists():
        info = json.loads(meta.read_text())
        if info.get("params") == params:
            return CorpusInfo(**info)
    return None


def _finish(dest: Path, kind: str, seconds: list[float], params: dict) -> CorpusInfo:
    info = CorpusInfo(kind, str(dest / "audio"), len(seconds), round(float(sum(seconds)), 3), params)
    (dest / "corpus.json").write_text(json.dumps(info.to_json(), indent=2))
    return info


def build_short_clips(
    corpus: Path,
    dest: Path,
    n: int,
    min_s: float = 2.0,
    max_s: float = 15.0,
    seed: int = 0,
    sources: list[tuple[str, np.ndarray]] | None = None,
) -> CorpusInfo:
    params = {"v": VERSION, "n": n, "min_s": min_s, "max_s": max_s, "seed": seed, "corpus": str(corpus.resolve())}
    if (info := _fresh(dest, params)) is not None:
        return info
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "audio").mkdir(parents=True)
    sources = sources or load_sources(corpus)
    rng = np.random.default_rng(seed)
    seconds = []
    for i in range(n):
        want = int(rng.uniform(min_s, max_s) * SR)
        k = int(rng.integers(len(sources)))
        audio = sources[k][1]
        while len(audio) < want:  # too short: join the next recordings with short pauses
            k = (k + 1) % len(sources)
            audio = np.concatenate([audio, _silence(rng, 0.3), sources[k][1]])
        start = int(rng.integers(0, len(audio) - want + 1))
        clip = audio[start : start + want]
        _write(dest / "audio" / f"clip_{i:05d}.flac", clip)
        seconds.append(len(clip) / SR)
    return _finish(dest, "short", seconds, params)


def build_long_files(
    corpus: Path,
    dest: Path,
    n: int,
    min_s: float = 300.0,
    max_s: float = 1200.0,
    seed: int = 1,
    sources: list[tuple[str, np.ndarray]] | None = None,
) -> CorpusInfo:
    params = {"v": LONG_VERSION, "n": n, "min_s": min_s, "max_s": max_s, "seed": seed, "corpus": str(corpus.resolve())}
    if (info := _fresh(dest, params)) is not None:
        return info
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "audio").mkdir(parents=True)
    sources = sources or load_sources(corpus)
    refs = references(corpus)
    by_lang: dict[str, list[tuple[np.ndarray, str]]] = {}
    for name, audio in sources:
        if refs.get(name, {}).get("text"):
            by_lang.setdefault(refs[name].get("lang") or "en", []).append((audio, refs[name]["text"]))
    langs = sorted(by_lang)
    rng = np.random.default_rng(seed)
    seconds, manifest = [], []
    for i in range(n):
        target = rng.uniform(min_s, max_s)
        lang = langs[int(rng.integers(len(langs)))]
        audio, text = join_clips(by_lang[lang], target, (0.5, 3.0), rng)
        _write(dest / "audio" / f"long_{i:03d}.flac", audio)
        seconds.append(len(audio) / SR)
        manifest.append(
            {
                "audio_filepath": f"audio/long_{i:03d}.flac",
                "lang": lang,
                "text": text,
                "duration": round(len(audio) / SR, 3),
            }
        )
    (dest / "references.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in manifest))
    return _finish(dest, "long", seconds, params)


def references(corpus: Path) -> dict[str, dict]:
    """Relative audio path -> its references.jsonl record."""
    out = {}
    for line in (corpus / "references.jsonl").read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[rec["audio_filepath"]] = rec
    return out


def word_errors(reference: str, hypothesis: str, lang: str):
    """jiwer's word alignment of a file's text against its reference, both sides normalised as
    `scriptorium eval` does (an empty hypothesis counts every reference word as deleted)."""
    import jiwer

    from pipeline.eval import normalise

    return jiwer.process_words(normalise(reference, lang), normalise(hypothesis, lang) or "<empty>")


def score(info: CorpusInfo, hypotheses: dict[str, str]) -> dict[str, float] | None:
    """WER of `hypotheses` (audio file name -> the system's text for the whole file) against the
    corpus's `references.jsonl`, per language and over all ("all"): errors summed over files, then
    divided by reference words, both sides normalised as `scriptorium eval` does. None: no references."""
    path = Path(info.path).parent / "references.jsonl"
    if not path.exists():
        return None
    errors: dict[str, list[int]] = {}
    for rel, ref in references(path.parent).items():
        lang = ref.get("lang") or "en"
        out = word_errors(ref["text"], hypotheses.get(Path(rel).name, ""), lang)
        for key in (lang, "all"):
            acc = errors.setdefault(key, [0, 0])
            acc[0] += out.substitutions + out.deletions + out.insertions
            acc[1] += len(out.references[0])
    return {k: round(e / max(words, 1), 4) for k, (e, words) in sorted(errors.items())}


def scaled_copy(base: CorpusInfo, dest: Path, factor: int) -> CorpusInfo:
    """`factor` copies of `base` under new names (hard links; copies if linking fails)."""
    params = {"v": VERSION, "base": base.params, "factor": factor}
    if (info := _fresh(dest, params)) is not None:
        return info
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "audio").mkdir(parents=True)
    files = sorted(Path(base.path).glob("*.flac"))
    for k in range(factor):
        for f in files:
            target = dest / "audio" / f"x{k}_{f.name}"
            try:
                os.link(f, target)
            except OSError:
                shutil.copyfile(f, target)
    info = CorpusInfo("short", str(dest / "audio"), base.files * factor, round(base.audio_seconds * factor, 3), params)
    (dest / "corpus.json").write_text(json.dumps(info.to_json(), indent=2))
    return info
