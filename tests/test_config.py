"""The config's layout (sections follow the flow, issue 15): old keys move with one warning line each,
dead keys warn, the presets load without a warning, and the fingerprint is what it was before."""

from __future__ import annotations

import logging

import pytest

from pipeline.config import MOVED_KEYS, ConfigError, JobConfig, load_config
from pipeline.fingerprint import job_fingerprint
from pipeline.vocabulary import resolve as resolve_vocabulary
from tests.helpers import REPO

BASE = ["input.uri=/in", "output.uri=/out"]

# Fingerprints computed before the config was reshaped, at commit 7c1e52c (the one before the
# diarization fields were renamed embedding_window_s / embedding_hop_s), with:
#   load_config('conf/local.yaml').fingerprint()
#   load_config('conf/nemo-gpu.yaml').fingerprint()
#   load_config('conf/local.yaml', ['diarization.enabled=true', 'vocabulary.terms=[ComfyUI]']).fingerprint()
# (`JobConfig.fingerprint` then; `pipeline.fingerprint.job_fingerprint` now, `_fp` below)
# Outputs record the fingerprint to skip finished files: an equivalent config must keep it. (It also
# hashes pipeline.__version__, 0.1.0 then: a version bump changes it on purpose.)
PINNED = {
    "local": "df99363882acaf4b",
    "nemo-gpu": "b5b5d1178eda342f",
    # changed on purpose when the vocabulary guard came (its max_word_loss and near_miss decide which decoding
    # a window keeps, so a vocabulary job is redone): 9b34818a009b3705 before
    "local+diarization+vocabulary": "4c38fb8e7d2952bc",
}

#: conf/local.yaml as it was written before the reshape (comments dropped).
OLD_LOCAL = """\
input:
  uri: ./audio
output:
  uri: ./out
ray:
  address: null
decode:
  resources: {num_cpus: 0.25, pool_size: 1}
vad:
  backend: silero
  threshold: 0.5
  min_speech_s: 0.25
  min_silence_s: 0.5
  pad_s: 0.2
diarization:
  enabled: false
  backend: resemblyzer
segmentation:
  max_segment_s: 30
  merge_gap_s: 1.0
lid:
  backend: whisper
asr:
  backend: whisper
  model: base
  compute_type: int8
  beam_size: 1
  cpu_threads: 2
punctuation:
  backend: native
batching:
  enabled: true
  max_padded_s: 480
  max_items: 16
  max_extra_padding: 0.05
  window_s: 300
  max_files: 16
  pack: recording
recording_stage:
  resources: {num_cpus: 0.5, pool_size: 1}
segment_stage:
  resources: {num_cpus: 1.0, num_gpus: 0, pool_size: 1}
"""


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pipeline.config" and r.levelno >= logging.WARNING]


def _fp(cfg) -> str:
    """The job's fingerprint, as the runner computes it (its vocabulary resolved first)."""
    return job_fingerprint(cfg, resolve_vocabulary(cfg.segment_stage.vocabulary))


# -- the fingerprint -----------------------------------------------------------------------------------
def test_fingerprints_are_pinned_to_the_values_before_the_reshape():
    # conf/local.yaml has encoded short windows short since (issue 16): its transcripts differ, so
    # its fingerprint does; the rest of it hashes as it did
    local = load_config(REPO / "conf/local.yaml")
    assert _fp(local) != PINNED["local"]
    assert _fp(load_config(REPO / "conf/local.yaml", ["segment_stage.asr.encode_pad_s=null"])) == PINNED["local"]
    assert _fp(load_config(REPO / "conf/nemo-gpu.yaml")) == PINNED["nemo-gpu"]
    both = load_config(
        REPO / "conf/local.yaml",
        [
            "recording_stage.diarization.enabled=true",
            "segment_stage.vocabulary.terms=[ComfyUI]",
            "segment_stage.asr.encode_pad_s=null",
            "recording_stage.diarization.min_speaker_s=3",  # its default before issue 34
        ],
    )
    assert _fp(both) == PINNED["local+diarization+vocabulary"]
    # diarization on with today's default (4 s) or a sensitive VAD pass (0.35): speakers change, so the
    # fingerprint does; with diarization off, neither counts
    now = load_config(REPO / "conf/local.yaml", ["recording_stage.diarization.enabled=true"])
    for other in ("min_speaker_s=3", "vad_threshold=0.35"):
        changed = load_config(
            REPO / "conf/local.yaml",
            ["recording_stage.diarization.enabled=true", f"recording_stage.diarization.{other}"],
        )
        assert _fp(now) != _fp(changed), other
        off = load_config(REPO / "conf/local.yaml", [f"recording_stage.diarization.{other}"])
        assert _fp(off) == _fp(load_config(REPO / "conf/local.yaml")), other


