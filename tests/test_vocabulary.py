"""Word boosting (issue 17): the vocabulary config, its resolution and fingerprint, Whisper hotwords on
real and synthesised speech, NeMo phrase boosting on tiny models, and the counts in the report."""

from __future__ import annotations

import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline import vocabulary as vocab
from pipeline.config import AsrConfig, ConfigError, ModelsConfig, VocabularyConfig, load_config
from pipeline.fingerprint import job_fingerprint
from tests.helpers import load_audio as _load

SR = 16000
BASE = ["input.uri=/in", "output.uri=/out"]


def _cfg(*overrides: str):
    return load_config(None, [*BASE, *overrides])


def _fp(cfg) -> str:
    """The job's fingerprint, as the runner computes it (its vocabulary resolved first)."""
    return job_fingerprint(cfg, vocab.resolve(cfg.segment_stage.vocabulary))


# -- config -----------------------------------------------------------------------------------------


def test_cli_override_gives_a_list_of_terms():
    cfg = _cfg(
        "segment_stage.vocabulary.terms=[ComfyUI,Kubernetes]", "segment_stage.vocabulary.per_language={de: [Bundestag]}"
    )
    v = cfg.segment_stage.vocabulary
    assert v.terms == ["ComfyUI", "Kubernetes"]
    assert vocab.resolve(v) == {"*": [("ComfyUI", 1.0), ("Kubernetes", 1.0)], "de": [("Bundestag", 1.0)]}
    assert [t for t, _ in vocab.terms_for(v, "de")] == ["ComfyUI", "Kubernetes", "Bundestag"]
    assert [t for t, _ in vocab.terms_for(v, "en")] == ["ComfyUI", "Kubernetes"]


def test_unknown_or_bad_vocabulary_keys_are_refused():
    with pytest.raises(ConfigError, match="segment_stage.vocabulary.weight"):
        _cfg("segment_stage.vocabulary.weight=2")
    with pytest.raises(ConfigError, match="max_prompt_tokens"):
        _cfg("segment_stage.vocabulary.max_prompt_tokens=0")


def test_file_lines_weights_comments_and_duplicates(tmp_path):
    f = tmp_path / "terms.txt"
    f.write_text("# products\nComfyUI\t2.5\nKubernetes 1.5\nWindows 11\n\n  comfyui  \nNode.js\t3\n", encoding="utf-8")
    cfg = _cfg(f"segment_stage.vocabulary.file={f}", "segment_stage.vocabulary.terms=[Zorblax]")
    assert vocab.resolve(cfg.segment_stage.vocabulary)["*"] == [
        ("Zorblax", 1.0),
        ("ComfyUI", 2.5),
        ("Kubernetes", 1.5),
        ("Windows 11", 1.0),
        ("Node.js", 3.0),
    ]
    f.write_text("Bad\tweight\n")
    with pytest.raises(vocab.VocabularyError, match="line 1"):
        vocab.resolve(VocabularyConfig(file=str(f)))
    with pytest.raises(vocab.VocabularyError, match="does not exist"):
        vocab.resolve(VocabularyConfig(file=str(tmp_path / "missing.txt")))


def test_file_on_s3(s3_endpoint):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir("vocab-bucket")
    fs.pipe("vocab-bucket/lists/terms.txt", b"Quentrova\nFlumio\t2\n")
    cfg = _cfg(
        "segment_stage.vocabulary.file=s3://vocab-bucket/lists/terms.txt",
        f"segment_stage.vocabulary.storage.endpoint_url={s3_endpoint}",
    )
    assert vocab.resolve(cfg.segment_stage.vocabulary) == {"*": [("Quentrova", 1.0), ("Flumio", 2.0)]}
    # read once on the driver: the config that travels to the actors (pickled) carries the terms,
    # so they are there even when the object is gone
    fs.rm("vocab-bucket/lists/terms.txt")
    shipped = pickle.loads(pickle.dumps(cfg))
    assert [t for t, _ in vocab.terms_for(shipped.segment_stage.vocabulary, "en")] == ["Quentrova", "Flumio"]


