"""Model references -> local files, fetched once per node, verified before anything unpickles them.

A model reference in the config (`asr.model`, `vad.model`, ...) is one of:

* a local path to a `.nemo` file (`/models/asr.nemo`, `~/m.nemo`, `file:///models/asr.nemo`);
* an fsspec URI of a `.nemo` file (`s3://bucket/models/asr.nemo`, `gs://...`, `https://...`): it is
  downloaded once per node into `models.cache_dir` and reused by every actor and process there;
* a pretrained name (`nvidia/parakeet-tdt-0.6b-v3`, `vad_multilingual_frame_marblenet`):
  `resolve_model` returns None and the caller asks NeMo's `from_pretrained` (which needs network).

Why the care: a `.nemo` is a tar holding pickles, so loading one runs code. When the config carries a
`sha256`, the bytes are verified before NeMo sees them and a mismatch refuses to load
(`ModelIntegrityError`). Why the lock: a node runs several actors (and Ray may run several worker
processes) that start at the same time; without it each would download the same multi-GB file, and a
reader could open a half-written one. The download goes to a temporary name in the cache folder and is
renamed into place atomically, under an inter-process file lock, so readers see either nothing or the
whole verified file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from filelock import FileLock
from fsspec.utils import get_protocol

from pipeline.config import ModelsConfig
from pipeline.errors import UserError, with_retries
from pipeline.storage import make_filesystem

log = logging.getLogger(__name__)

_CHUNK = 8 * 1024 * 1024
_LOCK_TIMEOUT_S = 3600.0  # a multi-GB download by another process may legitimately take this long
#: A model fetch's retries on transient errors (`with_retries`): attempts, first and longest wait (s)
_FETCH_ATTEMPTS = 4
_FETCH_WAIT_S, _FETCH_MAX_WAIT_S = 0.5, 8.0


class ModelIntegrityError(RuntimeError):
    """A model file's sha256 differs from the one in the config: it is refused, never loaded."""


class ModelLoadError(UserError, RuntimeError):
    """A model could not be fetched or loaded; the message says what to do instead."""


def is_file_ref(ref: str) -> bool:
    """True for a local path or URI of a model file; False for a pretrained model name."""
    if "://" in ref or ref.endswith(".nemo"):
        return True
    return Path(os.path.expanduser(ref)).exists()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _digest_cache_dir() -> Path:
    return Path(os.path.expanduser(os.environ.get("SCRIPTORIUM_DIGEST_CACHE", "~/.cache/scriptorium/digests")))


def cached_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a model file, re-verified on every load at the cost of one stat: the digest is
    remembered (a sidecar under ~/.cache/scriptorium/digests) with the file's identity (real path,
    inode, size, mtime_ns and ctime_ns; ctime cannot be set back by a writer), and the file is hashed
    again whenever any of them changed. A file edited in place is therefore always re-hashed."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = [real, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    sidecar = _digest_cache_dir() / (hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:32] + ".json")
    try:
        cached = json.loads(sidecar.read_text())
        if cached.get("key") == key and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    except (OSError, ValueError):
        pass
    digest = sha256_file(real)
    try:  # best effort: a read-only home only costs a re-hash next time
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}")
        tmp.write_text(json.dumps({"key": key, "sha256": digest}))
        os.replace(tmp, sidecar)
    except OSError:
        pass
    return digest


#: How to compute a folder's pin by hand (README "Models"): the same digest `folder_sha256` gives.
FOLDER_SHA256_COMMAND = (
    "(cd DIR && find -L . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum) | sha256sum"
)


def folder_sha256(path: str | os.PathLike[str]) -> str:
    """The pin of a model folder (a CTranslate2 Whisper model: model.bin, config.json, tokenizer.json,
    vocabulary.json, ...): the sha256 of `sha256sum`'s lines (`<hex>  <relative path>`) for every file
    in it, sorted by path, so one digest covers every byte CTranslate2 and the tokenizer read, and
    `FOLDER_SHA256_COMMAND` computes it without Scriptorium. Each file's digest is cached
    (`cached_sha256`): an unchanged folder costs one stat per file."""
    root = os.path.realpath(path)
    rels = []
    for dirpath, _dirs, files in os.walk(root, followlinks=True):
        rels += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
    lines = "".join(f"{cached_sha256(os.path.join(root, rel))}  {rel}\n" for rel in sorted(rels, key=os.fsencode))
    return hashlib.sha256(lines.encode("utf-8", "surrogateescape")).hexdigest()


