"""Fast tests of the pure parts: config validation, segmentation rules, bucketing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.batching import plan_batches
from pipeline.config import ConfigError, SegmentationConfig, load_config
from pipeline.records import Span
from pipeline.timeline import utterances

BASE = ["input.uri=/in", "output.uri=/out"]


def test_config_unknown_key_names_key_and_choices():
    with pytest.raises(ConfigError) as err:
        load_config("conf/local.yaml", [*BASE, "segment_stage.asr.modle=base"])
    assert "segment_stage.asr.modle" in str(err.value) and "model" in str(err.value)


def test_config_bad_choice_lists_valid_values():
    with pytest.raises(ConfigError) as err:
        load_config("conf/local.yaml", [*BASE, "recording_stage.vad.backend=webrtc"])
    msg = str(err.value)
    assert "recording_stage.vad.backend" in msg and "'silero'" in msg and "'nemo'" in msg


def test_overrides_are_typed_and_change_the_fingerprint():
    a = load_config("conf/local.yaml", BASE)
    b = load_config("conf/local.yaml", [*BASE, "recording_stage.segmentation.max_segment_s=12",
                                        "recording_stage.diarization.enabled=true"])
    rec = b.recording_stage
    assert rec.segmentation.max_segment_s == 12.0 and rec.diarization.enabled is True
    assert a.fingerprint() != b.fingerprint()
    # output location is not part of what a transcript depends on
    assert a.fingerprint() == load_config("conf/local.yaml", ["input.uri=/x", "output.uri=/y"]).fingerprint()


def test_utterances_never_cross_speakers_and_respect_max_length():
    cfg = SegmentationConfig(max_segment_s=10, min_segment_s=0.3, merge_gap_s=1.0)
    regions = [Span(0.0, 4.0), Span(4.5, 30.0), Span(31.0, 31.1)]
    turns = [Span(0.0, 3.0, "spk0"), Span(3.0, 12.0, "spk1"), Span(12.0, 40.0, "spk0")]
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, 40 * 16000).astype(np.float32)
    audio[int(8.0 * 16000) : int(8.1 * 16000)] = 0  # a quiet moment to split at
    out = utterances(regions, turns, cfg, audio)
    assert all(s.duration <= 10.0 + 1e-6 for s in out)
    assert all(s.duration >= 0.3 for s in out)  # the 0.1 s blip is dropped
    for s in out:
        owners = {t.speaker for t in turns if t.start < s.end and s.start < t.end}
        assert owners == {s.speaker}
    assert [s.start for s in out] == sorted(s.start for s in out)
    # speech of spk1 from 3.0 to 12.0 minus the 4.0-4.5 gap merged back (gap < 1 s) and split once
    spk1 = [s for s in out if s.speaker == "spk1"]
    assert spk1[0].start == 3.0 and spk1[-1].end == 12.0


def _padding_ratio(batches, durs, cost) -> float:
    """Share of model compute spent on padding: 1 - audio / padded."""
    audio = sum(durs[i] for b in batches for i in b)
    return 1.0 - audio / sum(cost([durs[i] for i in b]) for b in batches)


def test_plan_batches_covers_every_item_once_and_respects_budget():
    rng = np.random.default_rng(1)
    durs = list(rng.uniform(0.5, 20, 200))
    cost = lambda d: max(d) * len(d)  # FastConformer-style
    batches = plan_batches(durs, cost, max_padded_s=120, max_items=32)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(200))
    assert all(cost([durs[i] for i in b]) <= 120 or len(b) == 1 for b in batches)
    on = _padding_ratio(batches, durs, cost)
    off = _padding_ratio(plan_batches(durs, cost, max_padded_s=120, max_items=32, sort=False), durs, cost)
    assert on < 0.1 < off
    batches = plan_batches(durs, cost, max_padded_s=120, max_items=32, max_extra_padding=0.05)
    tight = _padding_ratio(batches, durs, cost)
    assert tight <= 0.05 < on and sorted(i for b in batches for i in b) == list(range(200))
    # with Whisper's fixed 30 s window the rule never splits: batches stay full
    whisper = lambda d: 30.0 * len(d)
    assert [len(b) for b in plan_batches(durs[:32], whisper, 240, 8, max_extra_padding=0.05)] == [8, 8, 8, 8]


def test_audio_column_shares_float32_buffers_and_reads_back_in_place():
    import pyarrow as pa

    from pipeline.records import audio_column, samples_at

    a, b = np.arange(10, dtype="<f4"), np.arange(1000, dtype="<f4")
    col = audio_column([a, None, b])
    for c in (col, pa.table({"audio": col}).combine_chunks().column("audio")):
        assert np.array_equal(samples_at(c, 0), a) and samples_at(c, 1) is None
        assert np.array_equal(samples_at(c, 2), b)


def test_whisper_weights_are_verified_before_loading(tmp_path):
    from pipeline.backends.whisper import EMBEDDED, embedded_model_dir, resolve_whisper_model
    from pipeline.config import AsrConfig
    from pipeline.models import ModelIntegrityError, sha256_file

    embedded = embedded_model_dir("base")  # reassembled from the two pip packages, hash checked
    assert sha256_file(embedded / "model.bin") == EMBEDDED["base"]["sha256"]
    own = tmp_path / "ct2"
    own.mkdir()
    (own / "model.bin").symlink_to(embedded / "model.bin")
    assert resolve_whisper_model(AsrConfig(model=str(own), sha256=EMBEDDED["base"]["sha256"])) == str(own)
    with pytest.raises(ModelIntegrityError):
        resolve_whisper_model(AsrConfig(model=str(own), sha256="0" * 64))
    with pytest.raises(FileNotFoundError, match="no model hub is contacted"):
        resolve_whisper_model(AsrConfig(model="large-v3"))


def test_manifest_line_holding_a_u2028_is_one_entry(tmp_path):
    """JSON may carry U+2028 raw inside a string (ensure_ascii=False); it is not a line break."""
    import json
    import shutil

    from pipeline.config import InputConfig
    from pipeline.discover import discover

    corpus = Path(__file__).resolve().parents[2] / "shared" / "corpus"
    name = "odd\u2028name.wav"
    shutil.copy(corpus / "speech" / "speechbrain_spk1_snt1.wav", tmp_path / name)
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": name, "text": "x"}, ensure_ascii=False) + "\n")
    (found,) = discover(InputConfig(uri=str(tmp_path / "m.jsonl")))
    assert found.uri.endswith(name) and found.size > 0