def test_fingerprint_follows_the_resolved_list(tmp_path):
    plain = _fp(_cfg())
    assert _fp(_cfg("segment_stage.vocabulary.terms=[]")) == plain  # no vocabulary: fingerprint as before
    a = _fp(_cfg("segment_stage.vocabulary.terms=[ComfyUI]"))
    assert a != plain and _fp(_cfg("segment_stage.vocabulary.terms=[ComfyUI]")) == a
    assert _fp(_cfg("segment_stage.vocabulary.terms=[ComfyUI,Kubernetes]")) != a
    f = tmp_path / "t.txt"
    f.write_text("ComfyUI\n")
    assert _fp(_cfg(f"segment_stage.vocabulary.file={f}")) == a  # the contents count, not the path
    f.write_text("ComfyUI\nKubernetes\n")
    assert _fp(_cfg(f"segment_stage.vocabulary.file={f}")) != a  # an edited file reprocesses
    assert _fp(_cfg("segment_stage.vocabulary.terms=[ComfyUI]", "segment_stage.vocabulary.boost=3")) != a


def test_matcher_is_case_insensitive_on_whole_words():
    m = vocab.matcher([("ComfyUI", 1.0), ("C++", 1.0), ("New York", 1.0)])
    assert vocab.contains_term("we use comfyui daily", m)
    assert vocab.contains_term("written in C++.", m)
    assert vocab.contains_term("in new  york", m)
    assert not vocab.contains_term("ComfyUIs and newyork", m)
    assert vocab.matcher([]) is None and not vocab.contains_term("x", None)


# -- segment stage and report -----------------------------------------------------------------------


def test_segment_stage_counts_segments_with_a_term_and_the_report_sums_them():
    from pipeline.report import build_report
    from tests.test_segment_stage import _batch, _stage

    stage, _fake = _stage("segment_stage.packing.mode=none", "segment_stage.vocabulary.terms=[W1]")
    stage.vocabulary, stage._vocab_warning = stage.cfg.vocabulary, "vocabulary ignored: test"
    out = stage(_batch([[2.0, 1.5], [3.0], [1.2]]))  # the fake says "w0 w1" for 2 s, "w0" for 1.5 s
    rows = out.to_pylist()
    assert [r["vocabulary_hits"] for r in rows] == [1, 1, 0]
    assert {r["vocabulary_warning"] for r in rows} == {"vocabulary ignored: test"}
    from pipeline.execution.sink import flatten

    _segments, recordings = flatten(out, "fp")  # the count is kept in the recordings table
    assert recordings.column("vocabulary_hits").to_pylist() == [1, 1, 0]
    from pipeline.report import BlockSummary

    summary = BlockSummary.of(out.slice(0, 2)) + BlockSummary.of(out.slice(2))  # two write tasks' blocks
    rep = build_report(
        _cfg("segment_stage.vocabulary.terms=[W1]"),
        run_id="r",
        fingerprint="f",
        discovered=3,
        plan={},
        summary=summary,
        wall_seconds=1.0,
        driver_peak_rss_mb=1.0,
    )
    assert rep.vocabulary_terms == 1 and rep.vocabulary_segments == 2
    assert rep.warnings.count("vocabulary ignored: test") == 1  # said once, however many tasks met it
    assert "vocabulary: 1 terms; 2 segments contain one" in rep.summary()


def test_segment_stage_without_vocabulary_counts_nothing():
    from tests.test_segment_stage import _batch, _stage

    stage, _ = _stage("segment_stage.packing.mode=none")
    rows = stage(_batch([[2.0]])).to_pylist()
    assert rows[0]["vocabulary_hits"] is None and rows[0]["vocabulary_warning"] is None


# -- Whisper ------------------------------------------------------------------------------------------

