"""`scriptorium plan CONFIG [dotted.key=value ...]`: what a run of CONFIG would do, and why, before it
does it; and the check a run makes before it redoes much of an output.

A plan sorts the listed files the way the run will (`Ledger.plan`): new; input changed (size, etag or
mtime differ from the committed row); settings changed (the job's fingerprint differs from the one the
row was made by: the plan names each setting that differs, from what to what, e.g.
`segment_stage.asr.beam_size 1 -> 5`); failed before (retried); done (skipped). Hours are the
committed durations where a file was done before, else estimates from its size (`~`).

To name settings, every run records the settings its fingerprint hashes
(`pipeline.fingerprint.fingerprint_payload`) under `_scriptorium/fingerprints/<fingerprint>.json`;
outputs written before that say only that the fingerprint changed.

A run (`pipeline.runner.run(cfg, confirm=...)`, the CLI's `run` and `pseudo-label`) whose plan redoes
more than `output.confirm_redo_share` of the recordings an output holds asks first: on a terminal a
yes/no question, elsewhere exit 2 with one line (`--yes` goes ahead; `output.confirm_redo_share=1`
never asks). Read-only: the plan itself writes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Callable

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from pipeline.batching import estimated_seconds
from pipeline.config import JobConfig
from pipeline.discover import DiscoveryError, discover_table
from pipeline.errors import UserError, with_retries
from pipeline.filter import rules_for_run
from pipeline.fingerprint import fingerprint_payload, payload_hash, settings_diff
from pipeline.ledger import Ledger
from pipeline.storage import put_atomic
from pipeline.text import safe
from pipeline.vocabulary import resolve as resolve_vocabulary

log = logging.getLogger(__name__)

SETTINGS_DIR = "_scriptorium/fingerprints"


class RedoNotConfirmedError(UserError, RuntimeError):
    """A run would redo more of a non-empty output than `output.confirm_redo_share`, unconfirmed (exit 2)."""


class Group(BaseModel):
    """Files of one kind in a plan, and their audio seconds (`estimated`: some are guessed from sizes)."""

    files: int = 0
    seconds: float = 0.0
    estimated: bool = False

    def text(self) -> str:
        return f"{_files(self.files):>11}  {'~' if self.estimated else ' '}{self.seconds / 3600:.3f} h"


class SettingsChange(BaseModel):
    """Committed recordings made by another fingerprint, and what differs (None: never recorded)."""

    fingerprint: str
    files: int
    seconds: float
    changes: list[tuple[str, Any, Any]] | None

    def text(self, now: str) -> str:
        if self.changes is None:
            return f"fingerprint {self.fingerprint} -> {now} (the settings of {self.fingerprint} were not recorded)"
        if not self.changes:
            return f"fingerprint {self.fingerprint} -> {now}"
        return "; ".join(f"{k} {_show(a)} -> {_show(b)}" for k, a, b in self.changes)


class RunPlan(BaseModel):
    """What a run would do (`make_plan`, or `explain` inside a run)."""

    config: str | None = None
    input_uri: str
    output_uri: str
    fingerprint: str
    listed: int
    committed: int  # recordings the output holds (any status, listed or not)
    new: Group = Group()
    input_changed: Group = Group()
    settings_changed: Group = Group()
    retry_failed: Group = Group()
    skipped: Group = Group()
    settings: list[SettingsChange] = []
    confirm_redo_share: float = 0.5
    notes: list[str] = []  # where the output is (when it came from the file's ./out), whose rules judge

    @property
    def redo(self) -> int:
        """Committed recordings the run would transcribe again (not counting ones that failed)."""
        return self.input_changed.files + self.settings_changed.files

    @property
    def redo_share(self) -> float:
        return self.redo / self.committed if self.committed else 0.0

    @property
    def needs_confirmation(self) -> bool:
        return self.committed > 0 and self.redo_share > self.confirm_redo_share

    def reasons(self) -> list[str]:
        """Why the committed recordings are redone: one line per kind (empty when none is)."""
        out = []
        for s in self.settings:
            out.append(f"settings changed ({_files(s.files)}): {s.text(self.fingerprint)}")
        if self.input_changed.files:
            out.append(f"input changed ({_files(self.input_changed.files)}): size, etag or modification time differ")
        return out

    def redo_line(self) -> str:
        return (
            f"redo {self.redo} of the {self.committed} recordings the output holds ({self.redo_share:.0%}, "
            f"{(self.input_changed.seconds + self.settings_changed.seconds) / 3600:.3f} h)"
        )

    def text(self) -> str:
        total = Group(
            files=self.listed,
            seconds=sum(g.seconds for g in self._groups().values()),
            estimated=any(g.estimated for g in self._groups().values()),
        )
        head = f"plan{' for ' + safe(self.config) if self.config else ''}: input {safe(self.input_uri)}"
        size = f"{total.files} files, {'~' if total.estimated else ''}{total.seconds / 3600:.3f} h"
        lines = [
            f"{head} ({size}) -> output {safe(self.output_uri)} ({self.committed} recordings held)",
        ]
        for name, g in self._groups().items():
            why = ""
            if name == "settings changed" and self.settings:
                why = "  " + " | ".join(s.text(self.fingerprint) for s in self.settings)
            elif name == "input changed" and g.files:
                why = "  size, etag or modification time differ from the committed row"
            elif name == "new" and g.estimated:
                why = "  (~: estimated from file sizes)"
            lines.append(f"  {name:<17}{g.text()}{why}")
        work = self.new.files + self.redo + self.retry_failed.files
        lines.append(f"  a run would transcribe {_files(work)}" + (f"; {self.redo_line()}" if self.redo else ""))
        if self.needs_confirmation:
            lines.append(
                f"  that is more than output.confirm_redo_share ({self.confirm_redo_share:.0%}): `run` asks first "
                "(--yes goes ahead without asking)"
            )
        lines += [f"  note: {safe(n)}" for n in self.notes]
        return "\n".join(lines)

    def _groups(self) -> dict[str, Group]:
        return {
            "new": self.new,
            "input changed": self.input_changed,
            "settings changed": self.settings_changed,
            "failed before": self.retry_failed,
            "done (skipped)": self.skipped,
        }


def _files(n: int) -> str:
    return f"{n} file" + ("" if n == 1 else "s")


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# -- the recorded settings of each fingerprint --------------------------------------------------------
def record_settings(ledger: Ledger, payload: dict[str, Any]) -> None:
    """Keep the settings behind a fingerprint with the output (once per fingerprint)."""
    path = ledger.path(SETTINGS_DIR, f"{payload_hash(payload)}.json")
    if with_retries(lambda: ledger.fs.exists(path)):
        return
    ledger.fs.makedirs(ledger.path(SETTINGS_DIR), exist_ok=True)
    body = json.dumps(payload, indent=1, sort_keys=True).encode()
    with_retries(lambda: put_atomic(ledger.fs, path, body))


def recorded_settings(ledger: Ledger, fingerprint: str) -> dict[str, Any] | None:
    try:
        return json.loads(with_retries(lambda: ledger.fs.cat_file(ledger.path(SETTINGS_DIR, f"{fingerprint}.json"))))
    except FileNotFoundError:
        return None


# -- the plan -----------------------------------------------------------------------------------------
def explain(
    cfg: JobConfig, ledger: Ledger, files: pa.Table, payload: dict[str, Any], todo: pa.Table | None = None
) -> RunPlan:
    """The plan of a run of `cfg` over the listing `files` (`discover_table`), against `ledger`'s
    committed rows: one column-projected read of `recordings`, joined to the listing in Arrow.
    `todo`: what `Ledger.plan` already gave for this fingerprint (else it is asked)."""
    fingerprint = payload_hash(payload)
    if todo is None:
        todo, _ = ledger.plan(files, fingerprint)
    done = ledger.read("recordings", ["recording_id", "fingerprint", "status", "duration"])
    listed = pa.table(
        {
            "recording_id": files.column("recording_id"),
            "estimate": pa.array(estimated_seconds(files), pa.float64()),
        }
    )
    j = listed.join(
        done.rename_columns(["recording_id", "done_fingerprint", "done_status", "done_duration"]),
        "recording_id",
        join_type="left outer",
    )
    in_todo = pc.is_in(j.column("recording_id"), value_set=todo.column("recording_id"))
    committed = pc.is_valid(j.column("done_fingerprint"))
    retry = pc.and_(in_todo, pc.fill_null(pc.equal(j.column("done_status"), "error"), False))
    other = pc.and_(pc.and_(in_todo, committed), pc.invert(retry))
    settings = pc.and_(other, pc.fill_null(pc.not_equal(j.column("done_fingerprint"), fingerprint), False))
    seconds = pc.coalesce(j.column("done_duration"), j.column("estimate"))

    def group(mask: Any) -> Group:
        mask = pc.fill_null(mask, False)
        n = pc.sum(mask).as_py() or 0
        guessed = pc.sum(pc.and_(mask, pc.is_null(j.column("done_duration")))).as_py() or 0
        return Group(files=n, seconds=float(pc.sum(pc.filter(seconds, mask)).as_py() or 0.0), estimated=guessed > 0)

    changes = []
    by_fp = j.filter(settings).append_column("seconds", pc.filter(seconds, settings))
    for row in (
        by_fp.group_by("done_fingerprint").aggregate([("recording_id", "count"), ("seconds", "sum")]).to_pylist()
    ):
        old = row["done_fingerprint"]
        before = recorded_settings(ledger, old)
        changes.append(
            SettingsChange(
                fingerprint=old,
                files=row["recording_id_count"],
                seconds=row["seconds_sum"] or 0.0,
                changes=settings_diff(before, payload) if before is not None else None,
            )
        )
    return RunPlan(
        input_uri=cfg.input.uri,
        output_uri=cfg.output.uri,
        fingerprint=fingerprint,
        listed=files.num_rows,
        committed=done.num_rows,
        new=group(pc.and_(in_todo, pc.invert(committed))),
        input_changed=group(pc.and_(other, pc.invert(settings))),
        settings_changed=group(settings),
        retry_failed=group(retry),
        skipped=group(pc.invert(in_todo)),
        settings=sorted(changes, key=lambda c: -c.files),
        confirm_redo_share=cfg.output.confirm_redo_share,
        notes=[n for n in [output_note(cfg)] if n],
    )


def make_plan(cfg: JobConfig, config: str | None = None) -> RunPlan:
    """`scriptorium plan`: list the input, read the output; no model, no Ray, nothing written."""
    files = discover_table(cfg.input)
    if not files.num_rows:
        raise DiscoveryError(
            f"input {cfg.input.uri}: no audio files found (extensions {', '.join(cfg.input.extensions)})"
        )
    payload = fingerprint_payload(cfg, resolve_vocabulary(cfg.segment_stage.vocabulary))
    plan = explain(cfg, Ledger(cfg.output), files, payload)
    plan.config = config
    plan.notes += rules_for_run(cfg)[1]
    return plan


def output_note(cfg: JobConfig) -> str | None:
    """One line when the output is a relative local folder the config file named (conf/local.yaml's
    ./out) rather than one given on the command line: a forgotten `output.uri=` would otherwise
    write a second full output where the user did not look."""
    uri, origin = cfg.output.uri, cfg.origin("output.uri")
    if origin in ("command line", "python") or fsspec.utils.get_protocol(uri) not in ("file", "local"):
        return None
    if os.path.isabs(uri.removeprefix("file://")):
        return None
    return (
        f"output.uri is {uri!r} from {origin} (not given on the command line): the output is "
        f"{os.path.abspath(uri.removeprefix('file://'))}; pass output.uri=... to write elsewhere"
    )


# -- the check a run makes ---------------------------------------------------------------------------
Confirm = Callable[[RunPlan], bool]


def before_run(
    cfg: JobConfig, ledger: Ledger, files: pa.Table, confirm: Confirm | None = None, todo: pa.Table | None = None
) -> tuple[JobConfig, list[str]]:
    """What a run does between its plan and its work (the output's lock held): say why it redoes what
    it redoes; ask (`confirm`) before redoing more than `output.confirm_redo_share` of the output
    (`RedoNotConfirmedError` when not confirmed; None: never ask, the Python API's default); record
    the settings of this fingerprint; pick the quality rules (`pipeline.filter.rules_for_run`).
    Returns the config to run (with those rules) and the lines for the run's summary and report."""
    payload = fingerprint_payload(cfg, resolve_vocabulary(cfg.segment_stage.vocabulary))
    plan = explain(cfg, ledger, files, payload, todo)
    redo = [f"redo: {line}" for line in plan.reasons()]  # in the summary and report too: why it redid work
    if confirm is not None and plan.needs_confirmation and not confirm(plan):
        why = "; ".join(plan.reasons())
        raise RedoNotConfirmedError(
            f"this run would {plan.redo_line()}, more than output.confirm_redo_share "
            f"({plan.confirm_redo_share:.0%}): {why}; pass --yes to go ahead, or set output.confirm_redo_share=1 (see `scriptorium plan`)"
        )
    record_settings(ledger, payload)
    rules, said = rules_for_run(cfg)
    for n in redo:
        log.info("%s", n)
    for n in [*plan.notes, *said]:
        log.warning("%s", n)
    notes = [*redo, *plan.notes, *said]
    if rules is not cfg.segment_stage.quality:
        cfg = cfg.model_copy(update={"segment_stage": cfg.segment_stage.model_copy(update={"quality": rules})})
    return cfg, notes


def ask_on_terminal(plan: RunPlan) -> bool:
    """The CLI's `confirm`: on a terminal, show the plan and ask; elsewhere (a scheduler, a pipe) no."""
    try:
        interactive = sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, OSError, ValueError):  # stdin closed or replaced
        interactive = False
    if not interactive:
        return False
    print(plan.text(), file=sys.stderr)
    try:
        return input(f"{plan.redo_line()}: go ahead? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False
