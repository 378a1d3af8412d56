"""Word boosting: the job's vocabulary, resolved once on the driver.

`resolve(cfg)` turns `segment_stage.vocabulary`'s `terms`, `file` (local path or fsspec/S3 URI) and
`per_language` into {"*": [(term, weight)], "de": [...], ...}: whitespace collapsed,
empty lines and `#` comments dropped, duplicates (case-insensitive) merged keeping the highest
weight, first-seen order otherwise. The result is cached on the config object, which Ray pickles
into the actors: backends call `terms_for(cfg, language)` and never read the file again. The
runner resolves it first, for the fingerprint (pipeline/fingerprint.py), which hashes the resolved
list: editing the file reprocesses.

How each backend uses it: Whisper puts the terms in the decoder prompt through faster-whisper's own
`hotwords` argument of `WhisperModel.get_prompt` (bounded by `max_prompt_tokens`); NeMo builds its
phrase-boosting tree (GPU-PB, `BoostingTreeModelConfig`) into the greedy_batch decoder of CTC,
RNNT/TDT and hybrid models, and into Canary's beam decoder (pipeline/backends/*.py).

The guard (issue 31): Whisper and NeMo's CTC/transducer models decode the same encoder output with
and without the terms, and keep the decoding with them only where it adds a term and costs no words
(`choose`): a vocabulary may add the words it names, never take others away.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cdist

from pipeline.config import ConfigError, VocabularyConfig
from pipeline.storage import filesystem, with_retries

ALL = "*"  # key of the terms that hold for every language

Term = tuple[str, float]

_NUMBER = re.compile(r"^[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?$")


class VocabularyError(ConfigError):
    """The vocabulary file cannot be read or holds a bad line; the message names the file and line.
    A ConfigError: the CLI exits 2 with this one line."""


def parse_line(line: str) -> Term | None:
    """One line of a vocabulary file -> (term, weight), or None for a blank or comment line.

    The weight follows a tab (`ComfyUI<TAB>2`), or a space when it is written with a decimal point
    (`ComfyUI 2.0`), so that terms ending in a number ("Windows 11") stay whole."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    weight = 1.0
    if "\t" in line:
        term, _, raw = line.rpartition("\t")
        try:
            weight = float(raw)
        except ValueError:
            raise VocabularyError(f"weight {raw!r} after the tab is not a number") from None
    else:
        term, _, raw = line.rpartition(" ")
        if term and _NUMBER.match(raw):
            weight = float(raw)
        else:
            term = line
    term = " ".join(term.split())
    if not term:
        return None
    if weight <= 0:
        raise VocabularyError(f"term {term!r}: weight {weight} must be > 0")
    return term, weight


def normalise(terms: Iterable[Term]) -> list[Term]:
    """Collapse whitespace, drop empties, merge case-insensitive duplicates (highest weight wins, the
    first spelling and position are kept)."""
    out: dict[str, list] = {}
    for term, weight in terms:
        term = " ".join(str(term).split())
        if not term:
            continue
        key = term.casefold()
        if key in out:
            out[key][1] = max(out[key][1], float(weight))
        else:
            out[key] = [term, float(weight)]
    return [(t, w) for t, w in out.values()]


def read_file(uri: str, cfg: VocabularyConfig) -> list[Term]:
    """Terms of a vocabulary file (local or any fsspec URI, e.g. s3://bucket/terms.txt)."""
    fs, path = filesystem(uri, cfg.storage)
    try:
        raw = with_retries(lambda: fs.cat_file(path))
    except FileNotFoundError:
        raise VocabularyError(f"segment_stage.vocabulary.file {uri!r} does not exist") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise VocabularyError(f"segment_stage.vocabulary.file {uri!r} is not UTF-8 text") from None
    terms = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            item = parse_line(line)
        except VocabularyError as exc:
            raise VocabularyError(f"segment_stage.vocabulary.file {uri!r} line {n}: {exc}") from None
        if item:
            terms.append(item)
    return terms


def resolve(cfg: VocabularyConfig) -> dict[str, list[Term]]:
    """{"*": terms for every language, lang: extra terms} (only non-empty keys). Reads the file on the
    first call only: the result is cached on `cfg` and travels with it (pickled) to the actors."""
    cached = cfg._resolved
    if cached is not None:
        return cached
    common = [(t, 1.0) for t in cfg.terms]
    if cfg.file:
        common += read_file(cfg.file, cfg)
    out: dict[str, list[Term]] = {}
    if normalise(common):
        out[ALL] = normalise(common)
    for lang, extra in sorted(cfg.per_language.items()):
        terms = normalise((t, 1.0) for t in extra)
        if terms:
            out[lang.strip().lower()] = terms
    cfg._resolved = out
    return out


def terms_for(cfg: VocabularyConfig, language: str | None) -> list[Term]:
    """The terms that hold for `language` (None: the common ones only), common ones first."""
    resolved = resolve(cfg)
    terms = list(resolved.get(ALL, []))
    if language:
        terms += resolved.get(language.lower(), [])
    return normalise(terms)


def all_terms(cfg: VocabularyConfig) -> list[Term]:
    """Every term of every language (what a language-agnostic decoder is biased with)."""
    return normalise(t for terms in resolve(cfg).values() for t in terms)


def is_empty(cfg: VocabularyConfig) -> bool:
    return not resolve(cfg)


