"""Where the data comes from and goes: the input, the output, and how to reach object storage."""

from __future__ import annotations

from pydantic import Field, PrivateAttr

from pipeline.config.base import Model


class StorageOptions(Model):
    """How to reach object storage (turned into fsspec's arguments by `pipeline.storage.fsspec_kwargs`).
    Credentials are NOT here: they come from the AWS chain / env."""

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    anon: bool = False
    connect_timeout_s: float = Field(10.0, gt=0, description="S3/HTTP: give up connecting after this long (then retry)")
    read_timeout_s: float = Field(30.0, gt=0, description="S3/HTTP: give up on a silent connection after this long")
    #: Credentials taken out of URIs (`s3://KEY:SECRET@bucket/...`, an `http://user:pw@host/` manifest entry)
    #: by `pipeline.storage.split_userinfo`, by "protocol://bucket-or-host": in memory only (it travels
    #: to Ray workers with the config), never dumped, printed or written. Keys belong in the AWS chain.
    _userinfo: dict[str, tuple[str, str]] = PrivateAttr(default_factory=dict)


class InputConfig(Model):
    uri: str = Field(..., description="fsspec URI of a folder/prefix, or of a NeMo-style JSONL manifest")
    extensions: list[str] = [".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".mp4", ".webm", ".aac"]
    storage: StorageOptions = StorageOptions()
    limit: int | None = Field(None, ge=1, description="process at most this many files (smoke runs)")
    # Containment (pipeline/discover.py): a manifest's entries must lie inside the manifest's folder
    # (local) or its bucket (same protocol), and a folder's symlinks inside the folder; these widen it.
    allowed_roots: list[str] = Field(
        [], description="more folders/prefixes inputs may point into: local paths or URIs (s3://other/prefix/)"
    )
    allowed_buckets: list[str] = Field(
        [], description="more buckets (or hosts, for http) a manifest's entries may name, with the manifest's protocol"
    )


class OutputConfig(Model):
    uri: str
    storage: StorageOptions = StorageOptions()
    # Group commits (pipeline/ledger/staging.py): write tasks stage files, the driver commits groups.
    # A crash costs at most what was staged since the last group commit; each group is one commit
    # per table, so fewer, larger groups keep the Delta log (and every reader's replay of it) short.
    commit_interval_s: float = Field(30.0, gt=0, description="commit the staged blocks at least this often (seconds)")
    commit_max_recordings: int = Field(
        20000, ge=1, description="... or as soon as this many recordings are staged, whichever comes first"
    )
    writers: int = Field(
        2,
        ge=1,
        description="write tasks at once (each stages a window's two Parquet files; the driver commits). "
        "Few, so the same worker processes serve every window: each new one pays its imports",
    )
    confirm_redo_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="a run that would transcribe again more than this share of the recordings the output "
        "holds (changed settings or inputs) asks first: a question on a terminal, else exit 2 unless --yes "
        "(pipeline/plan.py; 1: never ask)",
    )
