"""Exports a trainer reads without our code: round trips through the public CLI on real clips (Ogg
Vorbis, real Ogg/Opus, MP3, 44.1 kHz stereo FLAC, same basenames in two folders, a 250-byte name, a
U+2028 name), loaded back with Lhotse (load_manifest, from_shar, load_audio, qa.validate) and NeMo's own
manifest reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.cli import cli_inproc as _cli, run_cli as _cli_proc
from tests.helpers.pl_output import CLIPS, LONG_NAME, ODD_NAME, OPUS


@pytest.fixture(scope="module")
def output(shared_output):
    audio, out = shared_output
    from pipeline.config import OutputConfig
    from pipeline.ledger import read_output

    segs = read_output(OutputConfig(uri=str(out)), "segments").to_pylist()
    return audio, out, segs


def test_lhotse_cuts_have_the_true_audio_format_and_validate(output, tmp_path):
    from lhotse import Recording, load_manifest
    from lhotse.qa import validate

    audio, out, segs = output
    res = _cli("export", str(out), "--format", "lhotse", "--to", str(tmp_path / "lh"), "--all")  # every codec
    assert res.returncode == 0, res.stderr
    cuts = load_manifest(tmp_path / "lh/cuts.jsonl.gz")
    accepted = [s for s in segs if s["text"]]
    assert len(cuts) == len(accepted) == 8
    res = _cli("export", str(out), "--format", "lhotse", "--to", str(tmp_path / "lh-acc"))
    assert len(load_manifest(tmp_path / "lh-acc/cuts.jsonl.gz")) == sum(1 for s in segs if s["accepted"]) >= 4
    validate(cuts, read_data=True)  # every cut's audio decodes to the length its manifest claims
    by_source = {c.recording.sources[0].source: c for c in cuts}
    for rel in ("de/fleurs-de-000.ogg", OPUS, "cv.mp3", "jfk.flac"):
        cut = by_source[str(audio / rel)]
        truth = Recording.from_file(audio / rel)
        assert (cut.recording.sampling_rate, cut.recording.num_samples, cut.recording.channel_ids) == (
            truth.sampling_rate,
            truth.num_samples,
            truth.channel_ids,
        ), rel
        samples = cut.load_audio()
        assert samples.shape[-1] == pytest.approx(cut.duration * cut.sampling_rate, abs=2)
    assert by_source[str(audio / "jfk.flac")].load_audio().shape[0] == 2  # stereo kept
    texts = sorted(c.supervisions[0].text for c in cuts)
    assert texts == sorted(s["text"] for s in accepted)


def test_shar_round_trip_decodes_the_original_samples(output, tmp_path):
    from lhotse import CutSet, load_manifest

    _, out, segs = output
    res = _cli("export", str(out), "--format", "lhotse-shar", "--to", str(tmp_path / "shar"))
    assert res.returncode == 0, res.stderr
    assert _cli("export", str(out), "--format", "lhotse", "--to", str(tmp_path / "lh")).returncode == 0
    ref = {c.id: c for c in load_manifest(tmp_path / "lh/cuts.jsonl.gz")}
    shar = CutSet.from_shar(in_dir=tmp_path / "shar")
    n = 0
    for cut in shar:
        n += 1
        a, b = cut.load_audio(), ref[cut.id].load_audio()
        assert a.shape == b.shape
        assert np.abs(a - b).max() < 1e-3  # FLAC at 16 bits: quantisation only
        assert cut.supervisions[0].text == ref[cut.id].supervisions[0].text
    assert n == len(ref)


def test_nemo_manifest_reads_back_with_nemo_and_odd_names_stay_one_line(output, tmp_path):
    from nemo.collections.asr.parts.utils.manifest_utils import read_manifest

    audio, out, segs = output
    res = _cli("export", str(out), "--format", "nemo", "--to", str(tmp_path / "nemo"))
    assert res.returncode == 0, res.stderr
    raw = (tmp_path / "nemo/manifest.jsonl").read_bytes()
    assert raw.isascii()  # U+2028 escaped: no reader splits the line there
    ours = [json.loads(x) for x in raw.decode().split("\n") if x]
    theirs = read_manifest(str(tmp_path / "nemo/manifest.jsonl"))
    assert len(ours) == len(theirs) == sum(1 for s in segs if s["accepted"] and s["text"])
    assert {x["audio_filepath"] for x in theirs} >= {str(audio / ODD_NAME), str(audio / LONG_NAME)}
    assert all(Path(x["audio_filepath"]).exists() and x["duration"] > 0 and x["text"] for x in theirs)


def test_nemo_with_audio_is_trainable_by_nemo_dataset(output, tmp_path):
    import soundfile as sf
    from nemo.collections.asr.data.audio_to_text import AudioToCharDataset

    _, out, segs = output
    dest = tmp_path / "nemo-audio"
    res = _cli("export", str(out), "--format", "nemo", "--to", str(dest), "--with-audio", "--split-by-language")
    assert res.returncode == 0, res.stderr
    manifests = sorted(dest.glob("manifest_*.jsonl"))
    assert "manifest_en.jsonl" in {m.name for m in manifests}
    lines = [json.loads(x) for m in manifests for x in m.read_text().splitlines()]
    assert len(lines) == sum(1 for s in segs if s["accepted"] and s["text"])
    for x in lines:
        assert not Path(x["audio_filepath"]).is_absolute() and "offset" not in x
        info = sf.info(dest / x["audio_filepath"])
        assert info.samplerate == 16000 and info.channels == 1
        assert info.duration == pytest.approx(x["duration"], abs=1e-3)
    ds = AudioToCharDataset(
        manifest_filepath=str(dest / "manifest_en.jsonl"),
        labels=list(" abcdefghijklmnopqrstuvwxyz'"),
        sample_rate=16000,
    )
    item = ds[0]
    assert item[0].shape[0] == pytest.approx(16000 * ds.manifest_processor.collection[0].duration, abs=2)


def test_subtitles_mirror_input_paths_wrap_and_split(output, tmp_path):
    audio, out, segs = output
    for fmt in ("srt", "vtt", "txt", "json"):
        res = _cli("export", str(out), "--format", fmt, "--to", str(tmp_path / fmt))
        assert res.returncode == 0, res.stderr
        names = {p.relative_to(tmp_path / fmt).as_posix() for p in (tmp_path / fmt).rglob(f"*.{fmt}")}
        assert {"a/x.wav." + fmt, "b/x.wav." + fmt, f"{ODD_NAME}.{fmt}"} <= names  # no collision
        longs = [n for n in names if n.startswith("LLLL")]
        assert len(longs) == 1 and len(longs[0].encode()) <= 200
        assert len(names) == len(CLIPS) + 1
    a = (tmp_path / "srt/a/x.wav.srt").read_text()
    b = (tmp_path / "srt/b/x.wav.srt").read_text()
    assert a != b and a.startswith("1\n00:00:")
    jfk = (tmp_path / "vtt/jfk.flac.vtt").read_text()
    assert jfk.startswith("WEBVTT")
    # every cue of every file of the real run: the README's limits, markers and tags included
    n = 0
    for fmt in ("srt", "vtt"):
        for path in (tmp_path / fmt).rglob(f"*.{fmt}"):
            for start, end, lines in _parse(path.read_text()):
                n += 1
                assert 1 <= len(lines) <= 2 and all(len(x) <= 42 for x in lines), (path, lines)
                assert end > start, (path, start, end, lines)
    assert n >= 2 * len(CLIPS)
    doc = json.loads((tmp_path / "json/jfk.flac.json").read_text())
    assert "ask not" in " ".join(s["text"] for s in doc["segments"]).lower()


def _parse(text: str) -> list[tuple[float, float, list[str]]]:
    """(start s, end s, text lines) of every cue of an SRT or WebVTT file (NOTE blocks left out)."""

    def secs(ts: str) -> float:
        h, m, s = ts.replace(",", ".").split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    out = []
    for block in text.split("\n\n"):
        lines = block.strip("\n").splitlines()
        at = next((k for k, x in enumerate(lines) if " --> " in x), None)
        if at is None:
            continue
        a, b = lines[at].split(" --> ")
        out.append((secs(a), secs(b), lines[at + 1 :]))
    return out


def _seg(words: list[tuple[str, float, float]], speaker="spk0", accepted=True) -> dict:
    ws = [{"word": " " + w, "start": a, "end": b, "confidence": 0.9} for w, a, b in words]
    return {
        "start": ws[0]["start"],
        "end": ws[-1]["end"],
        "text": " ".join(w for w, _, _ in words),
        "words": ws,
        "speaker": speaker,
        "accepted": accepted,
        "reject_reasons": [] if accepted else ["low_confidence"],
    }


def _timed(text: str, start: float = 0.0, step: float = 0.3) -> list[tuple[str, float, float]]:
    return [(w, start + k * step, start + k * step + step * 0.8) for k, w in enumerate(text.split())]


def test_cues_hold_two_lines_of_42_characters_marker_and_speaker_included():
    from pipeline.export import subtitle_text

    text = "a rather long sentence with quite a few words in it that goes on and on and on without end"
    seg = _seg(_timed(text * 2), speaker="spk12", accepted=False)
    for fmt in ("srt", "vtt"):
        cues = _parse(subtitle_text([seg], fmt))
        assert len(cues) >= 3
        assert all(1 <= len(lines) <= 2 and all(len(x) <= 42 for x in lines) for _, _, lines in cues), cues
        if fmt == "srt":
            assert all(lines[0].startswith("[?] [spk12] ") for _, _, lines in cues)
            words = " ".join(" ".join(lines).replace("[?] [spk12] ", "") for _, _, lines in cues).split()
            assert words == (text * 2).split()  # every word once, in order


def test_no_orphan_third_line():
    """84 characters of text fit 2 x 42 alone; with the marker and speaker tag they wrapped to three lines
    (an orphan word) before. Now the cue is cut in two instead."""
    from pipeline.export import subtitle_text

    text = "we will be going over to the other side of the river tomorrow morning, my friend too"
    assert len(text) <= 84
    srt = subtitle_text([_seg(_timed(text), accepted=False)], "srt")
    cues = _parse(srt)
    assert len(cues) == 2 and all(len(lines) <= 2 and all(len(x) <= 42 for x in lines) for _, _, lines in cues)
    assert cues[0][2][-1].endswith("morning,")  # and the cut is at the comma


def test_no_cue_cut_shorter_than_half_a_second():
    from pipeline.export import CUE_MIN_SECONDS, subtitle_text

    # two full lines (3 x 13 characters each), then one more quick word: it cannot join the full cue, and
    # alone it would last 0.2 s
    words = _timed(" ".join(["international"] * 6)) + [("now", 4.6, 4.8)]
    cues = _parse(subtitle_text([_seg(words, speaker=None)], "srt"))
    assert len(cues) == 2 and all(b - a >= CUE_MIN_SECONDS for a, b, _ in cues), cues
    # a whole utterance may be short: it is stretched to CUE_MIN_SECONDS where the next cue leaves room
    short = _parse(subtitle_text([_seg([("yes", 1.0, 1.3)], speaker=None)], "srt"))
    assert [(a, b) for a, b, _ in short] == [(1.0, 1.5)]
    short = _parse(subtitle_text([_seg([("yes", 1.0, 1.3)]), _seg([("no", 1.4, 2.0)])], "srt"))
    assert [(a, b) for a, b, _ in short] == [(1.0, 1.4), (1.4, 2.0)]


def test_cues_break_at_punctuation_and_pauses():
    from pipeline.export import subtitle_text

    text = "The first sentence ends right here. And then a second one follows it closely enough today."
    cues = _parse(subtitle_text([_seg(_timed(text), speaker=None)], "srt"))
    assert " ".join(cues[0][2]).endswith("here."), cues
    # no punctuation at all: the cut falls in the pause (0.9 s between "pause" and "and")
    words = _timed("words before the long pause", 0.0) + _timed(
        "and many more words after it until the cue is full and then some", 2.4
    )
    cues = _parse(subtitle_text([_seg(words, speaker=None)], "srt"))
    assert " ".join(cues[0][2]).endswith("pause"), cues
    assert cues[1][0] == pytest.approx(2.4)


def test_rejected_marker_is_configurable(output, tmp_path):
    from pipeline.export import subtitle_text

    seg = _seg(_timed("not sure about this one"), accepted=False)
    assert "(unsure) [spk0] not sure" in subtitle_text([seg], "srt", marker="(unsure)")
    assert "\n[spk0] not sure" in subtitle_text([seg], "srt", marker="")
    _, out, segs = output
    assert any(not s["accepted"] for s in segs)  # the real run has rejected segments to mark
    res = _cli("export", str(out), "--format", "srt", "--to", str(tmp_path / "srt"), "--rejected-marker", "")
    assert res.returncode == 0, res.stderr
    assert not any("[?]" in p.read_text() for p in (tmp_path / "srt").rglob("*.srt"))


def test_never_a_zero_length_cue():
    """Seen with diarization on: `00:00:16.656 --> 00:00:16.656 <v spk2>We`."""
    from pipeline.export import subtitle_text

    zero = _seg([("We", 16.656, 16.656)], speaker="spk2")
    after = _seg(_timed("were there", 16.656), speaker="spk1")
    for fmt in ("srt", "vtt"):
        cues = _parse(subtitle_text([zero, after], fmt))
        assert all(round(b, 3) > round(a, 3) for a, b, _ in cues), cues
    alone = _parse(subtitle_text([zero, _seg(_timed("later", 20.0))], "vtt"))
    assert alone[0][:2] == (16.656, pytest.approx(16.656 + 0.5))


def test_long_segment_is_split_by_word_timestamps_and_speakers_are_voice_tags():
    from pipeline.export import subtitle_text

    words = [{"word": f" word{k}", "start": k * 0.5, "end": k * 0.5 + 0.4, "confidence": 0.9} for k in range(40)]
    seg = {
        "start": 0.0,
        "end": 20.0,
        "text": "".join(w["word"] for w in words).strip(),
        "words": words,
        "speaker": "spk0",
        "accepted": False,
        "reject_reasons": ["low_confidence"],
    }
    vtt = subtitle_text([seg], "vtt")
    cues = [b for b in vtt.split("\n\n") if "-->" in b]
    assert len(cues) >= 4
    assert "NOTE rejected: low_confidence" in vtt and all("<v spk0>" in c for c in cues)
    assert "00:00:00.000 -->" in cues[0] and "--> 00:00:20.000" in cues[-1]
    srt = subtitle_text(
        [seg, {**seg, "start": 21.0, "end": 22.0, "text": "fine", "words": [], "accepted": True}], "srt"
    )
    rejected = [c for c in _parse(srt) if c[2][0].startswith("[?] [spk0]")]
    assert len(rejected) >= 4 and "\n[spk0] fine\n" in srt  # rejected cues marked


def test_bad_outputs_and_busy_destinations_exit_2(output, tmp_path):
    _, out, _ = output
    for bad in (tmp_path / "missing", tmp_path):  # missing; an existing folder that is no output
        res = _cli_proc("export", str(bad), "--format", "nemo", "--to", str(tmp_path / "d1"))
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and "no Scriptorium output" in res.stderr
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    res = _cli_proc("export", str(out), "--format", "srt", "--to", str(busy))
    assert res.returncode == 2 and "not empty" in res.stderr and res.stderr.count("\n") == 1
    # idempotent: exporting again with --overwrite replaces our own export with the same bytes
    d = tmp_path / "again"
    assert _cli("export", str(out), "--format", "nemo", "--to", str(d)).returncode == 0
    first = (d / "manifest.jsonl").read_bytes()
    assert _cli("export", str(out), "--format", "nemo", "--to", str(d)).returncode == 2
    assert _cli("export", str(out), "--format", "nemo", "--to", str(d), "--overwrite").returncode == 0
    assert (d / "manifest.jsonl").read_bytes() == first


def test_input_manifest_fields_are_carried_to_exports(output, tmp_path):
    """A manifest's extra fields (reference text, lang) travel with the output into json and Lhotse exports
    (here recorded from the fixture's references manifest, as a run over that manifest does)."""
    import shutil

    from lhotse import load_manifest

    from pipeline.config import InputConfig, OutputConfig
    from pipeline.discover import discover
    from pipeline.export import record_input_fields

    audio, src, _ = output
    out = tmp_path / "out"
    shutil.copytree(src, out)
    manifest = audio.parent / "manifest-ascii.jsonl"  # discovery splits lines at U+2028 too: escape it
    manifest.write_text(
        "".join(
            json.dumps(json.loads(x)) + "\n" for x in (audio.parent / "references.jsonl").read_text().split("\n") if x
        )
    )
    files = discover(InputConfig(uri=str(manifest)))
    assert record_input_fields(OutputConfig(uri=str(out)), files) == len(CLIPS) + 1
    assert _cli("export", str(out), "--format", "json", "--to", str(tmp_path / "j")).returncode == 0
    doc = json.loads((tmp_path / "j/jfk.flac.json").read_text())
    assert "ask not what your country" in doc["input_fields"]["text"] and doc["input_fields"]["lang"] == "en"
    assert _cli("export", str(out), "--format", "lhotse", "--to", str(tmp_path / "l"), "--all").returncode == 0
    cuts = load_manifest(tmp_path / "l/cuts.jsonl.gz")
    assert all(c.custom["input_fields"]["lang"] == c.supervisions[0].language for c in cuts)


def test_export_to_s3_destination(output, s3_endpoint):
    """DEST on an S3 API (moto): files are staged locally and put in place; the busy-destination guard holds."""
    import s3fs

    _, out, segs = output
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir("labels")
    for fmt in ("nemo", "vtt"):
        res = _cli("export", str(out), "--format", fmt, "--to", f"s3://labels/{fmt}", "--endpoint-url", s3_endpoint)
        assert res.returncode == 0, res.stderr
    lines = fs.cat_file("labels/nemo/manifest.jsonl").decode().splitlines()
    assert len(lines) == sum(1 for s in segs if s["accepted"] and s["text"])
    assert fs.exists("labels/vtt/a/x.wav.vtt") and fs.exists("labels/vtt/b/x.wav.vtt")
    res = _cli("export", str(out), "--format", "nemo", "--to", "s3://labels/nemo", "--endpoint-url", s3_endpoint)
    assert res.returncode == 2 and "not empty" in res.stderr


def test_export_streams_in_chunks_with_the_same_bytes(output, tmp_path, monkeypatch):
    """Exports are bounded by a chunk, not the output: with chunks of one segment (the smallest), the
    segments table is scanned once per recording and every format writes the same bytes as in one chunk."""
    from pipeline.export import read

    _, out, segs = output
    scans: list[int] = []
    real = read._segments_of

    def counted(led, chunk, accepted):
        scans.append(chunk.num_rows)
        return real(led, chunk, accepted)

    monkeypatch.setattr(read, "_segments_of", counted)

    def files(dest):  # gzip's header holds the time it was written: compare what it holds
        import gzip

        return {
            p.relative_to(dest).as_posix(): gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
            for p in sorted(dest.rglob("*"))
            if p.is_file()
        }

    got = {}
    for size in ("whole", "tiny"):
        monkeypatch.setattr(read, "CHUNK_SEGMENTS", 10**9 if size == "whole" else 1)
        scans.clear()
        for fmt, extra in (("nemo", []), ("json", []), ("vtt", []), ("lhotse", ["--all"])):
            dest = tmp_path / size / fmt
            assert _cli("export", str(out), "--format", fmt, "--to", str(dest), *extra).returncode == 0
            got[size, fmt] = files(dest)
        got[size, "scans"] = list(scans)
    recordings = len({s["recording_id"] for s in segs})
    assert got["whole", "scans"] == [len(CLIPS) + 1] * 4  # one scan per export
    assert len(got["tiny", "scans"]) >= 4 * recordings and set(got["tiny", "scans"]) == {1}
    for fmt in ("nemo", "json", "vtt", "lhotse"):
        assert got["tiny", fmt] == got["whole", fmt], fmt
    assert len(got["whole", "nemo"]["manifest.jsonl"].splitlines()) == sum(
        1 for s in segs if s["accepted"] and s["text"]
    )
