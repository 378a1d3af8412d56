"""The old flat config layout (the sections follow the data flow now): where each
old key lives now (`MOVED_KEYS`), `migrate` that moves them, and the old-shaped payload that
`pipeline.fingerprint` hashes, so that outputs written before the move are still recognised."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipeline.config.base import ConfigError

if TYPE_CHECKING:
    from pipeline.config.job import JobConfig

# the logger of `pipeline.config` (named in `migrate`'s warnings and filtered on by users and tests)
log = logging.getLogger("pipeline.config")

#: Where each key of the flat layout (before the config followed the flow) lives now: old
#: dotted key -> new dotted key, or None for a key nothing reads any more. A key under a listed
#: section moves with it (`asr.model` -> `segment_stage.asr.model`); the longest listed prefix of a
#: key decides (`batching.window_s` -> `pooling.window_audio_s`, other `batching.*` keys ->
#: `segment_stage.batching.*`). `migrate` applies it; `pipeline.fingerprint` reads it backwards.
MOVED_KEYS: dict[str, str | None] = {
    "vad": "recording_stage.vad",
    "diarization": "recording_stage.diarization",
    "diarization.window_s": "recording_stage.diarization.embedding_window_s",
    "diarization.hop_s": "recording_stage.diarization.embedding_hop_s",
    "segmentation": "recording_stage.segmentation",
    "batching": "segment_stage.batching",
    "batching.window_s": "pooling.window_audio_s",
    "batching.max_files": "pooling.max_files",
    "batching.pack": "segment_stage.packing.mode",
    "batching.pack_gap_s": "segment_stage.packing.gap_s",
    "lid": "segment_stage.lid",
    "lid.window_s": "segment_stage.lid.probe_s",
    "lid.split_window_s": "segment_stage.lid.part_probe_s",
    "asr": "segment_stage.asr",
    "vocabulary": "segment_stage.vocabulary",
    "punctuation": "segment_stage.punctuation",
    "itn": "segment_stage.itn",
    "quality": "segment_stage.quality",
    "decode.sample_rate": None,  # audio is always decoded to pipeline.records.SAMPLE_RATE
    "output.rows_per_file": None,  # the sink commits one Delta transaction per block, whatever its size
}
_OLD_ROOTS = frozenset(key.split(".", 1)[0] for key in MOVED_KEYS)

#: The sections the fingerprint hashes, by their names in the flat layout (see `pipeline.fingerprint`).
_FINGERPRINT_SECTIONS = ("vad", "diarization", "segmentation", "lid", "asr", "punctuation", "itn")
#: Fields added to those sections since the fingerprint was pinned: hashed only when set away from
#: their default, so a job that does not use them keeps its fingerprint (and its output, its work).
_ADDED_FIELDS = {
    "vad": ("level_dbfs",),
    "diarization": (
        "threshold_scale",
        "threshold_bounds",
        "min_speaker_share",
        "beyond_model",
        "beyond_sha256",
        "vad_threshold",
    ),
    "asr": ("encode_pad_s",),
}
#: Added fields whose null is the behaviour when the fingerprint was pinned: hashed while the section is
#: on and they are set (a job with diarization on and a sensitive pass gets a new fingerprint: its turns
#: change); left out while the section is off (they change nothing then) or they are null.
_HASHED_WHEN_ON = {"diarization": ("vad_threshold",)}
#: Fields whose default changed since the pin, with the value they had then: while the section is off
#: (`enabled: false`) they change nothing, so they hash as they did and a job without diarization keeps
#: its fingerprint; a job with diarization on gets a new one (its speakers change).
_DEFAULT_WHEN_PINNED = {"diarization": {"min_speaker_s": 3.0}}
#: Fields that change how fast a transcript comes, never what it says: not hashed at all.
_NOT_HASHED = {"asr": ("workers",)}


def migrate(data: Any) -> Any:
    """`data` (a job config mapping) with every key of `MOVED_KEYS` moved to its new place, one
    warning line each (logger `pipeline.config`); keys nothing reads are dropped with a warning.
    `ConfigError` when a key is given both at its old and its new place. `data` is not modified."""
    if not isinstance(data, dict) or not _OLD_ROOTS & data.keys():
        return data
    out = _copy_mappings(data)
    moves = []
    for path, value in _leaves(out, ()):
        if path[0] not in _OLD_ROOTS:
            continue
        for n in range(len(path), 0, -1):
            old = ".".join(path[:n])
            if old in MOVED_KEYS:
                moves.append((path, value, old, path[n:]))
                break
    for path, *_ in moves:
        _remove(out, path)
    placed: dict[tuple[str, ...], str] = {}
    said: dict[str, list[str]] = {}  # listed old key -> its keys met, for one warning line each
    for path, value, listed, rest in moves:
        said.setdefault(listed, []).append(".".join(rest))
        new = MOVED_KEYS[listed]
        if new is None:
            continue
        target = (*new.split("."), *rest)
        _place(out, target, value, ".".join(path), placed.get(target))
        placed[target] = ".".join(path)
    for old, keys in said.items():
        new = MOVED_KEYS[old]
        if new is None:
            log.warning("config: %r is no longer read; remove it", old)
        elif keys == [""] or len(keys) == 1:  # the key itself, or one key of a moved section: name it
            tail = f".{keys[0]}" if keys[0] else ""
            log.warning("config: %r is now %r", old + tail, new + tail)
        else:
            log.warning("config: %r is now %r (%s)", old, new, ", ".join(keys))
    return out


def _copy_mappings(data: dict) -> dict:
    return {k: _copy_mappings(v) if isinstance(v, dict) else v for k, v in data.items()}


def _leaves(node: dict, prefix: tuple[str, ...]):
    """(dotted path, value) of every non-mapping value and empty mapping under `node`."""
    for key, value in node.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and value:
            yield from _leaves(value, path)
        else:
            yield path, value


def _remove(data: dict, path: tuple[str, ...]) -> None:
    """Delete `path`, and the mappings it leaves empty."""
    parents = [data]
    for key in path[:-1]:
        parents.append(parents[-1][key])
    del parents[-1][path[-1]]
    for depth in range(len(path) - 1, 0, -1):
        if parents[depth]:
            break
        del parents[depth - 1][path[depth - 1]]


def _place(data: dict, target: tuple[str, ...], value: Any, old: str, moved_from: str | None) -> None:
    new = ".".join(target)
    node = data
    for i, key in enumerate(target[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config: cannot move {old!r} to {new!r}: {'.'.join(target[: i + 1])!r} is not a mapping")
        node = child
    last = target[-1]
    if last not in node:
        node[last] = value
    elif isinstance(value, dict) and not value and isinstance(node[last], dict):
        pass  # an empty old section beside its new one: nothing to move
    else:
        given = f"{moved_from!r} (now {new!r})" if moved_from else repr(new)
        raise ConfigError(f"config: {old!r} and {given} are both given; they are one key now: keep only {new!r}")


def new_key(old: str) -> str:
    """A dotted key of the old flat layout at its place now (`lid.window_s` ->
    `segment_stage.lid.probe_s`); a key that did not move, or that nothing reads, as it is."""
    parts = old.split(".")
    for n in range(len(parts), 0, -1):
        moved = MOVED_KEYS.get(".".join(parts[:n]), "")
        if moved:
            return ".".join([moved, *parts[n:]])
        if moved is None:
            return old
    return old


def _old_name(section: str, field: str) -> str:
    """A field's name in the fingerprint: the one it had before it was renamed (`MOVED_KEYS`)."""
    new_section = MOVED_KEYS[section]
    for old, new in MOVED_KEYS.items():
        if new and old.startswith(section + ".") and new == f"{new_section}.{field}":
            return old.split(".", 1)[1]
    return field


