"""Model references: local files, S3 (a real S3 API served by moto) with a per-node cache, sha256
verification, concurrent fetches, retries, and pretrained names without network. No Ray."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import pipeline.models as pm
from pipeline.config import ModelsConfig, StorageOptions
from pipeline.models import ModelIntegrityError, ModelLoadError, load_nemo_model, resolve_model
from tests.helpers import LOCAL_CONF, REPO, sha256_of as sha

BUCKET = "scriptorium-models"


@pytest.fixture(scope="module")
def s3_models(s3_endpoint, tiny):
    """The tiny ASR model uploaded to a bucket of the moto S3 server."""
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)  # no region: moto refuses a LocationConstraint for us-east-1
    fs.put(str(tiny["ctc"]), f"{BUCKET}/asr/ctc.nemo")
    fs.put(str(tiny["vad"]), f"{BUCKET}/vad/vad.nemo")
    return fs


def s3_cfg(endpoint: str, cache: Path) -> ModelsConfig:
    return ModelsConfig(cache_dir=str(cache), storage=StorageOptions(endpoint_url=endpoint))


# ------------------------------------------------------------------------------------------ local


def test_local_path_and_sha256(tiny, tmp_path):
    cfg = ModelsConfig(cache_dir=str(tmp_path / "cache"))
    path = tiny["vad"]
    assert resolve_model(str(path), None, cfg) == str(path)
    assert resolve_model(f"file://{path}", sha(path).upper(), cfg) == str(path)
    with pytest.raises(ModelIntegrityError) as err:
        resolve_model(str(path), "0" * 64, cfg)
    assert "0" * 64 in str(err.value) and sha(path) in str(err.value) and "Refusing" in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "missing.nemo"), None, cfg)
    assert not (tmp_path / "cache").exists()  # local files are never copied


@pytest.mark.slow  # NeMo's import (~25 s), when no test before it paid for it
def test_pretrained_name_without_network_fails_fast(tmp_path):
    from nemo.collections.asr.models import EncDecFrameClassificationModel

    cfg = ModelsConfig(cache_dir=str(tmp_path))
    assert resolve_model("vad_multilingual_frame_marblenet", None, cfg) is None
    assert resolve_model("nvidia/parakeet-tdt-0.6b-v3", None, cfg) is None
    t0 = time.monotonic()
    with pytest.raises(
        ModelLoadError, match="could not download pretrained model 'vad_multilingual_frame_marblenet'.*no network"
    ):
        load_nemo_model(EncDecFrameClassificationModel, "vad_multilingual_frame_marblenet", None, cfg, "cpu")
    assert time.monotonic() - t0 < 60


# ------------------------------------------------------------------------------------------ S3


def test_s3_model_loads_with_sha256_and_is_cached(s3_models, s3_endpoint, tiny, tmp_path, corpus):
    from nemo.collections.asr.models import ASRModel

    cfg = s3_cfg(s3_endpoint, tmp_path / "cache")
    ref = f"s3://{BUCKET}/asr/ctc.nemo"
    model = load_nemo_model(ASRModel, ref, sha(tiny["ctc"]), cfg, "cpu")
    assert not model.training
    local = Path(resolve_model(ref, sha(tiny["ctc"]), cfg))
    assert local.is_file() and str(local).startswith(str(tmp_path / "cache"))
    assert sha(local) == sha(tiny["ctc"])
    assert not list(local.parent.glob("*.part"))

    # the same model through the ASR backend (a user's asr.model=s3://...)
    from pipeline.audio import decode
    from pipeline.backends.nemo import NemoAsr
    from pipeline.config import AsrConfig

    asr = NemoAsr(AsrConfig(backend="nemo", model=ref, sha256=sha(tiny["ctc"])), cfg, use_gpu=False)
    clip = decode(str(corpus / "speech" / "speechbrain_spk1_snt2.wav")).samples
    assert len(asr.transcribe([clip], ["en"])) == 1
    assert asr.model_id() == f"nemo:{ref}@sha256:{sha(tiny['ctc'])[:12]}"


def test_s3_sha256_mismatch_is_refused_and_leaves_nothing(s3_models, s3_endpoint, tmp_path):
    cfg = s3_cfg(s3_endpoint, tmp_path / "cache")
    with pytest.raises(ModelIntegrityError, match="expected f{64}, found [0-9a-f]{64}"):
        resolve_model(f"s3://{BUCKET}/asr/ctc.nemo", "f" * 64, cfg)
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert leftovers == []


def test_s3_concurrent_fetch_downloads_once(s3_models, s3_endpoint, tiny, tmp_path, monkeypatch):
    cfg = s3_cfg(s3_endpoint, tmp_path / "cache")
    ref = f"s3://{BUCKET}/asr/ctc.nemo"
    real_download = pm._download
    downloads = []

    def slow_counting_download(*args, **kwargs):
        downloads.append(threading.get_ident())
        time.sleep(0.5)  # widen the race window
        return real_download(*args, **kwargs)

    monkeypatch.setattr(pm, "_download", slow_counting_download)
    results, errors = [], []

    def worker():
        try:
            results.append(resolve_model(ref, sha(tiny["ctc"]), cfg))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(results) == 3 and len(set(results)) == 1
    assert len(downloads) == 1
    assert sha(Path(results[0])) == sha(tiny["ctc"])
    # a later call (another actor on the node) is served from the cache
    resolve_model(ref, None, cfg)
    assert len(downloads) == 1


_CHILD = """
import sys, time
import pipeline.models as pm
from pipeline.config import ModelsConfig, StorageOptions
real = pm._download
def counting(*a, **k):
    with open(sys.argv[3], "a") as f:
        f.write("download\\n")
    time.sleep(0.5)
    return real(*a, **k)
