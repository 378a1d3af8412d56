"""The whole pipeline through the CLI with every model stage on NeMo backends: frame-VAD, AmberNet-style
LID, Sortformer diarization and a TDT ASR model fetched from S3 (moto) with its sha256, all tiny and
randomly initialised (tests/nemo_models.py). Checks the output contract, not transcript quality."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nemo_models import LID_LABELS, session_models  # noqa: E402

from pipeline.config import OutputConfig  # noqa: E402
from pipeline.ledger import read_output  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FILES = ["speech/speechbrain_spk1_snt1.wav", "multilingual/fleurs-de-004.ogg", "diarization/pyannote_sample.wav"]


@pytest.mark.slow
def test_cli_run_with_every_stage_on_nemo(corpus, s3_endpoint, tmp_path):
    import s3fs

    tiny = session_models()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    if not fs.exists("nemo-e2e"):
        fs.mkdir("nemo-e2e")  # no region: moto refuses a LocationConstraint
    fs.put(str(tiny["tdt"]), "nemo-e2e/models/asr.nemo")
    asr_sha = hashlib.sha256(tiny["tdt"].read_bytes()).hexdigest()

    src = tmp_path / "in"
    src.mkdir()
    for rel in FILES:  # a temp copy outside the repository
        shutil.copy(corpus / rel, src / Path(rel).name)
    out, cache = tmp_path / "out", tmp_path / "model-cache"
    overrides = [
        f"input.uri={src}",
        f"output.uri={out}",
        "vad.backend=nemo",
        f"vad.model={tiny['vad']}",
        # random weights: a near-zero threshold makes every file one speech region (deterministic)
        "vad.threshold=0.01",
        "vad.neg_threshold=0.0",
        "lid.backend=nemo",
        f"lid.model={tiny['lid']}",
        "asr.backend=nemo",
        "asr.model=s3://nemo-e2e/models/asr.nemo",
        f"asr.sha256={asr_sha}",
        f"models.storage.endpoint_url={s3_endpoint}",
        f"models.cache_dir={cache}",
        "diarization.enabled=true",
        "diarization.backend=nemo",
        f"diarization.model={tiny['sortformer']}",
    ]
    res = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(REPO / "conf/local.yaml"), *overrides],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]

    recordings = read_output(OutputConfig(uri=str(out)), "recordings").to_pylist()
    segments = read_output(OutputConfig(uri=str(out)), "segments").to_pylist()
    assert sorted(Path(r["uri"]).name for r in recordings) == sorted(Path(f).name for f in FILES)
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
    assert len(cached) == 1 and hashlib.sha256(cached[0].read_bytes()).hexdigest() == asr_sha
