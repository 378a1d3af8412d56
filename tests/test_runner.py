"""End-to-end (`pipeline.runner.run`, directly and through the CLI): the embedded default on real
speech, and every model stage on NeMo backends.

One run over the whole shared corpus (local folder -> local Parquet) feeds the accuracy tests; S3,
diarization and corrupt input each have their own small run. The NeMo run checks the output
contract with tiny random models, not transcript quality. The CLI runs here call `pipeline.cli.main`
in this process (`cli_inproc`: its exit code, stdout and stderr), so they share this process's Ray
session instead of starting one each; `python -m pipeline.cli` as a subprocess is tests/test_cli.py's
and the crash tests' (tests/test_runner_resume.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jiwer
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

from pipeline.config import OutputConfig, load_config
from pipeline.ledger import read_output
from pipeline.records import RECORDINGS_SCHEMA, SEGMENTS_SCHEMA
from pipeline.runner import run
from tests.helpers import LOCAL_CONF, sha256_of
from tests.helpers.cli import cli_inproc as _cli
from tests.helpers.nemo_models import LID_LABELS

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # every test runs the pipeline, or reads the corpus run


def _refs(corpus: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (corpus / "references.jsonl").read_text().splitlines() if line.strip()]
    return {str((corpus / r["audio_filepath"]).resolve()): r for r in rows}


@pytest.fixture(scope="module")
def corpus_run(corpus: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus-out")
    cfg = load_config(LOCAL_CONF, [f"input.uri={corpus}", f"output.uri={out}"])
    report = run(cfg)
    segments = read_output(cfg.output, "segments")
    recordings = read_output(cfg.output, "recordings")
    return report, segments, recordings, out


def _text_by_uri(segments) -> dict[str, str]:
    texts: dict[str, list] = {}
    for s in sorted(segments.to_pylist(), key=lambda s: (s["uri"], s["segment_index"])):
        texts.setdefault(str(Path(s["uri"]).resolve()), []).append(s["text"])
    return {k: " ".join(v) for k, v in texts.items()}


def _wer(ref: str, hyp: str, lang: str) -> float:
    norm = EnglishTextNormalizer() if lang == "en" else BasicTextNormalizer()
    return jiwer.wer(norm(ref), norm(hyp) or "<empty>")


def test_one_recordings_row_per_file_and_native_schema(corpus_run, corpus):
    report, segments, recordings, out = corpus_run
    audio_files = [r for r in _refs(corpus)]
    assert recordings.num_rows == len(audio_files) == report.discovered
    assert set(RECORDINGS_SCHEMA.names) <= set(recordings.column_names)
    # the files on disk are plain Parquet with native nested types, not pickled objects
    seg_file = next((out / "segments").glob("*.parquet"))
    schema = pq.read_schema(seg_file)
    assert schema.field("words").type == SEGMENTS_SCHEMA.field("words").type
    assert not [f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
    assert pq.read_schema(next((out / "recordings").glob("*.parquet"))).field("status").type == pa.string()
    assert report.ok + report.no_speech == len(audio_files) and report.error == 0
    assert (out / "report.json").exists()


def test_jfk_wer_at_most_5_percent(corpus_run, corpus):
    _, segments, _, _ = corpus_run
    key = str((corpus / "speech/whisper_jfk.flac").resolve())
    ref = _refs(corpus)[key]["text"]
    assert _wer(ref, _text_by_uri(segments)[key], "en") <= 0.05


def test_corpus_wer_english_15_other_30(corpus_run, corpus):
    _, segments, _, _ = corpus_run
    hyps = _text_by_uri(segments)
    per_lang: dict[str, list[float]] = {}
    for key, ref in _refs(corpus).items():
        if ref.get("text"):
            per_lang.setdefault(ref["lang"], []).append(_wer(ref["text"], hyps.get(key, ""), ref["lang"]))
    english = per_lang.pop("en")
    other = [w for ws in per_lang.values() for w in ws]
    assert len(english) + len(other) >= 38
    assert sum(english) / len(english) <= 0.15, english
    assert sum(other) / len(other) <= 0.30, per_lang


def test_language_id_on_all_fleurs_clips(corpus_run, corpus):
    _, _, recordings, _ = corpus_run
    refs = _refs(corpus)
    fleurs = [r for r in recordings.to_pylist() if "fleurs-" in r["uri"]]
    assert len(fleurs) == 25
    wrong = [(r["uri"], r["language"]) for r in fleurs if r["language"] != refs[str(Path(r["uri"]).resolve())]["lang"]]
    assert not wrong


def test_no_speech_file_has_no_segments(corpus_run):
    _, segments, recordings, _ = corpus_run
    neg = [r for r in recordings.to_pylist() if r["uri"].endswith("negative/silerovad_test.opus")]
    assert len(neg) == 1 and neg[0]["status"] == "no_speech" and neg[0]["num_segments"] == 0
    assert not [s for s in segments.to_pylist() if s["uri"].endswith(".opus")]


def test_words_have_timestamps_inside_their_segment(corpus_run):
    _, segments, recordings, _ = corpus_run
    durations = {r["recording_id"]: r["duration"] for r in recordings.to_pylist()}
    n_words = 0
    for s in segments.to_pylist():
        assert 0 <= s["start"] < s["end"] <= durations[s["recording_id"]] + 1e-6
        last = s["start"]
        for w in s["words"]:
            assert s["start"] - 1e-6 <= w["start"] <= w["end"] <= s["end"] + 1e-6
            assert w["start"] >= last - 1e-6 and 0 <= w["confidence"] <= 1
            last = w["start"]
            n_words += 1
    assert n_words > 500


def test_a_recording_cut_into_pieces_is_one_recording_with_the_same_words(corpus, corpus_run, s3_endpoint, caplog):
    """The 60 s lecture cut into 20 s pieces (pipeline/pieces.py), S3 in and out (the sink stages the
    pieces on S3): one recording row, one commit, segments in time order that never overlap, nothing
    left staged, and the words of the whole-file run of the same audio (corpus_run) within a few percent.
    The run's last progress line counts this run's one file at every stage: its own RunState actor,
    not the one of the run before it in this process (corpus_run)."""
    import logging

    import s3fs

    caplog.set_level(logging.INFO, logger="scriptorium.progress")

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir("pieces")
    fs.put_file(str(corpus / "speech" / "silerovad_test.wav"), "pieces/in/lecture.wav")
    storage = f"{{endpoint_url: '{s3_endpoint}'}}"
    cfg = load_config(
        LOCAL_CONF,
        [
            "input.uri=s3://pieces/in/",
            "output.uri=s3://pieces/out",
            f"input.storage={storage}",
            f"output.storage={storage}",
            "decode.piece_s=20",
            "decode.piece_overlap_s=4",
        ],
    )
    report = run(cfg)
    assert (report.ok, report.no_speech, report.error) == (1, 0, 0) and report.audio_seconds == pytest.approx(
        60.0, abs=0.01
    )
    (rec,) = read_output(cfg.output, "recordings").to_pylist()
    assert rec["status"] == "ok" and rec["duration"] == pytest.approx(60.0, abs=0.01) and rec["error"] is None
    segs = sorted(read_output(cfg.output, "segments").to_pylist(), key=lambda s: s["segment_index"])
    assert len(segs) == rec["num_segments"] >= 3
    for a, b in zip(segs, segs[1:]):
        assert a["start"] < a["end"] <= b["start"]  # time order, no speech transcribed twice
    assert not fs.exists("pieces/out/_pieces")
    last = [r.getMessage() for r in caplog.records if r.name == "scriptorium.progress"][-1]
    assert all(f"{stage} 1/1 " in last for stage in ("decoded", "segmented", "transcribed", "committed")), last
    whole = _text_by_uri(corpus_run[1])[str((corpus / "speech" / "silerovad_test.wav").resolve())]
    pieced = " ".join(s["text"] for s in segs)
    assert _wer(whole, pieced, "en") < 0.1


def test_a_diarized_recording_in_pieces_keeps_one_label_per_speaker(corpus, tmp_path):
    """The two-speaker call three times over (90 s) in 30 s pieces: each piece clusters its own
    speakers, the sink matches them by voice (pipeline/pieces.py `stitch`), and the recording has
    2 speakers whose labels hold across pieces (DER against the reference turns, repeated)."""
    import soundfile as sf

    from pipeline.der import der, read_rttm
    from tests.helpers import load_audio

    call = load_audio(corpus / "diarization/pyannote_sample.wav")
    src = tmp_path / "in"
    src.mkdir()
    sf.write(str(src / "call-x3.flac"), np.concatenate([call, call, call]), 16000, subtype="PCM_16")
    cfg = load_config(
        LOCAL_CONF,
        [
            f"input.uri={src}",
            f"output.uri={tmp_path / 'out'}",
            "recording_stage.diarization.enabled=true",
            "decode.piece_s=30",
            "decode.piece_overlap_s=4",
        ],
    )
    run(cfg)
    (rec,) = read_output(cfg.output, "recordings").to_pylist()
    segs = read_output(cfg.output, "segments").to_pylist()
    assert rec["num_speakers"] == 2 and {s["speaker"] for s in segs} == {"spk0", "spk1"}
    length = len(call) / 16000
    ref = [
        (a + k * length, b + k * length, who)
        for k in range(3)
        for a, b, who in read_rttm((corpus / "diarization/pyannote_sample.rttm").read_text())
    ]
    result = der(ref, [(s["start"], s["end"], s["speaker"]) for s in segs], collar=0.25)
    assert result["der"] <= 0.35, result


def test_diarization_finds_two_speakers_in_the_call(corpus, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(corpus / "diarization/pyannote_sample.wav", src)
    shutil.copy(corpus / "speech/whisper_jfk.flac", src)
    cfg = load_config(
        LOCAL_CONF, [f"input.uri={src}", f"output.uri={tmp_path / 'out'}", "recording_stage.diarization.enabled=true"]
    )
    run(cfg)
    rec = {Path(r["uri"]).name: r for r in read_output(cfg.output, "recordings").to_pylist()}
    assert rec["pyannote_sample.wav"]["num_speakers"] == 2
    assert rec["whisper_jfk.flac"]["num_speakers"] == 1
    segs = [s for s in read_output(cfg.output, "segments").to_pylist() if s["uri"].endswith("pyannote_sample.wav")]
    assert {s["speaker"] for s in segs} == {"spk0", "spk1"}
    for s in segs:
        assert s["words"] and all(s["start"] <= w["start"] <= w["end"] <= s["end"] for w in s["words"])
        assert {w["speaker"] for w in s["words"]} == {s["speaker"]}  # a segment is split where its words change speaker
    # speakers are given to words after recognition: JFK's sentence is transcribed whole, one speaker
    jfk = sorted(
        (s for s in read_output(cfg.output, "segments").to_pylist() if s["uri"].endswith("jfk.flac")),
        key=lambda s: s["start"],
    )
    assert {s["speaker"] for s in jfk} == {"spk0"}
    assert "ask not what your country can do for you" in " ".join(s["text"] for s in jfk).lower()
    # DER of the segments' speakers against the reference turns (0.25 s collar)
    from pipeline.eval import der, read_rttm

    hyp = [(s["start"], s["end"], s["speaker"]) for s in segs]
    ref = read_rttm((corpus / "diarization/pyannote_sample.rttm").read_text())
    result = der(ref, hyp, collar=0.25)
    assert result["der"] <= 0.35, result


def test_s3_in_s3_out(corpus, s3_endpoint, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir("spine")  # no region: moto refuses a LocationConstraint
    for rel in ["speech/whisper_jfk.flac", "multilingual/fleurs-fr-002.ogg", "negative/silerovad_test.opus"]:
        fs.put_file(str(corpus / rel), f"spine/audio/{rel.replace('/', ' - ')}")  # names with spaces
    storage = f"{{endpoint_url: '{s3_endpoint}'}}"
    result = _cli(
        "run",
        str(LOCAL_CONF),
        "input.uri=s3://spine/audio/",
        "output.uri=s3://spine/out",
        f"input.storage={storage}",
        f"output.storage={storage}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok 2  no speech 1  error 0" in result.stdout
    out = load_config(None, ["input.uri=x", "output.uri=s3://spine/out", f"output.storage={storage}"]).output
    recs = read_output(out, "recordings").to_pylist()
    assert sorted(r["status"] for r in recs) == ["no_speech", "ok", "ok"]
    assert all(r["etag"] for r in recs)  # S3 etags are kept for change detection
    segs = read_output(out, "segments").to_pylist()
    assert any("ask not what your country" in s["text"].lower() for s in segs)
    assert fs.glob("spine/out/segments/*.parquet") and fs.exists("spine/out/report.json")


def test_cli_corrupt_file_is_an_error_row_and_the_job_goes_on(corpus, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(corpus / "speech/speechbrain_spk1_snt1.wav", src)
    (src / "notes.wav").write_text("this is not audio")
    data = (corpus / "speech/lhotse_2412-153948-0000.flac").read_bytes()
    (src / "truncated.flac").write_bytes(data[:200])
    # a file that switches language after a pause is transcribed in both languages
    import numpy as np
    import soundfile as sf

    from pipeline.audio import decode

    en = decode(str(corpus / "multilingual/fleurs-en-001.ogg")).samples
    de = decode(str(corpus / "multilingual/fleurs-de-001.ogg")).samples
    sf.write(src / "mixed en-de.wav", np.concatenate([en, np.zeros(32000, np.float32), de]), 16000)
    # M4A/AAC (the one common codec the corpus lacks), made with the ffmpeg that `make install` provides
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-i",
            str(corpus / "speech/whisper_jfk.flac"),
            "-c:a",
            "aac",
            str(src / "jfk.m4a"),
        ],
        check=True,
    )
    out = tmp_path / "out"
    res = _cli("run", str(LOCAL_CONF), f"input.uri={src}", f"output.uri={out}")
    assert res.returncode == 3, res.stderr[-3000:]  # done, but some files failed: a scheduler alerts on it
    assert "error 2" in res.stdout and "notes.wav: decode: not a decodable audio file" in res.stdout
    recs = {Path(r["uri"]).name: r for r in read_output(OutputConfig(uri=str(out)), "recordings").to_pylist()}
    assert recs["speechbrain_spk1_snt1.wav"]["status"] == "ok"
    m4a = [s["text"] for s in read_output(OutputConfig(uri=str(out))).to_pylist() if s["uri"].endswith("jfk.m4a")]
    assert recs["jfk.m4a"]["source_sample_rate"] == 44100 and "ask not what your country" in " ".join(m4a).lower()
    assert recs["notes.wav"]["status"] == "error" and "decodable" in recs["notes.wav"]["error"]
    assert recs["truncated.flac"]["status"] == "error" and recs["truncated.flac"]["error"]
    mixed = [s for s in read_output(OutputConfig(uri=str(out))).to_pylist() if s["uri"].endswith("mixed en-de.wav")]
    assert [s["language"] for s in sorted(mixed, key=lambda s: s["start"])][:1] == ["en"]
    assert {s["language"] for s in mixed} == {"en", "de"}
    # nothing processable at all -> non-zero exit
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.mp3").write_bytes(b"\0" * 64)
    res = _cli("run", str(LOCAL_CONF), f"input.uri={bad}", f"output.uri={tmp_path / 'out2'}")
    assert res.returncode == 1 and "error 1" in res.stdout


def test_export_pseudo_labels_load_in_lhotse_and_nemo_format(corpus_run, tmp_path):
    from lhotse import CutSet

    _, segments, _, out = corpus_run
    res = _cli("export", str(out), "--format", "lhotse", "--to", str(tmp_path / "lhotse"))
    assert res.returncode == 0, res.stderr
    cuts = CutSet.from_file(tmp_path / "lhotse/cuts.jsonl.gz")
    accepted = [s for s in segments.to_pylist() if s["accepted"] and s["text"]]
    assert len(cuts) == len(accepted) > 20
    jfk = next(c for c in cuts if "ask not what your country" in c.supervisions[0].text.lower())
    audio = jfk.load_audio()  # reads the original 44.1 kHz FLAC by offset, no copy was made
    assert audio.shape[1] == pytest.approx(jfk.duration * jfk.sampling_rate, abs=2)
    res = _cli("export", str(out), "--format", "nemo", "--to", str(tmp_path / "nemo"))
    lines = [json.loads(x) for x in (tmp_path / "nemo/manifest.jsonl").read_text().splitlines()]
    assert len(lines) == len(accepted)
    assert all(Path(x["audio_filepath"]).exists() and x["duration"] > 0 and x["text"] for x in lines)
    res = _cli("export", str(out), "--format", "srt", "--to", str(tmp_path / "srt"))
    srt = (tmp_path / "srt/speech/whisper_jfk.flac.srt").read_text()  # names mirror the input's relative path
    assert srt.startswith("1\n00:00:00,") and "ask not" in " ".join(srt.split())  # a cue wraps its lines


def test_report_counts_segments_and_renders_as_a_page(corpus_run, tmp_path):
    """report.json counts accepted/rejected segments as the rows say; report.html renders in headless
    Chromium (installed by `make install`) as a page with its plots drawn."""
    import numpy as np
    from PIL import Image

    report, segments, _, out = corpus_run
    rows = segments.to_pylist()
    assert report.accepted_segments == sum(1 for s in rows if s["accepted"])
    assert report.rejected_segments == sum(1 for s in rows if not s["accepted"])
    assert report.accepted_seconds == pytest.approx(sum(s["end"] - s["start"] for s in rows if s["accepted"]), abs=0.01)
    assert set(report.language_seconds) == {s["language"] for s in rows if s["language"]}
    assert sum(report.confidence_histogram) == sum(1 for s in rows if s["confidence"] is not None)
    page = (out / "report.html").read_text()
    # six plots, + SNR and bandwidth of accepted vs rejected segments (MOS is off in local.yaml)
    assert page.count("data:image/png;base64,") == 6 + 2 and report.run_id in page
    assert "Audio quality: accepted vs rejected" in page
    spoken = [s for s in rows if s["snr_db"] is not None]
    for verdict in ("accepted", "rejected"):
        n = sum(1 for s in spoken if (s["accepted"] is True) == (verdict == "accepted"))
        assert sum(report.audio_histograms[f"snr_db:{verdict}"]) == n
    assert not [w for w in report.warnings if w.startswith("pooling:")]  # local.yaml pools ten calls' audio
    # provenance: every row names the models that made it (recording stage, then segment stage), and
    # the report lists the distinct values
    made = {r["models"] for r in corpus_run[2].to_pylist() if r["status"] == "ok"}
    assert made and all(m.startswith("vad=silero-vad:v6") and "asr=whisper:base" in m for m in made), made
    assert made <= set(report.models) and all(m in page for m in report.models)
    shot = tmp_path / "report.png"
    res = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in pixels[::37]}
    assert len(colours) > 50  # text, tiles and six coloured plots, not a blank or error page
    assert (pixels.min(axis=1) < 200).mean() > 0.02  # a real share of the page is drawn


# -- every model stage on NeMo ------------------------------------------------------------------

NEMO_FILES = ["speech/speechbrain_spk1_snt1.wav", "multilingual/fleurs-de-004.ogg", "diarization/pyannote_sample.wav"]


def test_cli_run_with_every_stage_on_nemo(corpus, s3_endpoint, tiny, tmp_path):
    """Frame-VAD, AmberNet-style LID, Sortformer diarization and a TDT ASR model fetched from S3 (moto)
    with its sha256, all tiny and randomly initialised (bench/nemo_models.py)."""
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    if not fs.exists("nemo-e2e"):
        fs.mkdir("nemo-e2e")  # no region: moto refuses a LocationConstraint
    fs.put(str(tiny["tdt"]), "nemo-e2e/models/asr.nemo")
    asr_sha = sha256_of(tiny["tdt"])

    src = tmp_path / "in"
    src.mkdir()
    for rel in NEMO_FILES:  # a temp copy outside the repository
        shutil.copy(corpus / rel, src / Path(rel).name)
    out, cache = tmp_path / "out", tmp_path / "model-cache"
    overrides = [
        f"input.uri={src}",
        f"output.uri={out}",
        "recording_stage.vad.backend=nemo",
        f"recording_stage.vad.model={tiny['vad']}",
        # random weights: a near-zero threshold makes every file one speech region (deterministic)
        "recording_stage.vad.threshold=0.01",
        "recording_stage.vad.neg_threshold=0.0",
        "segment_stage.lid.backend=nemo",
        f"segment_stage.lid.model={tiny['lid']}",
        "segment_stage.asr.backend=nemo",
        "segment_stage.asr.model=s3://nemo-e2e/models/asr.nemo",
        f"segment_stage.asr.sha256={asr_sha}",
        f"models.storage.endpoint_url={s3_endpoint}",
        f"models.cache_dir={cache}",
        "recording_stage.diarization.enabled=true",
        "recording_stage.diarization.backend=nemo",
        f"recording_stage.diarization.model={tiny['sortformer']}",
    ]
    res = _cli("run", str(LOCAL_CONF), *overrides)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]

    recordings = read_output(OutputConfig(uri=str(out)), "recordings").to_pylist()
    segments = read_output(OutputConfig(uri=str(out)), "segments").to_pylist()
    assert sorted(Path(r["uri"]).name for r in recordings) == sorted(Path(f).name for f in NEMO_FILES)
    assert all(r["status"] == "ok" for r in recordings), [(r["uri"], r["status"], r["error"]) for r in recordings]
    by_rec: dict[str, list[dict]] = {}
    for s in segments:
        by_rec.setdefault(s["recording_id"], []).append(s)
    assert set(by_rec) == {r["recording_id"] for r in recordings}
    durations = {r["recording_id"]: r["duration"] for r in recordings}
    for rid, segs in by_rec.items():
        segs.sort(key=lambda s: s["segment_index"])
        for s in segs:
            assert 0.0 <= s["start"] < s["end"] <= durations[rid] + 1e-6
            assert s["end"] - s["start"] <= 30.0 + 1e-6  # segmentation.max_segment_s
            assert s["speaker"] is not None and s["speaker"].startswith("spk")
            assert s["language"] in LID_LABELS and 0.0 <= s["language_prob"] <= 1.0
            assert isinstance(s["text"], str) and 0.0 <= s["confidence"] <= 1.0
            starts = [w["start"] for w in s["words"]]
            assert starts == sorted(starts)
            for w in s["words"]:  # original timeline, inside the segment
                assert s["start"] - 1e-6 <= w["start"] <= w["end"] <= s["end"] + 1e-6
        assert all(a["end"] <= b["start"] + 1e-6 for a, b in zip(segs, segs[1:]))
    # the ASR model came from S3 once, into the node cache, verified
    cached = list(cache.rglob("asr.nemo"))
    assert len(cached) == 1 and sha256_of(cached[0]) == asr_sha