def test_fields_added_since_the_pin_count_only_away_from_their_default():
    base = load_config(REPO / "conf/local.yaml", BASE)
    for key, default, other in (
        ("threshold_scale", "1.6", "null"),
        ("min_speaker_share", "0.25", "0"),
        ("threshold_bounds", "[0.25,0.4]", "[0.2,0.5]"),
    ):
        same = load_config(REPO / "conf/local.yaml", [*BASE, f"recording_stage.diarization.{key}={default}"])
        assert _fp(same) == _fp(base), key
        changed = load_config(REPO / "conf/local.yaml", [*BASE, f"recording_stage.diarization.{key}={other}"])
        assert _fp(changed) != _fp(base), key


def test_fingerprint_follows_renamed_fields_and_ignores_io_and_plumbing():
    base = load_config(REPO / "conf/local.yaml", BASE)
    for changed in (
        "segment_stage.lid.probe_s=5",
        "segment_stage.asr.encode_pad_s=3",
        "segment_stage.lid.part_probe_s=3",
        "recording_stage.diarization.embedding_window_s=2",
        "recording_stage.diarization.embedding_hop_s=1",
        "segment_stage.asr.beam_size=5",
        "recording_stage.vad.pad_s=0.3",
        "decode.max_duration_s=60",
    ):
        assert _fp(load_config(REPO / "conf/local.yaml", [*BASE, changed])) != _fp(base), changed
    for same in (
        "output.uri=/elsewhere",
        "pooling.window_audio_s=60",
        "pooling.max_files=1",
        "recording_stage.resources.num_cpus=2",
        "segment_stage.resources.pool_size=2",
        "segment_stage.asr.workers=2",
        "segment_stage.windows_at_once=1",
        "progress.log_interval_s=5",
    ):
        assert _fp(load_config(REPO / "conf/local.yaml", [*BASE, same])) == _fp(base), same


# -- the presets ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", sorted(p.name for p in (REPO / "conf").glob("*.yaml")))
def test_every_preset_loads_without_a_warning(preset, caplog):
    caplog.set_level(logging.WARNING, logger="pipeline.config")
    load_config(REPO / "conf" / preset)
    assert _warnings(caplog) == []


def test_the_old_local_preset_is_the_new_one(tmp_path, caplog):
    old = tmp_path / "old.yaml"
    old.write_text(OLD_LOCAL)
    caplog.set_level(logging.WARNING, logger="pipeline.config")
    cfg = load_config(old)
    # since then (issue 16) the preset's CPU calls have shrunk from 16 windows to 1-2, two at once, it
    # decodes inside the recording stage's actor, works on two windows at once (none of that is in the
    # fingerprint), and it encodes short windows short
    assert cfg == load_config(
        REPO / "conf/local.yaml",
        [
            "segment_stage.batching.max_padded_s=480",
            "segment_stage.batching.max_items=16",
            "decode.in_recording_stage=false",
            "segment_stage.asr.encode_pad_s=null",
            "segment_stage.asr.workers=1",
            "segment_stage.windows_at_once=1",
        ],
    )
    assert _fp(cfg) == PINNED["local"]
    said = _warnings(caplog)
    # one line per old key (a section that moves whole is one line naming its keys)
    assert "config: 'asr' is now 'segment_stage.asr' (backend, model, compute_type, beam_size, cpu_threads)" in said
    assert "config: 'batching.window_s' is now 'pooling.window_audio_s'" in said
    assert "config: 'batching.pack' is now 'segment_stage.packing.mode'" in said
    assert "config: 'lid.backend' is now 'segment_stage.lid.backend'" in said
    assert len(said) == len(set(said)) == 10