def check_folder(key: str, path: str | os.PathLike[str], sha256: str | None, models: ModelsConfig | None) -> None:
    """A model folder against its pin (`folder_sha256`), on every load. Without a pin it loads unless
    `models.require_sha256`; the digest of `model.bin` alone (the older pin) is still taken, unless
    `models.require_sha256` asks for every file to be covered. Raises `ModelIntegrityError` (a
    mismatch) or `ModelLoadError` (no pin where one is required); one line each, with the digest to pin."""
    require = models is not None and models.require_sha256
    if not sha256:
        if require:
            raise ModelLoadError(
                f"{key}: folder {str(path)!r} has no sha256 in the config, and models.require_sha256 is true; "
                f"if the folder comes from a source you trust, pin it with {key.rsplit('.', 1)[0]}.sha256="
                f"{folder_sha256(path)} (computed as: {FOLDER_SHA256_COMMAND})"
            )
        return
    found = folder_sha256(path)
    if same_digest(sha256, found):
        return
    weights = os.path.join(path, "model.bin")
    weights_found = cached_sha256(weights) if os.path.isfile(weights) else None
    if weights_found is not None and same_digest(sha256, weights_found):
        if not require:
            return  # the older pin: model.bin only
        raise ModelLoadError(
            f"{key}: the sha256 pins {weights} only, and models.require_sha256 asks for every file of the "
            f"folder: pin {key.rsplit('.', 1)[0]}.sha256={found} (computed as: {FOLDER_SHA256_COMMAND})"
        )
    raise ModelIntegrityError(
        mismatch_message(f"{key} folder {str(path)!r}", sha256, found)
        + f" (every file of it, as: {FOLDER_SHA256_COMMAND}"
        + (f"; model.bin alone: {weights_found}" if weights_found else "")
        + "); refusing to load it"
    )


def same_digest(expected: str | None, actual: str) -> bool:
    """Hex digests compare case-insensitively (and without surrounding blanks)."""
    return expected is None or actual.strip().lower() == expected.strip().lower()


def mismatch_message(what: str, expected: str, actual: str) -> str:
    """The one line a digest mismatch says: which file, expected and found digests."""
    return f"{what} does not match its sha256: expected {expected.strip().lower()}, found {actual.lower()}"


def _check(ref: str, expected: str | None, actual: str) -> None:
    if not same_digest(expected, actual):
        raise ModelIntegrityError(
            mismatch_message(f"model file {ref!r}", expected, actual) + "; Refusing to load it (a .nemo file "
            "contains pickles, i.e. code); fix the `sha256` in the config if the model was updated on purpose"
        )


def resolve_model(ref: str, sha256: str | None, models: ModelsConfig) -> str | None:
    """Local path of the model file `ref` (verified against `sha256` if given), or None when `ref`
    is a pretrained name that NeMo must download itself.

    Remote files are cached in `models.cache_dir/<hash of the URI>/<file name>`; the cache is
    re-validated against the object's size/ETag (one metadata request), so a replaced object is
    downloaded again. Raises `FileNotFoundError`, `ModelIntegrityError` or `ModelLoadError`."""
    if not is_file_ref(ref):
        return None

    protocol = get_protocol(ref)
    if protocol in ("file", "local"):
        path = os.path.expanduser(ref.split("://", 1)[1] if "://" in ref else ref)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model file {ref!r} does not exist")
        if sha256 is not None:
            _check(ref, sha256, cached_sha256(path))  # on every load: a changed file is hashed again
        return path

    fs = make_filesystem(protocol, models.storage, ref)
    cache_dir = Path(os.path.expanduser(models.cache_dir))
    slot = cache_dir / hashlib.sha256(ref.encode()).hexdigest()[:16]
    slot.mkdir(parents=True, exist_ok=True)
    name = ref.rstrip("/").rsplit("/", 1)[-1] or "model.nemo"
    target = slot / name
    meta_path = slot / (name + ".meta.json")

    with FileLock(str(slot / (name + ".lock")), timeout=_LOCK_TIMEOUT_S):
        remote = _remote_info(fs, ref)
        if target.exists() and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            same_object = meta.get("size") == remote["size"] and meta.get("etag") == remote["etag"]
            # the cached bytes themselves are verified on every load (not the meta file's word for them)
            if (
                same_object
                and same_digest(sha256 or meta.get("sha256"), cached_sha256(target))
                and (sha256 is None or same_digest(sha256, meta.get("sha256") or ""))
            ):
                return str(target)
            log.warning("cached copy of %s is stale or does not match its sha256; downloading again", ref)
        digest = _download(fs, ref, slot, target, sha256)
        meta_path.write_text(json.dumps({"uri": ref, "sha256": digest, **remote}))
        return str(target)


