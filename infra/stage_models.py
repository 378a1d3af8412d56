#!/usr/bin/env python
"""Stage the NeMo models of a preset onto the model-cache volume, once, where the model hub is reachable.

    HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0 python infra/stage_models.py conf/nemo-gpu.yaml \
        --models-dir /mnt/scriptorium-models --out conf/nemo-gpu.yaml

For every NeMo model of the preset (`recording_stage.vad.model`, `recording_stage.diarization.model`,
`segment_stage.lid.model`, `segment_stage.asr.model` with `backend: nemo`; a preset still written in the
flat layout before issue 15, `vad:` ... at the top, is read there too) that is a pretrained name, or a `/models/<name>.nemo` path not filled in yet, it
downloads the pretrained model with NeMo using the class the pipeline restores it with (see
pipeline/backends/nemo/), saves it as `<models-dir>/<name>.nemo`, computes the file's sha256 and
writes a copy of the preset in which that model reads `model: /models/<name>.nemo` and `sha256: <hex>`
(`/models` is where the Ray pods mount the volume; `--mount-path` changes it). Everything else in the
preset, comments included, is kept as it was.

Why: the cluster may have no internet, and a `.nemo` holds pickles (loading one runs code). With the
file on a read-only volume and its sha256 in the config, `pipeline.models.resolve_model` verifies the
bytes before NeMo sees them and nothing is fetched at run time.

The config rewrite (`plan_staging`, `rewrite_preset`) is pure and unit-tested (tests/test_infra.py);
the download (`nemo_download`) is the only part that needs NeMo and the network.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

# The config sections that name a NeMo model (dotted paths, in the order the data meets them), and the
# NeMo class the pipeline restores each with (pipeline/backends/nemo: NemoVad, NemoLid, NemoAsr,
# NemoDiarizer). Saving with the same class means the .nemo's config names the class the pipeline expects.
MODEL_SECTIONS = ("recording_stage.vad", "recording_stage.diarization", "segment_stage.lid", "segment_stage.asr")
# Where a preset of the flat layout before issue 15 has them (pipeline/config/migration.py MOVED_KEYS).
_OLD_PLACE = {
    "recording_stage.vad": "vad",
    "recording_stage.diarization": "diarization",
    "segment_stage.lid": "lid",
    "segment_stage.asr": "asr",
}
_CLASS_BY_SECTION = {
    "vad": "EncDecFrameClassificationModel",
    "lid": "EncDecSpeakerLabelModel",
    "asr": "ASRModel",
}


def nemo_class_name(section: str, ref: str) -> str:
    """Name of the class in `nemo.collections.asr.models` the pipeline uses for `section`'s model
    (`segment_stage.asr` or just `asr`)."""
    section = section.rsplit(".", 1)[-1]
    if section == "diarization":
        # Same rule as NemoDiarizer: Sortformer end-to-end diarizer, else a speaker-embedding model.
        return "SortformerEncLabelModel" if "sortformer" in ref.lower() else "EncDecSpeakerLabelModel"
    return _CLASS_BY_SECTION[section]


def is_pretrained_name(ref: str) -> bool:
    """A hub name (`nvidia/parakeet-tdt-0.6b-v3`, `langid_ambernet`), not a file or URI (those are staged
    already, or fetched by pipeline/models.py with their sha256)."""
    return "://" not in ref and not ref.endswith(".nemo") and not ref.startswith(("/", "~", "."))


def file_name(ref: str) -> str:
    """`nvidia/parakeet-tdt-0.6b-v3` -> `parakeet-tdt-0.6b-v3.nemo` (the hub's own file name)."""
    name = ref.rstrip("/").split("/")[-1]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(f"model name {ref!r} does not make a safe file name")
    return f"{name}.nemo"


# Pretrained name of a staged file whose preset already names `/models/<stem>.nemo` (the shipped presets
# do): NGC-listed names are the stem itself; Hugging Face ones need their organisation. `--pretrained
# SECTION=NAME` overrides (SECTION: `segment_stage.asr`, or just `asr`).
KNOWN_PRETRAINED = {
    "parakeet-tdt-0.6b-v3": "nvidia/parakeet-tdt-0.6b-v3",
    "parakeet-tdt-0.6b-v2": "nvidia/parakeet-tdt-0.6b-v2",
    "canary-1b-flash": "nvidia/canary-1b-flash",
}


@dataclass(frozen=True)
class StagedModel:
    section: str  # dotted path of the config section, e.g. segment_stage.asr
    source: str  # the pretrained name downloaded
    class_name: str
    path: str  # the file as the Ray pods see it, e.g. /models/parakeet-tdt-0.6b-v3.nemo
    rel: str  # the same file relative to the volume root


def plan_staging(
    preset: dict[str, Any], mount_path: str = "/models", pretrained: dict[str, str] | None = None
) -> list[StagedModel]:
    """The models of `preset` (a parsed YAML mapping) to stage, in section order. A section qualifies when
    its backend is nemo and its model is either a pretrained name (staged as <mount>/<name>.nemo) or a
    file under `mount_path` (staged at that path; downloaded from `pretrained[section]`, the known name
    of its stem, or the stem itself). Remote (s3://...) and other local files are left alone:
    pipeline/models.py fetches and verifies those."""
    mount = mount_path.rstrip("/") + "/"
    pretrained = pretrained or {}
    plan = []
    for section in MODEL_SECTIONS:
        if _lookup(preset, section) is None and isinstance(preset.get(_OLD_PLACE[section]), dict):
            section = _OLD_PLACE[section]  # a preset of the flat layout: stage it where it is
        cfg = _lookup(preset, section) or {}
        if not isinstance(cfg, dict) or cfg.get("backend") != "nemo":
            continue
        if section.endswith("diarization") and not cfg.get("enabled", False):
            continue
        ref = str(cfg.get("model") or "")
        if not ref:
            continue
        named = pretrained.get(section) or pretrained.get(section.rsplit(".", 1)[-1])
        if is_pretrained_name(ref):
            source, rel = named or ref, file_name(ref)
        elif ref.startswith(mount) and ref.endswith(".nemo"):
            rel = ref[len(mount) :]
            if ".." in Path(rel).parts:
                raise ValueError(f"{section}.model {ref!r} leaves {mount_path}")
            stem = Path(rel).name[: -len(".nemo")]
            source = named or KNOWN_PRETRAINED.get(stem, stem)
        else:
            continue
        plan.append(StagedModel(section, source, nemo_class_name(section, source), mount + rel, rel))
    return plan


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _is_key_line(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: list[str], dotted: str) -> tuple[int, int, str] | None:
    """(line of `key:`, end of its block, indentation of its keys) of a dotted section of a
    block-style YAML mapping, or None where it is absent."""
    start, end, indent = -1, len(lines), ""
    for part in dotted.split("."):
        pat = re.compile(rf"^{re.escape(indent)}{re.escape(part)}:")
        found = next((i for i in range(start + 1, end) if pat.match(lines[i])), None)
        if found is None:
            return None
        start, level = found, len(indent)
        # the block ends at the next key line indented no deeper than its own key
        end = next((i for i in range(found + 1, end) if _is_key_line(lines[i]) and _indent(lines[i]) <= level), end)
        first = next((lines[i] for i in range(found + 1, end) if _is_key_line(lines[i])), None)
        indent = " " * (_indent(first) if first is not None and _indent(first) > level else level + 2)
    return start, end, indent


def _set_key(lines: list[str], start: int, end: int, indent: str, key: str, value: str, after: str | None) -> None:
    """Set `key: value` (at `indent`, the block's own keys) inside lines[start:end], keeping any trailing
    comment; insert it after the `after` key's line when absent."""
    pat = re.compile(rf"^({re.escape(indent)}){re.escape(key)}:(\s*)([^#\n]*?)(\s*#.*)?$")
    for i in range(start + 1, end):
        m = pat.match(lines[i])
        if m:
            comment = m.group(4) or ""
            lines[i] = f"{m.group(1)}{key}: {value}{comment}"
            return
    anchor = start
    if after is not None:
        for i in range(start + 1, end):
            if re.match(rf"^{re.escape(indent)}{re.escape(after)}:", lines[i]):
                anchor = i
                break
    lines.insert(anchor + 1, f"{indent}{key}: {value}")


def rewrite_preset(text: str, staged: dict[str, tuple[str, str]]) -> str:
    """Return `text` (a preset's YAML) with `<section>.model` and `<section>.sha256` replaced by the staged
    (path, sha256) of each section in `staged` (dotted paths, e.g. `segment_stage.asr`); every other
    line, comments included, is kept.

    The edit is line-based so that the operator's comments survive; it is then checked by parsing both
    texts: the result must equal the original mapping with exactly those keys changed (a round trip), or
    ValueError is raised instead of writing a config that says something else."""
    lines = text.splitlines()
    for section, (path, digest) in staged.items():
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"{section}: {digest!r} is not a sha256 hex digest")
        block = _block(lines, section)
        if block is None:
            raise ValueError(f"section {section!r} not found in the preset")
        start, end, indent = block
        if not lines[start].rstrip().endswith(":") and "#" not in lines[start]:
            raise ValueError(f"section {section!r} is not a block mapping; edit it by hand")
        _set_key(lines, start, end, indent, "model", _yaml_scalar(path), after=None)
        start, end, indent = _block(lines, section)  # type: ignore[misc]
        _set_key(lines, start, end, indent, "sha256", digest, after="model")
    out = "\n".join(lines) + ("\n" if text.endswith("\n") else "")

    expected = yaml.safe_load(text) or {}
    for section, (path, digest) in staged.items():
        _lookup(expected, section).update(model=path, sha256=digest)
    if yaml.safe_load(out) != expected:
        raise ValueError("rewriting the preset changed more than the staged model keys; edit it by hand")
    return out