pm._download = counting
cfg = ModelsConfig(cache_dir=sys.argv[2], storage=StorageOptions(endpoint_url=sys.argv[1]))
print(pm.resolve_model(sys.argv[4], sys.argv[5], cfg))
"""


def test_s3_concurrent_fetch_from_two_processes_downloads_once(s3_models, s3_endpoint, tiny, tmp_path):
    """Two actors in different processes on one node: one downloads, the other waits on the lock."""
    import subprocess

    ref, marker = f"s3://{BUCKET}/vad/vad.nemo", tmp_path / "downloads.txt"
    args = [sys.executable, "-c", _CHILD, s3_endpoint, str(tmp_path / "cache"), str(marker), ref, sha(tiny["vad"])]
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO) for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1 and sha(Path(paths.pop())) == sha(tiny["vad"])
    assert marker.read_text().count("download") == 1


def test_s3_replaced_object_is_downloaded_again(s3_models, s3_endpoint, tiny, tmp_path):
    cfg = s3_cfg(s3_endpoint, tmp_path / "cache")
    ref = f"s3://{BUCKET}/swap/model.nemo"
    s3_models.put(str(tiny["vad"]), f"{BUCKET}/swap/model.nemo")
    first = Path(resolve_model(ref, None, cfg))
    assert sha(first) == sha(tiny["vad"])
    s3_models.put(str(tiny["lid"]), f"{BUCKET}/swap/model.nemo")
    s3_models.invalidate_cache()
    second = Path(resolve_model(ref, None, cfg))
    assert sha(second) == sha(tiny["lid"])


def test_s3_missing_object(s3_models, s3_endpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model(f"s3://{BUCKET}/nope/missing.nemo", None, s3_cfg(s3_endpoint, tmp_path))


def test_transient_fetch_errors_are_retried_then_given_up(tmp_path, monkeypatch):
    """Bounded retries: a flaky connection recovers; a dead one fails after a few attempts."""
    payload = np.random.default_rng(0).bytes(1000)

    class FlakyFS:
        def __init__(self, failures: int):
            self.failures, self.opens = failures, 0

        def info(self, ref):
            return {"size": len(payload), "ETag": "abc"}

        def open(self, ref, mode):
            import io

            self.opens += 1
            if self.opens <= self.failures:
                raise ConnectionResetError("connection reset by peer")
            return io.BytesIO(payload)

    import fsspec

    monkeypatch.setattr(pm, "_FETCH_ATTEMPTS", 3)
    import tenacity

    monkeypatch.setattr(tenacity, "wait_exponential", lambda **kw: tenacity.wait_none())
    cfg = ModelsConfig(cache_dir=str(tmp_path))
    flaky = FlakyFS(failures=2)
    monkeypatch.setattr(fsspec, "filesystem", lambda *a, **k: flaky)
    path = resolve_model("s3://b/m.nemo", hashlib.sha256(payload).hexdigest(), cfg)
    assert Path(path).read_bytes() == payload and flaky.opens == 3

    dead = FlakyFS(failures=100)
    monkeypatch.setattr(fsspec, "filesystem", lambda *a, **k: dead)
    with pytest.raises(ConnectionResetError):
        resolve_model("s3://b/other.nemo", None, cfg)
    assert dead.opens == 3


def test_models_verified_at_load_not_once(tmp_path, monkeypatch):
    """The embedded Whisper copy and a cached/local model file are re-verified whenever they load: a
    file changed in place (same size) is refused with file, expected and found digests; upper-case
    digests are accepted."""
    from pipeline.backends.whisper import EMBEDDED, embedded_model_dir, resolve_whisper_model
    from pipeline.config import AsrConfig, ModelsConfig, load_config
    from pipeline.models import ModelIntegrityError, resolve_model, sha256_file
    from pipeline.preflight import check_models

    monkeypatch.setenv("SCRIPTORIUM_DIGEST_CACHE", str(tmp_path / "digests"))
    want = EMBEDDED["base"]["sha256"]
    folder = embedded_model_dir("base", str(tmp_path / "whisper"))  # a private copy: reassembled, verified
    assert embedded_model_dir("base", str(tmp_path / "whisper")) == folder  # cached digest: one stat
    own = tmp_path / "own"
    own.mkdir()
    (own / "model.bin").symlink_to(folder / "model.bin")
    assert resolve_whisper_model(AsrConfig(model=str(own), sha256=want.upper())) == str(own)
    with open(folder / "model.bin", "r+b") as f:  # corrupt one byte in place: same size
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    found = sha256_file(folder / "model.bin")
    with pytest.raises(ModelIntegrityError) as err:
        embedded_model_dir("base", str(tmp_path / "whisper"))
    msg = str(err.value)
    assert "\n" not in msg and "model.bin" in msg and want in msg and found in msg, msg
    with pytest.raises(ModelIntegrityError, match=found):
        resolve_whisper_model(AsrConfig(model=str(own), sha256=want))
    # a local .nemo: verified on every resolve, a change in place is caught; preflight says it in one line
    nemo = tmp_path / "m.nemo"
    nemo.write_bytes(b"x" * 4096)
    digest = sha256_file(nemo)
    assert resolve_model(str(nemo), digest.upper(), ModelsConfig()) == str(nemo)
    nemo.write_bytes(b"y" * 4096)
    with pytest.raises(ModelIntegrityError, match=sha256_file(nemo)):
        resolve_model(str(nemo), digest, ModelsConfig())
    cfg = load_config(
        LOCAL_CONF,
        [
            "input.uri=/x",
            "output.uri=/y",
            "segment_stage.asr.backend=nemo",
            f"segment_stage.asr.model={nemo}",
            f"segment_stage.asr.sha256={digest}",
            "segment_stage.lid.backend=none",
            "segment_stage.lid.language=en",
        ],
    )
    problems = check_models(cfg)
    assert len(problems) == 1 and digest in problems[0] and sha256_file(nemo) in problems[0], problems