def _remote_info(fs: Any, ref: str) -> dict[str, Any]:
    def info() -> dict[str, Any]:
        return fs.info(ref)

    try:
        raw = with_retries(info, _FETCH_ATTEMPTS, wait_s=_FETCH_WAIT_S, max_wait_s=_FETCH_MAX_WAIT_S)
    except FileNotFoundError:
        raise FileNotFoundError(f"model file {ref!r} does not exist") from None
    etag = raw.get("ETag") or raw.get("etag") or raw.get("md5Hash") or raw.get("mtime") or raw.get("LastModified")
    return {"size": int(raw.get("size") or 0), "etag": str(etag) if etag is not None else None}


def _download(fs: Any, ref: str, slot: Path, target: Path, sha256: str | None) -> str:
    """Stream `ref` into a temporary file in `slot`, hashing on the way; verify; rename into place."""

    def fetch() -> str:
        tmp = slot / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
        try:
            h = hashlib.sha256()
            with fs.open(ref, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            digest = h.hexdigest()
            _check(ref, sha256, digest)
            os.replace(tmp, target)
            return digest
        finally:
            tmp.unlink(missing_ok=True)

    log.info("downloading model %s -> %s", ref, target)
    try:
        return with_retries(fetch, _FETCH_ATTEMPTS, wait_s=_FETCH_WAIT_S, max_wait_s=_FETCH_MAX_WAIT_S)
    except FileNotFoundError:
        raise FileNotFoundError(f"model file {ref!r} does not exist") from None


def pick_device(use_gpu: bool) -> str:
    """'cuda' or 'cpu'; asking for a GPU where CUDA is missing is an error, not a silent fallback."""
    if not use_gpu:
        return "cpu"
    import torch  # heavy: torch, only where a model runs

    if not torch.cuda.is_available():
        raise RuntimeError(
            "use_gpu=True but CUDA is not available in this process (no GPU, or a CPU-only torch build). "
            "Give the stage num_gpus: 0 to run on CPU."
        )
    return "cuda"


def check_policy(ref: str, sha256: str | None, models: ModelsConfig) -> None:
    """The config's rules for model references, checked before anything is fetched: a cluster
    without internet (`models.allow_download: false`) takes staged files only, and a preset that
    says `models.require_sha256` loads no file it cannot verify. Raises `ModelLoadError`."""
    if not is_file_ref(ref):
        if not models.allow_download:
            raise ModelLoadError(
                f"model {ref!r} is a pretrained name, but models.allow_download is false: stage it as a "
                ".nemo file with its sha256 (infra/stage_models.py) or set models.allow_download=true"
            )
        return
    if models.require_sha256 and not sha256:
        raise ModelLoadError(f"model file {ref!r} has no sha256 in the config, and models.require_sha256 is true")


def load_nemo_model(cls: Any, ref: str, sha256: str | None, models: ModelsConfig, device: str) -> Any:
    """Restore a NeMo model from a `.nemo` ref (local/remote, verified) or a pretrained name.

    `cls` is the NeMo class to restore with (e.g. `ASRModel`; None means `ModelPT`, which restores
    whatever class the file's config names). The model is returned in eval mode on `device`. Weights
    stay float32: backends run GPU inference under fp16/bf16 autocast (`inference_context`), which keeps
    the feature extractor in float32 where half precision is known to hurt."""
    import torch  # heavy: torch, only where a model runs
    from nemo.core.classes import ModelPT

    cls = cls or ModelPT
    map_location = torch.device(device)
    check_policy(ref, sha256, models)
    path = resolve_model(ref, sha256, models)
    if path is not None:
        model = cls.restore_from(path, map_location=map_location)
    else:
        if sha256 is not None:
            log.warning("sha256 given for pretrained name %r: NeMo's own cache is not verified", ref)
        try:
            model = cls.from_pretrained(ref, map_location=map_location)
        except Exception as exc:  # noqa: BLE001 - NeMo raises many types for "no network"
            raise ModelLoadError(
                f"could not download pretrained model {ref!r}: no network? Pass a local .nemo or s3:// path "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    model.eval()
    return model.to(map_location)


def inference_context(device: str) -> Any:
    """inference_mode, plus half-precision autocast on GPU (bf16 where supported, else fp16)."""
    import torch  # heavy: torch, only where a model runs

    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        stack.enter_context(torch.autocast("cuda", dtype=dtype))
    return stack


def model_refs(cfg: Any) -> list[tuple[str, str, str | None]]:
    """(config key, model reference, sha256) of every NeMo model a job config will load."""
    rec, seg = cfg.recording_stage, cfg.segment_stage
    sections = [
        ("recording_stage.vad", rec.vad),
        ("recording_stage.diarization", rec.diarization),
        ("segment_stage.lid", seg.lid),
        ("segment_stage.asr", seg.asr),
    ]
    return [
        (f"{key}.model", section.model, section.sha256)
        for key, section in sections
        if section.backend == "nemo" and getattr(section, "enabled", True)
    ]
