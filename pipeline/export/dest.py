"""Where an export's files go and what they are called: the destination folder on any fsspec file
system (files staged locally, put in place when complete) and file names safe on every file system."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import StorageOptions
from pipeline.errors import with_retries
from pipeline.export.read import ExportError
from pipeline.ledger import Ledger
from pipeline.storage import filesystem, is_local, put_atomic

MARKER = ".scriptorium-export"  # what this export holds; tells --overwrite the folder is ours
#: Longest file name written (bytes); longer names keep a prefix and a hash of the whole name.
MAX_NAME_BYTES = 200


def _input_root(led: Ledger, recs: pa.Table) -> str:
    """Where input paths are relative to: the last run's input folder (a manifest's folder), else the
    longest common folder of the URIs (`recs`: the recordings, Arrow, with a `uri` column)."""
    try:
        last = json.loads(with_retries(lambda: led.fs.cat_file(led.path("report.json"))))
        base = str(last.get("input_uri") or "")
    except (FileNotFoundError, ValueError):
        base = ""
    if base.endswith((".json", ".jsonl")):
        base = base.rsplit("/", 1)[0]
    base = base.rstrip("/")
    uris = recs.column("uri")
    if base and pc.all(pc.starts_with(uris, base + "/")).as_py() is not False:
        return base
    # the common prefix of a set of strings is that of its least and greatest
    folders = pc.if_else(
        pc.match_substring(uris, "/"),
        pc.replace_substring_regex(uris, "/[^/]*$", "/"),
        pc.binary_join_element_wise(uris, "/", ""),
    )
    bounds = pc.min_max(folders)
    common = posixpath.commonprefix([bounds["min"].as_py() or "", bounds["max"].as_py() or ""])
    return common[: common.rfind("/")] if "/" in common else ""


def _safe_component(name: str, suffix: str = "") -> str:
    """`name + suffix` as a path component no file system refuses: no NUL, not '.'/'..', at most
    MAX_NAME_BYTES bytes (a longer name keeps its start, a hash of the whole name, and `suffix`)."""
    name = name.replace("\x00", "_")
    if name in ("", ".", ".."):
        name = name.replace(".", "_") or "_"
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) + len(suffix.encode()) <= MAX_NAME_BYTES:
        return name + suffix
    digest = hashlib.sha1(raw).hexdigest()[:12]
    keep = MAX_NAME_BYTES - 13 - len(suffix.encode())
    return raw[:keep].decode("utf-8", "ignore") + "-" + digest + suffix


def relative_name(uri: str, root: str, suffix: str) -> str:
    """`root/a/x.wav` -> `a/x.wav.<suffix>` (extension kept: a.wav and a.mp3 must not collide)."""
    rel = uri[len(root) + 1 :] if root and uri.startswith(root + "/") else uri.split("://", 1)[-1].lstrip("/")
    parts = [p for p in rel.split("/") if p]
    return "/".join([*(_safe_component(p) for p in parts[:-1]), _safe_component(parts[-1], "." + suffix)])


# -- destination -----------------------------------------------------------------------------------
class _Dest:
    """DEST on any fsspec file system; files are staged locally and put in place when complete."""

    def __init__(self, dest: str, storage: StorageOptions, overwrite: bool):
        self.fs, root = filesystem(dest, storage)
        self.root = root.rstrip("/")
        self.local = is_local(self.fs)
        if self.fs.exists(self.root):
            if not self.fs.isdir(self.root):
                raise ExportError(f"destination {dest!r} is a file, not a folder")
            if self.fs.ls(self.root):
                if not overwrite:
                    raise ExportError(f"destination {dest!r} is not empty; pass --overwrite to replace it")
                names = [e.rstrip("/").rsplit("/", 1)[-1] for e in self.fs.ls(self.root, detail=False)]
                shar = all(re.match(r"^(cuts|recording)\.\d{6}\.", n) for n in names)
                if MARKER in names or shar:  # our own earlier export: replaced as a whole
                    self.fs.rm(self.root, recursive=True)
        self.fs.makedirs(self.root, exist_ok=True)
        self.written: list[str] = []
        self.tmp = tempfile.TemporaryDirectory(prefix="scriptorium-export-")

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def put_bytes(self, rel: str, data: bytes) -> None:
        path = self.path(rel)
        if "/" in rel:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        put_atomic(self.fs, path, data)
        self.written.append(path)

    def staging(self, rel: str) -> Path:
        p = Path(self.tmp.name) / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def put_file(self, rel: str, local: Path) -> None:
        path = self.path(rel)
        if "/" in rel:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        if self.local:
            shutil.move(str(local), path + ".part")
            os.replace(path + ".part", path)
        else:
            with_retries(lambda: self.fs.put_file(str(local), path))
            local.unlink()
        self.written.append(path)

    def finish(self, meta: dict[str, Any]) -> list[str]:
        if meta["format"] != "lhotse-shar":  # CutSet.from_shar(in_dir) reads every file of the folder
            self.put_bytes(MARKER, json.dumps(meta, sort_keys=True, indent=1).encode())
            self.written.pop()
        self.tmp.cleanup()
        return self.written
