"""NeMo backends (pipeline/backends/nemo/) on real speech, with tiny randomly initialised models
(bench/nemo_models.py, built once per session: the `tiny` fixture of tests/conftest.py).

Random weights give meaningless text, languages and speakers, so these tests check contracts: shapes,
time bases, ordering, label sets, batching invariance, error paths. The post-processing that turns
model outputs into regions/turns is tested as pure functions with known inputs. No Ray.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.backends.base import AsrCapabilities, ContractError
from pipeline.backends.nemo import NemoAsr, NemoDiarizer, NemoLid, NemoVad
from pipeline.backends.nemo.words import clip_words, tokenizer_has_punctuation
from pipeline.clustering import cluster_speakers
from pipeline.config import AsrConfig, DiarizationConfig, ItnConfig, LidConfig, ModelsConfig, VadConfig
from pipeline.records import Span
from pipeline.timeline import exclusive_turns, probs_to_regions
from tests.helpers import (
    REPO,
    load_audio as load,  # the project's decoder: any codec -> 16 kHz mono float32
)
from tests.helpers.nemo_models import LID_LABELS

SR = 16000


@pytest.fixture(scope="session")
def models_cfg(tmp_path_factory) -> ModelsConfig:
    return ModelsConfig(cache_dir=str(tmp_path_factory.mktemp("model-cache")))


@pytest.fixture(scope="session")
def clips(corpus) -> list[np.ndarray]:
    names = [
        "speech/speechbrain_spk1_snt1.wav",
        "speech/lhotse_common_voice_en_651325.mp3",
        "multilingual/fleurs-de-004.ogg",
        "speech/speechbrain_spk2_snt3.wav",
        "multilingual/fleurs-en-004.ogg",
    ]
    return [load(corpus / n) for n in names]


@pytest.fixture(scope="session")
def call(corpus) -> np.ndarray:
    return load(corpus / "diarization" / "pyannote_sample.wav")


# ---------------------------------------------------------------------------------------------- pure


def test_probs_to_regions_hysteresis_and_padding():
    p = np.array([0, 0, 0.9, 0.6, 0.4, 0.9, 0, 0, 0, 0, 0, 0, 0.8, 0.8, 0, 0], dtype=float)
    # onset 0.5, offset 0.35: 0.4 keeps speech going; frames of 0.1 s
    r = probs_to_regions(p, 0.1, onset=0.5, offset=0.35, min_speech_s=0, min_silence_s=0, pad_s=0, duration=1.6)
    assert [(round(s.start, 3), round(s.end, 3)) for s in r] == [(0.2, 0.6), (1.2, 1.4)]
    # offset 0.45: 0.4 ends the region, the 0.1 s pause is bridged by min_silence 0.2
    r = probs_to_regions(p, 0.1, onset=0.5, offset=0.45, min_speech_s=0, min_silence_s=0.2, pad_s=0, duration=1.6)
    assert [(round(s.start, 3), round(s.end, 3)) for s in r] == [(0.2, 0.6), (1.2, 1.4)]
    # short speech dropped; padding clamped at both ends; padded regions that touch are merged
    r = probs_to_regions(p, 0.1, onset=0.5, offset=0.35, min_speech_s=0.3, min_silence_s=0, pad_s=0.3, duration=1.6)
    assert [(round(s.start, 3), round(s.end, 3)) for s in r] == [(0.0, 0.9)]
    r = probs_to_regions(p, 0.1, onset=0.5, offset=0.35, min_speech_s=0, min_silence_s=0, pad_s=0.35, duration=1.6)
    assert [(round(s.start, 3), round(s.end, 3)) for s in r] == [(0.0, 1.6)]
    assert probs_to_regions(np.zeros(10), 0.02, 0.5, 0.35, 0, 0, 0, 0.2) == []


def test_exclusive_turns_cover_regions_exactly():
    frame = 0.1
    probs = np.zeros((100, 3))
    probs[0:30, 2] = 0.9  # first speaker to appear is column 2 -> "spk0"
    probs[30:60, 0] = 0.8
    probs[45:47, 1] = 0.95  # a 0.2 s blip: absorbed (min turn 0.3 s)
    probs[60:100, 2] = 0.7
    regions = [Span(0.05, 5.0), Span(5.5, 9.93)]
    turns = exclusive_turns(probs, frame, regions)
    assert [(t.speaker, round(t.start, 2), round(t.end, 2)) for t in turns] == [
        ("spk0", 0.05, 3.0),
        ("spk1", 3.0, 5.0),
        ("spk1", 5.5, 6.0),
        ("spk0", 6.0, 9.93),
    ]
    # a pause with no active speaker inside a region goes to the nearest active speaker
    probs2 = np.zeros((50, 2))
    probs2[0:10, 1] = 0.9
    probs2[30:50, 0] = 0.9
    turns = exclusive_turns(probs2, 0.1, [Span(0.0, 5.0)])
    assert [(t.speaker, round(t.start, 2), round(t.end, 2)) for t in turns] == [("spk0", 0.0, 2.0), ("spk1", 2.0, 5.0)]


def test_cluster_embeddings_counts_speakers():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=16), rng.normal(size=16)
    embs = np.stack(
        [a + 0.05 * rng.normal(size=16) for _ in range(6)] + [b + 0.05 * rng.normal(size=16) for _ in range(4)]
    )
    labels = cluster_speakers(embs, threshold=0.35, max_speakers=8)
    assert len(set(labels[:6])) == 1 and len(set(labels[6:])) == 1 and labels[0] != labels[6]
    assert set(cluster_speakers(embs, threshold=0.35, max_speakers=1)) == {0}
    assert list(cluster_speakers(embs[:1], 0.35, 8)) == [0]


def test_sortformer_chunks_are_stitched_consistently():
    """A long recording goes through Sortformer in overlapping chunks whose speaker slots come back in
    arbitrary order; stitching must recover one consistent speaker per column."""
    frame = 0.08
    n_frames = 3000  # 240 s
    truth = np.zeros((n_frames, 2), dtype=np.float32)
    for k in range(0, n_frames, 200):  # speakers alternate every 16 s
        truth[k : k + 200, (k // 200) % 2] = 0.9
    diar = object.__new__(NemoDiarizer)
    diar.frame_s, diar.sortformer_chunk_s, diar.sortformer_overlap_s = frame, 100.0, 20.0
    diar._model = None
    calls = []

    def fake_forward(clip):
        f0 = int(round(calls_start[0] / SR / frame))
        calls.append(f0)
        n = int(np.ceil(len(clip) / SR / frame))
        out = np.zeros((n, 4), dtype=np.float32)
        perm = [[3, 1], [0, 2], [2, 0], [1, 3]][len(calls) % 4]  # slots shuffled per chunk
        out[:, perm] = truth[f0 : f0 + n]
        return out

    audio = np.zeros(int(n_frames * frame * SR), dtype=np.float32)
    calls_start = [0]
    hop = int((diar.sortformer_chunk_s - diar.sortformer_overlap_s) * SR)

    def forward(clip):
        out = fake_forward(clip)
        calls_start[0] += hop
        return out

    diar._sortformer_forward = forward
    probs = diar.sortformer_probs(audio)
    assert len(calls) == 3
    active = probs[:, (probs.max(axis=0) > 0.5)]
    assert active.shape[1] == 2  # two speakers overall, not one per chunk slot
    # every frame's dominant column matches the truth up to one global relabelling
    pred = active.argmax(axis=1)
    gold = truth.argmax(axis=1)
    agree = max((pred == gold).mean(), (pred == 1 - gold).mean())
    assert agree > 0.99


def test_tokenizer_punctuation_detection():
    class Tok:
        def __init__(self, vocab):
            self.vocab = vocab

    assert tokenizer_has_punctuation(Tok(["<unk>", "▁the", "s", "."]))
    assert tokenizer_has_punctuation(Tok(["<unk>", "▁The", "s"]))
    assert not tokenizer_has_punctuation(Tok(["<unk>", "<|en|>", "▁the", "s", "'"]))


def test_clip_words_are_clamped_monotonic_and_rounded():
    items = [
        ("a", -0.2, 0.3, 1.4),
        ("", 0.3, 0.4, 0.5),
        ("b", 0.25, 0.4, 0.7),
        ("x", 0.1, 0.05, -0.1),
        ("c", 0.51234, 9.0, 0.5),
    ]
    assert [(w.word, w.start, w.end, w.confidence) for w in clip_words(items, duration=1.0)] == [
        ("a", 0.0, 0.3, 1.0),  # clamped to the clip start; confidence to [0, 1]; empty text dropped
        ("b", 0.25, 0.4, 0.7),
        ("x", 0.25, 0.25, 0.0),  # start never before the previous word's; end never before its start
        ("c", 0.512, 1.0, 0.5),  # rounded to ms; clamped to the clip end
    ]


@pytest.mark.parametrize(
    "cls,cfg",
    [
        (NemoVad, VadConfig(backend="nemo")),
        (NemoLid, LidConfig(backend="nemo")),
        (NemoDiarizer, DiarizationConfig(enabled=True, backend="nemo")),
    ],
)
def test_model_id_is_name_and_digest(cls, cfg):
    backend = object.__new__(cls)
    backend.cfg, backend._ref = cfg, cfg.model or cls.default_model
    assert backend.model_id() == f"nemo:{cls.default_model}"
    backend.cfg = cfg.model_copy(update={"sha256": "ABCDEF012345" + "0" * 52})
    assert backend.model_id() == f"nemo:{cls.default_model}@sha256:abcdef012345"


def test_import_is_cheap():
    # torch and NeMo only inside functions (tests/test_layers.py checks the rule for every module);
    # fsspec is light and imported at the top like the rest of the storage code
    code = (
        "import sys, pipeline.backends.nemo, pipeline.models, pipeline.stages.itn; "
        "bad = [m for m in ('torch', 'nemo') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---------------------------------------------------------------------------------------------- VAD


def test_vad_regions_on_real_speech(tiny, models_cfg, corpus):
    audio = load(corpus / "speech" / "silerovad_test.wav")  # 60 s lecture with pauses
    vad = NemoVad(VadConfig(backend="nemo", model=str(tiny["vad"]), threshold=0.5), models_cfg, use_gpu=False)
    assert vad.frame_s == pytest.approx(0.02)
    assert vad.model_id() == f"nemo:{tiny['vad']}"
    duration = len(audio) / SR
    probs = vad.speech_probs(audio)
    assert probs.shape == (int(np.ceil(duration / 0.02)),)
    assert np.all((probs >= 0) & (probs <= 1))
    regions = vad.speech_regions(audio)
    for r in regions:
        assert 0 <= r.start < r.end <= duration + 1e-6
    assert all(a.end < b.start for a, b in zip(regions, regions[1:]))
    # chunked processing (bounded memory) gives the same probabilities as one long chunk
    vad.chunk_s = 7.0
    chunked = vad.speech_probs(audio)
    vad.chunk_s = 1000.0
    whole = vad.speech_probs(audio)
    np.testing.assert_allclose(chunked, whole, atol=1e-4)
    assert vad.speech_regions(np.zeros(0, dtype=np.float32)) == []


# ---------------------------------------------------------------------------------------------- LID


def test_lid_labels_and_batching(tiny, models_cfg, clips):
    lid = NemoLid(LidConfig(backend="nemo", model=str(tiny["lid"])), models_cfg, use_gpu=False)
    assert lid.labels() == LID_LABELS
    assert lid.model_id() == f"nemo:{tiny['lid']}"
    batched = lid.identify(clips)
    assert len(batched) == len(clips)
    for (lang, prob), single in zip(batched, (lid.identify([c])[0] for c in clips)):
        assert lang in lid.labels() and 0.0 <= prob <= 1.0
        assert lang == single[0] and prob == pytest.approx(single[1], abs=1e-4)
    assert lid.identify([]) == []


# ---------------------------------------------------------------------------------------------- ASR


@pytest.mark.parametrize(
    "kind,punctuated",
    [("ctc", False), ("ctc_pc", True), ("rnnt", False), ("tdt", True), ("hybrid_tdt_ctc", False)],
)
def test_asr_words_timestamps_and_batching(tiny, models_cfg, clips, kind, punctuated):
    asr = NemoAsr(AsrConfig(backend="nemo", model=str(tiny[kind])), models_cfg, use_gpu=False)
    assert asr.native_punctuation is punctuated
    assert asr.capabilities == AsrCapabilities(
        window_s=None, one_language_per_call=False, detects_language=False, native_punctuation=punctuated
    )
    assert asr.frame_s == pytest.approx(0.08)
    assert asr.model_id().startswith("nemo:")
    langs = ["en", "en", "de", None, "fr"]
    results = asr.transcribe(clips, langs)
    assert len(results) == len(clips)
    for clip, lang, res in zip(clips, langs, results):
        duration = len(clip) / SR
        assert res.language == lang
        assert 0.0 <= res.confidence <= 1.0
        starts = [w.start for w in res.words]
        assert starts == sorted(starts)
        for w in res.words:
            assert type(w.start) is float and type(w.end) is float and type(w.confidence) is float
            assert 0.0 <= w.start <= w.end <= duration + 5e-4  # Word times are rounded to ms
            assert 0.0 <= w.confidence <= 1.0
            assert w.word and w.word == w.word.strip()
        assert " ".join(w.word for w in res.words).split() == res.text.split()
    # batching (padding) does not change the transcript
    singles = [asr.transcribe([c], [lang])[0].text for c, lang in zip(clips, langs)]
    assert [r.text for r in results] == singles
    assert asr.padded_seconds([1.0, 3.0, 2.0]) == pytest.approx(9.0)


def test_canary_language_prompts(tiny, models_cfg, clips):
    """Canary (AED multitask): one prompt per language group, results back in input order."""
    asr = NemoAsr(AsrConfig(backend="nemo", model=str(tiny["canary"])), models_cfg, use_gpu=False)
    assert asr._kind.multitask and asr.native_punctuation
    assert asr._canary_langs == set(LID_LABELS)
    picked = [clips[1], clips[3], clips[0]]
    langs = ["de", "ja", None]  # ja: no prompt in this model -> transcribed with "en", still reported as ja
    results = asr.transcribe(picked, langs)
    assert [r.language for r in results] == langs
    for clip, res in zip(picked, results):
        assert isinstance(res.text, str) and 0.0 <= res.confidence <= 1.0
        for w in res.words:
            assert 0.0 <= w.start <= w.end <= len(clip) / SR + 1e-6
    assert not asr._model.training
    # the same clip alone, with the same prompt, gives the same text
    assert asr.transcribe([picked[0]], ["de"])[0].text == results[0].text


def test_asr_edge_cases_and_oom_split(tiny, models_cfg, clips, monkeypatch):
    import torch

    asr = NemoAsr(AsrConfig(backend="nemo", model=str(tiny["ctc"])), models_cfg, use_gpu=False)
    assert asr.transcribe([], []) == []
    res = asr.transcribe([np.zeros(0, dtype=np.float32), clips[1]], ["en", "en"])
    assert res[0].text == "" and res[0].words == [] and res[1].text == asr.transcribe([clips[1]], ["en"])[0].text
    with pytest.raises(ValueError):
        asr.transcribe(clips[:2], ["en"])
    # a forward that loses a result is a broken contract, not a shifted one
    real = asr._forward
    monkeypatch.setattr(asr, "_forward", lambda batch: real(batch)[:-1])
    with pytest.raises(ContractError, match=r"2 results for 2 clips \(1 of them None\)"):
        asr.transcribe(clips[:2], ["en", "en"])
    monkeypatch.undo()

    expected = [r.text for r in asr.transcribe(clips, [None] * len(clips))]
    real_forward = asr._forward
    sizes = []

    def forward_oom_above_one(batch):
        sizes.append(len(batch))
        if len(batch) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(batch)

    monkeypatch.setattr(asr, "_forward", forward_oom_above_one)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    assert [r.text for r in asr.transcribe(clips, [None] * len(clips))] == expected
    assert sizes[0] == len(clips) and sizes.count(1) == len(clips)

    monkeypatch.setattr(asr, "_forward", lambda batch: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("oom")))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        asr.transcribe(clips[:1], [None])


def test_use_gpu_without_cuda_is_a_clear_error(tiny, models_cfg):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        NemoAsr(AsrConfig(backend="nemo", model=str(tiny["ctc"])), models_cfg, use_gpu=True)


# ---------------------------------------------------------------------------------------------- diarization


@pytest.mark.parametrize("kind,mode", [("sortformer", "sortformer"), ("speaker", "embedding")])
def test_diarization_turns_cover_vad_regions(tiny, models_cfg, call, kind, mode):
    cfg = DiarizationConfig(
        enabled=True, backend="nemo", model=str(tiny[kind]), embedding_window_s=1.5, embedding_hop_s=0.75
    )
    diar = NemoDiarizer(cfg, models_cfg, use_gpu=False)
    assert diar.mode == mode
    assert diar.model_id() == f"nemo:{tiny[kind]}"
    duration = len(call) / SR
    regions = [Span(0.4, 6.2), Span(7.0, 18.5), Span(19.0, duration + 5.0)]  # the last one overhangs the file
    turns = diar.speaker_turns(call, regions)
    assert turns, "speech regions must produce turns"
    assert all(t.speaker is not None and t.speaker.startswith("spk") for t in turns)
    assert all(a.end <= b.start + 1e-9 for a, b in zip(turns, turns[1:]))  # sorted, exclusive
    # turns cover exactly the speech of the regions (clipped to the file)
    covered = sum(t.duration for t in turns)
    speech = sum(min(r.end, duration) - r.start for r in regions)
    assert covered == pytest.approx(speech, abs=1e-6)
    for t in turns:
        assert any(r.start - 1e-9 <= t.start and t.end <= min(r.end, duration) + 1e-9 for r in regions)
    speakers = [t.speaker for t in turns]
    first_seen = list(dict.fromkeys(speakers))
    assert first_seen == [f"spk{i}" for i in range(len(first_seen))]
    assert diar.speaker_turns(call, []) == []


def test_registry_builds_nemo_backends(tiny, models_cfg):
    from pipeline.backends.registry import make_asr, make_diarizer, make_lid, make_vad
    from pipeline.config import SegmentStageConfig

    stage_cfg = SegmentStageConfig(
        asr=AsrConfig(backend="nemo", model=str(tiny["tdt"])), lid=LidConfig(backend="nemo", model=str(tiny["lid"]))
    )
    asr = make_asr(stage_cfg.asr, models_cfg, False)
    assert isinstance(asr, NemoAsr)
    assert isinstance(make_vad(VadConfig(backend="nemo", model=str(tiny["vad"])), models_cfg, False), NemoVad)
    assert isinstance(make_lid(stage_cfg, asr, models_cfg, False), NemoLid)
    diar = make_diarizer(
        DiarizationConfig(enabled=True, backend="nemo", model=str(tiny["sortformer"])), models_cfg, False
    )
    assert isinstance(diar, NemoDiarizer)


# ---------------------------------------------------------------------------------------------- ITN


def test_itn_disabled_and_missing_extra(monkeypatch):
    from pipeline.stages.itn import ItnUnavailableError, make_itn

    assert make_itn(ItnConfig(enabled=False)) is None
    # simulate an environment without the extra (a None entry makes the import fail)
    monkeypatch.setitem(sys.modules, "nemo_text_processing", None)
    monkeypatch.setitem(sys.modules, "nemo_text_processing.inverse_text_normalization", None)
    monkeypatch.setitem(sys.modules, "nemo_text_processing.inverse_text_normalization.inverse_normalize", None)
    with pytest.raises(ItnUnavailableError, match=r"pip install 'scriptorium\[itn\]'"):
        make_itn(ItnConfig(enabled=True))


# ---------------------------------------------------------------------------------------------- overlapped speech


def _sortformer_with_bias(src, dst, bias):
    """The tiny Sortformer with its output layer set to constants: speaker k's activity is
    sigmoid(bias[k]) in every frame, whatever it hears (a known answer for the overlap rule)."""
    import torch
    from nemo.collections.asr.models import SortformerEncLabelModel

    model = SortformerEncLabelModel.restore_from(str(src), map_location="cpu")
    layer = model.sortformer_modules.single_hidden_to_spks
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor(bias, dtype=layer.bias.dtype))
    model.save_to(str(dst))
    return dst


@pytest.fixture(scope="module")
def overlapping_sortformer(tiny, tmp_path_factory):
    """Speaker 0 dominant (p 0.998) and speaker 1 active too (p 0.98) in every frame: all overlap."""
    return _sortformer_with_bias(
        tiny["sortformer"], tmp_path_factory.mktemp("sf") / "overlap.nemo", [6.0, 4.0, -8.0, -8.0]
    )


def test_sortformer_reports_overlapped_speech_and_titanet_cannot(
    tiny, models_cfg, call, overlapping_sortformer, tmp_path
):
    regions = [Span(0.4, 6.2), Span(7.0, 18.5)]
    diar = NemoDiarizer(
        DiarizationConfig(enabled=True, backend="nemo", model=str(overlapping_sortformer)), models_cfg, False
    )
    found = diar.diarize(call, regions)
    assert [(t.start, t.end, t.speaker) for t in found.turns] == [
        (0.4, 6.2, "spk0"),
        (7.0, 18.5, "spk0"),
    ]  # the dominant one
    assert [(o.start, o.end, o.speakers) for o in found.overlaps] == [
        (0.4, 6.2, ("spk0", "spk1")),
        (7.0, 18.5, ("spk0", "spk1")),
    ]
    # one active speaker: Sortformer can tell, and there is no overlap ([] rather than None)
    solo = _sortformer_with_bias(tiny["sortformer"], tmp_path / "solo.nemo", [6.0, -8.0, -8.0, -8.0])
    found = NemoDiarizer(DiarizationConfig(enabled=True, backend="nemo", model=str(solo)), models_cfg, False).diarize(
        call, regions
    )
    assert found.overlaps == [] and {t.speaker for t in found.turns} == {"spk0"}
    # TitaNet + clustering: one speaker per window, so it cannot tell (None, not "no overlap")
    cfg = DiarizationConfig(
        enabled=True, backend="nemo", model=str(tiny["speaker"]), embedding_window_s=1.5, embedding_hop_s=0.75
    )
    found = NemoDiarizer(cfg, models_cfg, False).diarize(call, regions)
    assert found.turns and found.overlaps is None


@pytest.mark.ray
@pytest.mark.slow
def test_cli_marks_overlapped_speech_from_sortformer_on_words_segments_and_recordings(
    corpus, overlapping_sortformer, tmp_path
):
    """The path a user takes: `scriptorium run` with diarization.backend=nemo and a Sortformer .nemo;
    every frame has two active speakers, so every word is spoken in overlap and keeps the dominant speaker."""
    import json
    import shutil

    from pipeline.config import OutputConfig
    from pipeline.ledger import read_output
    from tests.helpers import LOCAL_CONF, sha256_of
    from tests.helpers.cli import run_cli

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(corpus / "speech/speechbrain_spk1_snt1.wav", src)
    out = tmp_path / "out"
    res = run_cli(
        "run",
        str(LOCAL_CONF),
        f"input.uri={src}",
        f"output.uri={out}",
        f"models.cache_dir={tmp_path / 'cache'}",
        "recording_stage.diarization.enabled=true",
        "recording_stage.diarization.backend=nemo",
        f"recording_stage.diarization.model={overlapping_sortformer}",
        f"recording_stage.diarization.sha256={sha256_of(overlapping_sortformer)}",
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    [rec] = read_output(OutputConfig(uri=str(out)), "recordings").to_pylist()
    segments = read_output(OutputConfig(uri=str(out)), "segments").to_pylist()
    words = [w for s in segments for w in s["words"]]
    assert rec["status"] == "ok" and rec["num_speakers"] == 1  # spk1 is never the dominant speaker
    assert rec["overlap_seconds"] == pytest.approx(rec["speech_seconds"], abs=0.2)
    assert words and all(w["overlap"] is True and w["speaker"] == "spk0" for w in words)
    assert all(s["overlap_seconds"] == pytest.approx(s["duration"], abs=0.01) for s in segments)
    report = json.loads((out / "report.json").read_text())
    assert report["overlap_recordings"] == 1 and report["overlap_seconds"] == pytest.approx(rec["overlap_seconds"])


# ---------------------------------------------------------------------------------------------- beyond 4 speakers


def test_every_slot_busy_asks_each_slot_for_min_speaker_s_inside_the_regions():
    from pipeline.backends.nemo.diarization import every_slot_busy

    frame = 0.08
    probs = np.zeros((250, 4))  # 20 s
    for k in range(4):
        probs[k * 50 : k * 50 + 40, k] = 0.9  # each slot active for 3.2 s
    regions = [Span(0.0, 20.0)]
    assert every_slot_busy(probs, frame, regions, 3.0)
    assert not every_slot_busy(probs, frame, regions, 4.0)  # 3.2 s is not enough
    assert not every_slot_busy(probs, frame, [Span(0.0, 12.0)], 3.0)  # slot 3 speaks outside the speech
    probs[:, 3] = 0.2
    assert not every_slot_busy(probs, frame, regions, 3.0)  # a free slot: Sortformer had room for everyone


def test_sortformer_hands_over_to_titanet_when_every_slot_is_busy(tiny, models_cfg, call, tmp_path):
    regions = [Span(0.4, 6.2), Span(7.0, 18.5)]
    window = {"embedding_window_s": 1.5, "embedding_hop_s": 0.75, "min_speaker_s": 2.0}
    crowded = _sortformer_with_bias(tiny["sortformer"], tmp_path / "crowded.nemo", [6.0, 5.0, 4.0, 3.0])
    cfg = DiarizationConfig(
        enabled=True, backend="nemo", model=str(crowded), beyond_model=str(tiny["speaker"]), **window
    )
    diar = NemoDiarizer(cfg, models_cfg, False)
    assert diar.model_id() == f"nemo:{crowded} + beyond nemo:{tiny['speaker']}"
    found = diar.diarize(call, regions)
    assert diar.last_mode == "beyond" and found.overlaps is None
    alone = NemoDiarizer(
        DiarizationConfig(enabled=True, backend="nemo", model=str(tiny["speaker"]), **window), models_cfg, False
    )
    assert found.turns == alone.diarize(call, regions).turns  # the clustering's turns, not Sortformer's
    # two busy slots of four: Sortformer keeps the recording (and tells the overlap)
    two = _sortformer_with_bias(tiny["sortformer"], tmp_path / "two.nemo", [6.0, 4.0, -8.0, -8.0])
    diar = NemoDiarizer(cfg.model_copy(update={"model": str(two)}), models_cfg, False)
    found = diar.diarize(call, regions)
    assert diar.last_mode == "sortformer" and found.overlaps and {t.speaker for t in found.turns} == {"spk0"}
    with pytest.raises(TypeError, match="beyond_model"):
        NemoDiarizer(cfg.model_copy(update={"beyond_model": str(two)}), models_cfg, False)