def old_shape_payload(job: JobConfig, sample_rate: int) -> dict[str, Any]:
    """What `pipeline.fingerprint` hashes of the models and their parameters, in the layout it had
    before the config followed the flow: the old section and field names (`MOVED_KEYS` read
    backwards) and the `decode.sample_rate` that is no longer a key (`sample_rate`: the rate audio is
    always decoded to, `pipeline.records.SAMPLE_RATE`)."""
    keep: dict[str, Any] = {}
    for old in _FINGERPRINT_SECTIONS:
        section = job.section(MOVED_KEYS[old])  # type: ignore[arg-type]
        dump = section.model_dump(exclude=set(_NOT_HASHED.get(old, ())))
        for name in _ADDED_FIELDS.get(old, ()):
            if name in _HASHED_WHEN_ON.get(old, ()):
                drop = dump[name] is None or dump.get("enabled") is False
            else:
                drop = dump[name] == type(section).model_fields[name].default
            if drop:
                del dump[name]
        if dump.get("enabled") is False:
            for name, pinned in _DEFAULT_WHEN_PINNED.get(old, {}).items():
                if dump[name] == type(section).model_fields[name].default:
                    dump[name] = pinned
        keep[old] = {_old_name(old, k): v for k, v in dump.items()}
    keep["decode"] = {"sample_rate": sample_rate, "max_duration_s": job.decode.max_duration_s}
    return keep