# Invented product names no Whisper has heard, said by espeak-ng, each sentence between two clips of
# real speech from the corpus.
SENTENCES = [
    ("Please open Zorblax Studio before the meeting starts.", "Zorblax"),
    ("The Quentrova sensor reported a fault this morning.", "Quentrova"),
    ("Our team switched from Jenkins to Flumio for every release.", "Flumio"),
    ("We render every frame with Vextorial now.", "Vextorial"),
]
NEVER = ["Zorblax", "Quentrova", "Flumio", "Vextorial", "Kubernetes", "ComfyUI", "Snorkelbyte"]


def espeak(text: str, out: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(out), text], check=True, capture_output=True)
    return _load(out)


@pytest.fixture(scope="module")
def whisper():
    from pipeline.backends.whisper import WhisperAsr

    return WhisperAsr(AsrConfig())


@pytest.fixture(scope="module")
def product_clips(corpus, tmp_path_factory) -> list[np.ndarray]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    tmp = tmp_path_factory.mktemp("espeak")
    real = [_load(corpus / f"speech/speechbrain_spk{s}_snt{k}.wav") for s, k in ((1, 4), (2, 5), (1, 6), (2, 2))]
    gap = np.zeros(SR // 3, np.float32)
    clips = []
    for k, (text, _term) in enumerate(SENTENCES):
        synth = espeak(text, tmp / f"{k}.wav")
        synth = synth / max(1e-6, float(np.abs(synth).max())) * 0.5
        clips.append(
            np.concatenate([real[k][: 3 * SR], gap, synth, gap, real[(k + 1) % 4][: 3 * SR]]).astype(np.float32)
        )
    return clips


def _recall(results, terms) -> int:
    return sum(vocab.contains_term(r.text, vocab.matcher([t])) for r, t in zip(results, terms))


@pytest.mark.slow
def test_whisper_recall_of_invented_names_rises_with_the_list(whisper, product_clips):
    terms = [t for _, t in SENTENCES]
    whisper.set_vocabulary(VocabularyConfig())  # an empty vocabulary: plain decoding
    plain = whisper.transcribe(product_clips, ["en"] * len(product_clips))
    whisper.set_vocabulary(VocabularyConfig(terms=terms))
    try:
        boosted = whisper.transcribe(product_clips, ["en"] * len(product_clips))
    finally:
        whisper.vocabulary = None
    before, after = _recall(plain, terms), _recall(boosted, terms)
    assert after >= before + 2 and after >= 3, ([r.text for r in plain], [r.text for r in boosted])


def test_whisper_prompt_is_bounded_and_holds_whole_terms(whisper):
    from faster_whisper.tokenizer import Tokenizer

    tok = Tokenizer(whisper.model.hf_tokenizer, True, task="transcribe", language="en")
    many = [f"Productname{k}" for k in range(200)]
    whisper.set_vocabulary(VocabularyConfig(terms=["LowPriority"] + many, max_prompt_tokens=30))
    try:
        hot = whisper.hotwords_for(tok, "en")
        assert len(tok.encode(" " + hot)) <= 30
        assert all(p.strip() in ["LowPriority"] + many for p in hot.split(","))  # never a cut term
        prompt = whisper.model.get_prompt(tok, [], without_timestamps=True, hotwords=hot)
        assert prompt[0] == tok.sot_prev and len(prompt) <= 30 + 5  # sot_prev, terms, sot sequence, no-timestamps
        whisper.set_vocabulary(VocabularyConfig(terms=["ComfyUI"], per_language={"de": ["Bundestag"]}))
        assert whisper.hotwords_for(tok, "en") == "ComfyUI" and whisper.hotwords_for(tok, "de") == "ComfyUI, Bundestag"
        # weights order the terms: the heaviest are kept when the list does not fit
        whisper.set_vocabulary(VocabularyConfig(terms=many, max_prompt_tokens=8))
        whisper.vocabulary._resolved = {"*": [(t, 1.0) for t in many[:-1]] + [(many[-1], 5.0)]}
        assert whisper.hotwords_for(tok, "en").startswith(many[-1])
    finally:
        whisper.vocabulary = None


@pytest.mark.slow
def test_whisper_false_alarms_none_on_corpus_speech(whisper, corpus):
    clips = [
        _load(corpus / p)
        for p in (
            "speech/whisper_jfk.flac",
            "speech/speechbrain_spk1_snt1.wav",
            "speech/speechbrain_spk2_snt3.wav",
            "multilingual/fleurs-en-002.ogg",
        )
    ]
    clips.append(_load(corpus / "negative/silerovad_test.opus")[: 8 * SR])  # no speech at all
    whisper.set_vocabulary(VocabularyConfig(terms=NEVER))
    try:
        out = whisper.transcribe(clips, ["en"] * len(clips))
    finally:
        whisper.vocabulary = None
    m = vocab.matcher(NEVER)
    assert not [r.text for r in out if vocab.contains_term(r.text, m)]


# -- the guard (issue 31): a vocabulary must not cost words --------------------------------------------

UNRELATED = ["ComfyUI", "Kubernetes", "PostgreSQL", "Terraform", "Grafana", "Zorblax", "Quentrova", "Oskavell"]


def _en2_cut(corpus) -> np.ndarray:
    """10 s of a FLEURS sentence cut mid-word at the start, as VAD segments and packed windows begin:
    with 'ComfyUI' in the prompt of its 30 s window Whisper base stops after one word ('The')."""
    return _load(corpus / "multilingual/fleurs-en-002.ogg")[int(0.5 * SR) : int(10.45 * SR)]


def test_near_misses_and_word_loss():
    near = vocab.NearMisses([("Zorblax", 1.0), ("ComfyUI", 1.0), ("Kubernetes", 1.0)], 0.7)
    assert near("please open zorblocks studio in comfy UI") == ["Zorblax", "ComfyUI"]
    assert near("we deploy ComfyUI on Kubernetes") == []  # spelled already: nothing to decode again
    assert near("the birch canoe slid on the smooth planks") == []
    assert vocab.NearMisses(["ComfyUI"], 0.0)("any text at all") == ["ComfyUI"]  # 0: every window
    assert vocab.loses_words("The birch canoe slid on the smooth planks.", "The bir", 0.2)
    assert vocab.ends_mid_word("The birch canoe slid", "The birch ca")
    assert not vocab.loses_words("one two three four five", "one two three four", 0.2)  # 20% is allowed
    assert not vocab.loses_words("one two three four five", "one", 1.0)  # 1: the guard is off


def test_whisper_guard_keeps_the_words_a_prompt_would_cost(whisper, corpus):
    clip = _en2_cut(corpus)
    asr = whisper  # each window encoded whole (30 s)
    asr.set_vocabulary(VocabularyConfig())
    plain = asr.transcribe([clip], ["en"])[0]
    assert len(plain.text.split()) > 25 and not plain.vocabulary_guarded
    # the terms in the prompt of this window, no guard: how word boosting truncated before issue 31
    asr.set_vocabulary(VocabularyConfig(terms=["ComfyUI"], near_miss=0.0, max_word_loss=1.0))
    cut_short = asr.transcribe([clip], ["en"])[0]
    assert len(cut_short.text.split()) < 0.2 * len(plain.text.split()), cut_short.text
    # forced (every window decoded with the terms): the guard fires and keeps the plain decoding
    asr.set_vocabulary(VocabularyConfig(terms=["ComfyUI"], near_miss=0.0))
    guarded = asr.transcribe([clip], ["en"])[0]
    assert guarded.vocabulary_guarded and len(guarded.text.split()) >= 0.8 * len(plain.text.split())
    # as configured by default: no near miss of the term in this text, so no prompt at all
    asr.set_vocabulary(VocabularyConfig(terms=UNRELATED))
    default = asr.transcribe([clip], ["en"])[0]
    assert default.text == plain.text and not default.vocabulary_guarded
    asr.vocabulary = None


@pytest.mark.slow
def test_cli_vocabulary_keeps_the_words_and_counts_the_guard(corpus, tmp_path):
    """Through `scriptorium run`: Harvard sentences and the cut above, with a list of terms none of
    them says, every window forced through the vocabulary: no segment loses words, and the report
    counts the window the guard kept."""
    import json

    import soundfile as sf

    from tests.helpers.cli import run_cli

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    refs = {json.loads(line)["audio_filepath"]: json.loads(line) for line in (corpus / "references.jsonl").open()}
    harvard = [
        "speech/speechbrain_spk1_snt1.wav",
        "speech/speechbrain_spk2_snt3.wav",
        "speech/speechbrain_spk2_snt5.wav",
    ]
    for name in harvard:
        shutil.copy(corpus / name, inp / Path(name).name)
    sf.write(inp / "fleurs_en_cut.wav", _en2_cut(corpus), SR)
    done = run_cli(
        "run",
        "conf/local.yaml",
        f"input.uri={inp}",
        f"output.uri={out}",
        "recording_stage.vad.backend=none",  # each file one segment: the cut stays as cut
        "segment_stage.asr.encode_pad_s=null",  # 30 s windows, where the cut's prompted decoding stops short
        f"segment_stage.vocabulary.terms=[{','.join(UNRELATED)}]",
        "segment_stage.vocabulary.near_miss=0",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["vocabulary_guarded"] >= 1
    assert "segments kept their decoding without it" in done.stdout
    exported = tmp_path / "json"
    assert run_cli("export", str(out), "--format", "json", "--to", str(exported)).returncode == 0
    for name in harvard:
        text = " ".join(s["text"] for s in json.loads((exported / f"{Path(name).name}.json").read_text())["segments"])
        assert len(text.split()) >= 0.8 * len(refs[name]["text"].split()), (name, text)
    cut = json.loads((exported / "fleurs_en_cut.wav.json").read_text())["segments"]
    assert len(" ".join(s["text"] for s in cut).split()) > 25


# -- NeMo ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_nemo(tmp_path_factory) -> dict[str, Path]:
    from tests.helpers.nemo_models import some_models

    # the session's set when another module built it already, else only the four kinds needed here
    return some_models(tmp_path_factory.mktemp("tiny-nemo"), ("ctc", "tdt", "hybrid_tdt_ctc", "canary"))


@pytest.fixture()
def tree_calls(monkeypatch) -> dict[str, int]:
    """Counts NeMo's boosting-tree lookups (GPUBoostingTreeModel.advance) during decoding."""
    from nemo.collections.asr.parts.context_biasing.boosting_graph_batched import GPUBoostingTreeModel

    calls = {"n": 0}
    real = GPUBoostingTreeModel.advance

    def advance(self, *a, **k):
        calls["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(GPUBoostingTreeModel, "advance", advance)
    return calls


@pytest.mark.parametrize("kind", ["ctc", "tdt", "hybrid_tdt_ctc"])
def test_nemo_phrase_boosting_changes_the_decoding(kind, tiny_nemo, tree_calls, corpus, tmp_path):
    from pipeline.backends.nemo import NemoAsr

    clip = _load(corpus / "speech/speechbrain_spk1_snt1.wav")
    asr = NemoAsr(AsrConfig(backend="nemo", model=str(tiny_nemo[kind])), ModelsConfig(cache_dir=str(tmp_path)), False)
    before = asr.transcribe([clip], ["en"])[0].text
    assert tree_calls["n"] == 0
    # a random model is unsure of everything: a hard boost makes the phrase win
    assert asr.set_vocabulary(VocabularyConfig(terms=["the cat"], boost=10)) == []
    after = asr.transcribe([clip], ["en"])[0].text
    assert tree_calls["n"] > 0  # NeMo's boosting tree was consulted while decoding
    assert after != before and "the cat" in after.lower(), (before, after)
    # mixed weights: the tree is built with per-phrase scores and handed to NeMo as a file
    f = tmp_path / "terms.txt"
    f.write_text("the cat\t3\ndog\n")
    assert asr.set_vocabulary(VocabularyConfig(file=str(f), boost=10)) == []
    assert "the cat" in asr.transcribe([clip], ["en"])[0].text.lower()


@pytest.mark.parametrize("kind", ["ctc", "tdt"])
def test_nemo_guard_never_keeps_a_boosted_decoding_that_lost_words(kind, tiny_nemo, corpus, tmp_path):
    """The same encoder output decoded with and without the boosting tree: the tree's result is kept
    only where it adds a term and loses no words; forced (max_word_loss 0: any word lost), the guard
    fires where the tree made a random model write fewer words, and says so."""
    from pipeline.backends.nemo import NemoAsr

    clips = [_load(corpus / f"speech/speechbrain_spk{s}_snt{k}.wav") for s, k in ((1, 1), (1, 3), (2, 2), (2, 4))]
    asr = NemoAsr(AsrConfig(backend="nemo", model=str(tiny_nemo[kind])), ModelsConfig(cache_dir=str(tmp_path)), False)
    plain = asr.transcribe(clips, ["en"] * len(clips))
    asr.set_vocabulary(VocabularyConfig(terms=["the cat", "dog"], boost=10, max_word_loss=0.0))
    out = asr.transcribe(clips, ["en"] * len(clips))
    for p, o in zip(plain, out):
        assert len(o.text.split()) >= len(p.text.split()), (p.text, o.text)
        assert o.text == p.text or "the cat" in o.text.lower() or "dog" in o.text.lower()
    if kind == "ctc":  # the tree writes 'dog' over this random model's words, and on one clip fewer of them
        assert [o.vocabulary_guarded for o in out] == [False, False, False, True]


def test_nemo_canary_says_when_it_cannot_boost(tiny_nemo, tree_calls, corpus, tmp_path):
    from pipeline.backends.nemo import NemoAsr

    clip = _load(corpus / "speech/speechbrain_spk1_snt1.wav")
    asr = NemoAsr(
        AsrConfig(backend="nemo", model=str(tiny_nemo["canary"])), ModelsConfig(cache_dir=str(tmp_path)), False
    )
    before = asr.transcribe([clip], ["en"])[0].text
    warnings = asr.set_vocabulary(VocabularyConfig(terms=["the cat"], boost=10))
    # the tiny Canary's tokenizer (655) is padded to 656 outputs: NeMo 3.0's tree cannot be fused
    assert len(warnings) == 1 and "Canary" in warnings[0]
    assert asr.transcribe([clip], ["en"])[0].text == before and tree_calls["n"] == 0


def test_segment_stage_hands_the_vocabulary_to_the_asr_backend(tiny_nemo, tmp_path):
    """The real constructor: Whisper gets the terms; a NeMo model that cannot boost yields the warning."""
    from pipeline.stages.segment import SegmentStage

    stage = SegmentStage.from_config(_cfg("segment_stage.vocabulary.terms=[ComfyUI]"))
    assert stage.asr.vocabulary is stage.cfg.vocabulary and stage._vocab_warning is None
    nemo = SegmentStage.from_config(
        _cfg(
            "segment_stage.vocabulary.terms=[ComfyUI]",
            "segment_stage.asr.backend=nemo",
            f"segment_stage.asr.model={tiny_nemo['canary']}",
            "segment_stage.lid.backend=none",
            "segment_stage.lid.language=en",
            f"models.cache_dir={tmp_path}",
        )
    )
    assert nemo._vocab_warning and "Canary" in nemo._vocab_warning