def _yaml_scalar(value: str) -> str:
    dumped = yaml.safe_dump(value, default_style=None).strip()
    return dumped[:-4].strip() if dumped.endswith("\n...") else dumped.splitlines()[0]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


Downloader = Callable[[StagedModel, Path], None]


def nemo_download(model: StagedModel, dest: Path) -> None:
    """Download `model.source` with NeMo's `<class>.from_pretrained` and save it as the .nemo file `dest`."""
    import nemo.collections.asr.models as asr_models  # heavy; only here

    cls = getattr(asr_models, model.class_name)
    restored = cls.from_pretrained(model.source, map_location="cpu")
    restored.save_to(str(dest))


def stage(
    preset_path: Path,
    models_dir: Path,
    out_path: Path,
    mount_path: str = "/models",
    pretrained: dict[str, str] | None = None,
    download: Downloader = nemo_download,
    log: Callable[[str], None] = print,
) -> dict[str, tuple[str, str]]:
    """Download every model of the preset's plan into `models_dir` (the volume, mounted read-write here),
    write the rewritten preset to `out_path`, and return {section: (path as the pods see it, sha256)}.
    A file already on the volume is kept (re-staging is idempotent); its sha256 is read from its bytes."""
    text = preset_path.read_text()
    plan = plan_staging(yaml.safe_load(text) or {}, mount_path, pretrained)
    staged: dict[str, tuple[str, str]] = {}
    digests: dict[str, str] = {}
    for m in plan:
        target = models_dir / m.rel
        if m.rel not in digests:
            if target.exists():
                log(f"{m.section}: {target} exists, keeping it")
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.partial")
                log(f"{m.section}: downloading {m.source} ({m.class_name}) -> {target}")
                download(m, tmp)
                os.chmod(tmp, 0o644)  # the Ray pods read it as uid 1000 from a read-only mount
                os.replace(tmp, target)  # atomic: a reader sees nothing or the whole file
            digests[m.rel] = sha256_file(target)
        staged[m.section] = (m.path, digests[m.rel])
        log(f"{m.section}: {m.path} sha256 {digests[m.rel]}")
    out_text = rewrite_preset(text, staged) if staged else text
    out_path.write_text(out_text)
    log(f"wrote {out_path} ({len(staged)} model(s) staged)")
    return staged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("preset", type=Path, help="preset YAML, e.g. conf/nemo-gpu.yaml")
    ap.add_argument("--models-dir", type=Path, required=True, help="where the volume is mounted read-write here")
    ap.add_argument("--out", type=Path, required=True, help="where to write the staged preset (may be the input)")
    ap.add_argument("--mount-path", default="/models", help="where the Ray pods mount the volume (default /models)")
    ap.add_argument(
        "--pretrained",
        action="append",
        default=[],
        metavar="SECTION=NAME",
        help="pretrained name to download for a section (segment_stage.asr, or asr) whose model is "
        "already a /models path",
    )
    args = ap.parse_args(argv)
    pretrained = dict(item.split("=", 1) for item in args.pretrained)
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        print(
            "HF_HUB_OFFLINE is set (the image sets it): run with HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0",
            file=sys.stderr,
        )
        return 2
    stage(args.preset, args.models_dir, args.out, args.mount_path, pretrained)
    return 0


if __name__ == "__main__":
    sys.exit(main())