# -- old keys ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "old,new,value",
    [
        ("asr.model", "segment_stage.asr.model", "tiny.en"),
        ("batching.window_s", "pooling.window_audio_s", 600.0),
        ("batching.max_files", "pooling.max_files", 1),
        ("batching.pack", "segment_stage.packing.mode", "corpus"),
        ("batching.pack_gap_s", "segment_stage.packing.gap_s", 1.0),
        ("batching.max_items", "segment_stage.batching.max_items", 4),
        ("lid.window_s", "segment_stage.lid.probe_s", 5.0),
        ("lid.split_window_s", "segment_stage.lid.part_probe_s", 3.0),
        ("diarization.window_s", "recording_stage.diarization.embedding_window_s", 2.0),
        ("diarization.hop_s", "recording_stage.diarization.embedding_hop_s", 1.0),
        ("vad.pad_s", "recording_stage.vad.pad_s", 0.3),
        ("segmentation.max_segment_s", "recording_stage.segmentation.max_segment_s", 12.0),
        ("quality.min_confidence", "segment_stage.quality.min_confidence", 0.6),
        ("vocabulary.boost", "segment_stage.vocabulary.boost", 2.0),
        ("punctuation.backend", "segment_stage.punctuation.backend", "none"),
        ("itn.enabled", "segment_stage.itn.enabled", False),
    ],
)
def test_an_old_override_moves_with_one_warning_naming_the_new_place(old, new, value, caplog):
    caplog.set_level(logging.WARNING, logger="pipeline.config")
    cfg = load_config(REPO / "conf/local.yaml", [*BASE, f"{old}={value}"])
    assert _warnings(caplog) == [f"config: {old!r} is now {new!r}"]
    assert cfg.section(new.rsplit(".", 1)[0]).model_dump()[new.rsplit(".", 1)[1]] == value
    assert cfg == load_config(REPO / "conf/local.yaml", [*BASE, f"{new}={value}"])


def test_old_keys_in_a_file_move_too(tmp_path, caplog):
    f = tmp_path / "job.yaml"
    f.write_text(
        "input: {uri: /in}\noutput: {uri: /out}\nlid: {window_s: 4}\nasr: {model: tiny.en}\n"
        "batching: {window_s: 60, max_items: 3}\n"
    )
    caplog.set_level(logging.WARNING, logger="pipeline.config")
    cfg = load_config(f)
    seg = cfg.segment_stage
    assert (seg.lid.probe_s, seg.asr.model, cfg.pooling.window_audio_s, seg.batching.max_items) == (
        4.0,
        "tiny.en",
        60.0,
        3,
    )
    assert _warnings(caplog) == [
        "config: 'lid.window_s' is now 'segment_stage.lid.probe_s'",
        "config: 'asr.model' is now 'segment_stage.asr.model'",
        "config: 'batching.window_s' is now 'pooling.window_audio_s'",
        "config: 'batching.max_items' is now 'segment_stage.batching.max_items'",
    ]


def test_an_old_override_overrides_the_new_key_of_the_file(caplog):
    caplog.set_level(logging.WARNING, logger="pipeline.config")
    cfg = load_config(REPO / "conf/local.yaml", [*BASE, "asr.model=tiny.en"])  # the preset: segment_stage.asr.model
    assert cfg.segment_stage.asr.model == "tiny.en"
    assert _warnings(caplog) == ["config: 'asr.model' is now 'segment_stage.asr.model'"]