def matcher(terms: Sequence[Term] | Sequence[str]) -> re.Pattern | None:
    """Case-insensitive, word-boundary regex matching any of the terms (None for no terms). A
    boundary is the edge of a run of letters/digits, so 'C++' and 'Node.js' match too."""
    words = sorted({(t[0] if isinstance(t, tuple) else t) for t in terms}, key=len, reverse=True)
    if not words:
        return None
    alt = "|".join(r"\s+".join(re.escape(p) for p in w.split()) for w in words)
    return re.compile(rf"(?<!\w)(?:{alt})(?!\w)", re.IGNORECASE)


def contains_term(text: str, pattern: re.Pattern | None) -> bool:
    return bool(pattern and text and pattern.search(text))


# -- the guard: a vocabulary may add the words it names, never take others away --------------------

_SOUNDS = (("ph", "f"), ("ck", "k"), ("x", "ks"), ("c", "k"), ("q", "k"), ("z", "s"), ("w", "v"))


def _key(text: str) -> str:
    """Letters and digits only, case-folded: 'Comfy UI' and 'ComfyUI' have the same key."""
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def _sound(key: str) -> str:
    """A crude phonetic skeleton of a key: letters that sound alike merged, every vowel one symbol,
    repeats collapsed ('zorblax' and 'zorblocks' -> 'sarblaks')."""
    for a, b in _SOUNDS:
        key = key.replace(a, b)
    key = re.sub(r"[aeiouy]+", "a", key)
    return re.sub(r"(.)\1+", r"\1", key)


class NearMisses:
    """Finds the terms a text holds something close to but does not spell: a run of one to n+1
    words (n = the term's words) whose letters, or whose phonetic skeleton, are within a normalised
    Levenshtein similarity of `threshold` of the term's ('Comfy UI', 'Zorblocks'). A term the text
    already spells (`matcher`) is not a near miss: decoding again would not change it. Whisper
    decodes a window with the terms in its prompt only where this finds one
    (pipeline/backends/whisper.py). Built once per language: the keys and patterns are reused."""

    def __init__(self, terms: Sequence[Term] | Sequence[str], threshold: float):
        self.terms = [t[0] if isinstance(t, tuple) else t for t in terms]
        self.threshold = threshold
        self.keys = [_key(t) for t in self.terms]
        self.sounds = [_sound(k) for k in self.keys]
        self.patterns = [matcher([t]) for t in self.terms]
        self.pattern = matcher(self.terms)  # any of them: what the guard counts (`adds_term`)
        self.longest = max((len(t.split()) for t in self.terms), default=1) + 1

    def __call__(self, text: str) -> list[str]:
        words = [k for k in (_key(w) for w in text.split()) if k]
        if not words or not self.terms:
            return []
        cands = ["".join(words[i : i + n]) for n in range(1, self.longest + 1) for i in range(len(words) - n + 1)]
        sizes = np.array([len(c) for c in cands])[:, None]
        lens = np.array([len(k) for k in self.keys])[None, :]
        score = np.maximum(
            cdist(cands, self.keys, scorer=Levenshtein.normalized_similarity),
            cdist([_sound(c) for c in cands], self.sounds, scorer=Levenshtein.normalized_similarity),
        )
        score[np.abs(sizes - lens) > np.maximum(2, lens // 2)] = 0.0  # a word much longer or shorter
        hit = (score >= self.threshold).any(axis=0)
        return [t for t, h, p in zip(self.terms, hit, self.patterns) if h and not contains_term(text, p)]


def ends_mid_word(plain: str, boosted: str) -> bool:
    """Whether `boosted` stops inside a word that `plain` says whole ('The bir' against 'The birch
    canoe ...'): its last word is not a word of `plain` but begins one."""
    last = _key(boosted.split()[-1]) if boosted.split() else ""
    words = {_key(w) for w in plain.split()}
    return bool(last) and last not in words and any(w.startswith(last) for w in words)


def loses_words(plain: str, boosted: str, max_loss: float) -> bool:
    """Whether the decoding with the vocabulary lost more than `max_loss` of the words of the one
    without it, or ends mid-word: then the plain one is kept (the vocabulary must not cost words).
    `max_loss` 1 turns the guard off (bench/vocabulary.py measures what it prevents)."""
    if max_loss >= 1.0:
        return False
    n_plain, n_boosted = len(plain.split()), len(boosted.split())
    return n_boosted < (1.0 - max_loss) * n_plain or ends_mid_word(plain, boosted)


def adds_term(plain: str, boosted: str, pattern: re.Pattern | None) -> bool:
    """Whether `boosted` says a term more often than `plain`: the one thing a vocabulary is for. A
    decoding with the terms that adds none is not kept (its other changes are the prompt's noise)."""
    return bool(pattern) and len(pattern.findall(boosted)) > len(pattern.findall(plain))


def choose(plain: str, boosted: str, pattern: re.Pattern | None, max_loss: float) -> str:
    """The guard's verdict on one window decoded without and with the vocabulary: "boosted" where it
    adds a term and costs no words, "guarded" where it cost words (`loses_words`; counted in the
    report), else "plain". `max_loss` 1: the guard is off, the decoding with the terms is kept as it
    is (how it was before; bench/vocabulary.py's "before" rows)."""
    if max_loss >= 1.0:
        return "boosted"
    if loses_words(plain, boosted, max_loss):
        return "guarded"
    return "boosted" if adds_term(plain, boosted, pattern) else "plain"
