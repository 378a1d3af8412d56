"""Reading a job config: the YAML file, then `dotted.key=value` overrides (old keys move, see
`migrate`), then validation; a wrong key or value is a `ConfigError` naming it and what is valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.config.base import ConfigError
from pipeline.config.job import JobConfig
from pipeline.config.migration import _leaves, migrate
from pipeline.text import safe


def _parse_override(dotted: str) -> tuple[list[str], Any]:
    if "=" not in dotted:
        raise ConfigError(f"override {dotted!r} is not of the form dotted.key=value")
    key, raw = dotted.split("=", 1)
    return key.strip().split("."), (_parse_yaml(raw, f"override {dotted!r}") if raw != "" else None)


def _parse_yaml(text: str, what: str) -> Any:
    """`yaml.safe_load`, a syntax error as a `ConfigError` naming `what`, the line and column, and
    what the parser expected (PyYAML's own message is a caret under a line it does not name)."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        cause = exc.problem or exc.context or type(exc).__name__
        if exc.problem and exc.context:  # "expected ..., but found ..." (while parsing ... at line N)
            at = f" at line {exc.context_mark.line + 1}" if exc.context_mark is not None else ""
            cause = f"{exc.problem} ({exc.context}{at})"
        raise ConfigError(f"{what}{where}: invalid YAML: {safe(cause)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what}: invalid YAML: {safe(type(exc).__name__)}") from None


def _set(data: dict[str, Any], parts: list[str] | tuple[str, ...], value: Any) -> None:
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(parts)!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def apply_override(data: dict[str, Any], dotted: str) -> None:
    """Apply one `a.b.c=value` override; the value is parsed as YAML (so 3, true, [x, y] work)."""
    _set(data, *_parse_override(dotted))


def apply_job_override(data: dict[str, Any], dotted: str, given: dict[str, str] | None = None) -> list[str]:
    """`apply_override` for a job config: a key of the old layout is set at its new place (one
    warning line, see `migrate`). `given` (new dotted key -> the key an override named, kept across
    the overrides of one command) turns an old and a new spelling of one key into a `ConfigError`.
    Returns the dotted keys it set (at their new places)."""
    parts, value = _parse_override(dotted)
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    moved = migrate(nested)
    if moved == nested:  # not a key of the old layout: set as written (a mapping replaces the section)
        targets = [(tuple(parts), value)]
    else:  # set each key it holds at its new place
        targets = list(_leaves(moved, ()))
    for target, leaf in targets:
        new = ".".join(target)
        if given is not None:
            if given.setdefault(new, ".".join(parts)) != ".".join(parts):
                raise ConfigError(
                    f"config: overrides {given[new]!r} and {'.'.join(parts)!r} are both given; they "
                    f"are one key now: keep only {new!r}"
                )
        _set(data, target, leaf)
    return [".".join(t) for t, _ in targets]


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        parent = _section_model(err["loc"][:-1])
        valid = ", ".join(sorted(parent.model_fields)) if parent else "?"
        return f"unknown key {loc!r}; valid keys here: {valid}"
    if err["type"] == "missing":
        return f"missing required key {loc!r}"
    return f"{loc}: {err['msg']} (got {safe(repr(err.get('input')))})"  # redacted: endpoints may hold user:password@


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = JobConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def read_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file holding a mapping at the top (an empty file is an empty mapping); `ConfigError`
    naming `what` and the path otherwise."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} {str(p)!r} does not exist")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:  # a folder, unreadable, not text
        raise ConfigError(f"{what} {str(p)!r} cannot be read ({type(exc).__name__})") from None
    loaded = _parse_yaml(text, f"{what} {str(p)!r}") or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {str(p)!r} must hold a mapping at the top")
    return loaded


def load_config(path: str | Path | None, overrides: list[str] = ()) -> JobConfig:  # type: ignore[assignment]
    # Keys of the old flat layout (pipeline/config/migration.py) move to their places now, a warning line each: the file's
    # (one key at both places in the file: ConfigError), then each override's, so that an old
    # override still overrides the new key of the file (and an old and a new override of one key
    # are a ConfigError).
    data: dict[str, Any] = migrate(read_mapping(path) if path is not None else {})
    # where each value came from (`JobConfig.origin`): a setting the user chose outranks one recorded
    # with the output, and a run says when its output.uri is the file's ./out rather than one given
    origins = {".".join(p): str(path) for p, _ in _leaves(data, ())}
    given: dict[str, str] = {}
    for item in overrides:
        for key in apply_job_override(data, item, given):
            origins = {k: v for k, v in origins.items() if not k.startswith(key + ".")}
            origins[key] = "command line"
    try:
        cfg = JobConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None
    cfg._origins = origins
    return cfg