def test_an_old_key_beside_its_new_one_merges_or_is_refused(tmp_path):
    # different keys of one moved section: merged
    cfg = load_config(REPO / "conf/local.yaml", [*BASE, "asr.beam_size=3", "segment_stage.asr.cpu_threads=1"])
    assert (cfg.segment_stage.asr.beam_size, cfg.segment_stage.asr.cpu_threads) == (3, 1)
    # the same key twice, among the overrides: refused, naming both
    for pair in (
        ["asr.model=tiny.en", "segment_stage.asr.model=base"],
        ["pooling.window_audio_s=90", "batching.window_s=60"],
        ["lid.window_s=4", "segment_stage.lid.probe_s=5"],
    ):
        with pytest.raises(ConfigError) as err:
            load_config(REPO / "conf/local.yaml", [*BASE, *pair])
        assert all(repr(p.split("=")[0]) in str(err.value) for p in pair), (pair, str(err.value))
    # ... or in one file
    f = tmp_path / "both.yaml"
    f.write_text("input: {uri: /in}\noutput: {uri: /out}\nasr: {model: tiny.en}\nsegment_stage: {asr: {model: base}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert "'asr.model'" in str(err.value) and "'segment_stage.asr.model'" in str(err.value)
    f.write_text("input: {uri: /in}\noutput: {uri: /out}\nlid: {window_s: 4, probe_s: 5}\n")  # two old spellings
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert "'lid.window_s'" in str(err.value) and "'lid.probe_s'" in str(err.value)


def test_an_old_section_override_moves_each_key_it_holds(caplog):
    caplog.set_level(logging.WARNING, logger="pipeline.config")
    cfg = load_config(REPO / "conf/local.yaml", [*BASE, "batching={window_s: 60, max_items: 3}"])
    assert (cfg.pooling.window_audio_s, cfg.segment_stage.batching.max_items) == (60.0, 3)
    assert cfg.segment_stage.batching.max_padded_s == 30  # the preset's other batching keys stay
    assert len(_warnings(caplog)) == 2


@pytest.mark.parametrize("dead", ["decode.sample_rate=16000", "output.rows_per_file=5000"])
def test_dead_keys_warn_and_are_dropped(dead, caplog):
    caplog.set_level(logging.WARNING, logger="pipeline.config")
    cfg = load_config(REPO / "conf/local.yaml", [*BASE, dead])
    key = dead.split("=")[0]
    assert _warnings(caplog) == [f"config: {key!r} is no longer read; remove it"]
    assert cfg == load_config(REPO / "conf/local.yaml", BASE)


def test_model_validate_of_an_old_shaped_mapping_migrates(caplog):
    caplog.set_level(logging.WARNING, logger="pipeline.config")
    data = {
        "input": {"uri": "/in"},
        "output": {"uri": "/out", "rows_per_file": 10},
        "asr": {"model": "tiny.en"},
        "batching": {"window_s": 600, "pack": "none"},
        "lid": {"split_window_s": 2},
    }
    cfg = JobConfig.model_validate(data)
    seg = cfg.segment_stage
    assert (seg.asr.model, cfg.pooling.window_audio_s, seg.packing.mode, seg.lid.part_probe_s) == (
        "tiny.en",
        600,
        "none",
        2,
    )
    assert len(_warnings(caplog)) == 5
    assert "asr" in data and "rows_per_file" in data["output"]  # the caller's mapping is left as it was
    with pytest.raises(ValueError, match="segment_stage.asr.model"):
        JobConfig.model_validate({**data, "segment_stage": {"asr": {"model": "base"}}})


def test_every_table_entry_names_a_real_place():
    for old, new in MOVED_KEYS.items():
        if new is None:
            continue
        section, _, field = new.rpartition(".")
        model = (
            type(JobConfig.model_validate({"input": {"uri": "x"}, "output": {"uri": "y"}}).section(section))
            if section
            else JobConfig
        )
        assert field in model.model_fields, f"{old} -> {new}"


def test_unknown_keys_are_still_named_with_their_full_path():
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "conf/local.yaml", [*BASE, "segment_stage.packing.gap=1"])
    assert "segment_stage.packing.gap" in str(err.value) and "gap_s" in str(err.value)


def test_a_job_config_is_a_filter_rules_file():
    from pipeline.filter import load_rules

    rules = load_rules(str(REPO / "conf/nemo-gpu.yaml"), ["segment_stage.quality.max_repetition=0.9"])
    assert (rules.min_confidence, rules.max_repetition) == (0.35, 0.9)
    assert load_rules(None, ["quality.min_confidence=0.6"]).min_confidence == 0.6  # the filter's own namespace


# -- validation and overrides ---------------------------------------------------------------------


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
    b = load_config(
        "conf/local.yaml",
        [*BASE, "recording_stage.segmentation.max_segment_s=12", "recording_stage.diarization.enabled=true"],
    )
    rec = b.recording_stage
    assert rec.segmentation.max_segment_s == 12.0 and rec.diarization.enabled is True
    assert _fp(a) != _fp(b)
    # output location is not part of what a transcript depends on
    assert _fp(a) == _fp(load_config("conf/local.yaml", ["input.uri=/x", "output.uri=/y"]))
