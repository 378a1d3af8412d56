"""`scriptorium filter OUTPUT [RULES.yaml] [quality.key=value ...]`: re-judge every segment, no model.

Reads the committed `segments` table chunk by chunk (a chunk = up to CHUNK_RECORDINGS recordings, so
memory stays bounded), recomputes `accepted` and `reject_reasons` with `pipeline.stages.quality.judge`
(the very function the segment stage calls), and writes back only the chunks whose verdicts changed, one
Delta transaction each (`write_deltalake(mode="overwrite", predicate="recording_id IN (...)")`, the
ledger's own commit shape). Every other column is written back as read, so the result is deterministic
and running the same rules twice changes nothing. The rules are recorded in `_scriptorium/rules.json`
(shown by `scriptorium status`). The output's run lock is held meanwhile, so a run and a filter never
interleave.

One output, one rule set, chosen by the user: the recorded rules stand for later runs (their new
recordings too) until a run's config sets a `segment_stage.quality` key itself (`rules_for_run`); a run
that then re-judges the output says so in its summary and report (`apply_rules_after_run`). A global
rule that a per-language rule replaces, where the user gave only the global one, is warned about
(`shadowed_rules`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from pipeline.config import ConfigError, JobConfig, OutputConfig, QualityConfig, apply_override, read_mapping
from pipeline.errors import UserError, with_retries
from pipeline.fingerprint import settings_diff
from pipeline.ledger import Ledger
from pipeline.ledger.tables import in_predicate
from pipeline.records import AUDIO_SIGNAL_FIELDS, WORD_SIGNAL_FIELDS
from pipeline.stages.quality import TEXT_SIGNALS, judge, rules_payload, text_signals
from pipeline.storage import put_atomic

log = logging.getLogger(__name__)

RULES_PATH = "_scriptorium/rules.json"
CHUNK_RECORDINGS = 2000


class OutputMissingError(UserError, RuntimeError):
    """The output named on the command line holds no committed Scriptorium tables (exit 2)."""


#: Where a job config holds its rules (a job config works as a rules file).
JOB_RULES = "segment_stage.quality."


def load_rules(path: str | None, overrides: list[str] = ()) -> QualityConfig:  # type: ignore[assignment]
    """Rules from a YAML file (a `quality:` section, its keys at top level, or a job config's
    `segment_stage.quality`) + `quality.k=v` (or `segment_stage.quality.k=v`) overrides."""
    data: dict[str, Any] = {}
    if path:
        loaded = read_mapping(path, "rules file")
        job = loaded.get("segment_stage")
        if isinstance(job, dict) and "quality" in job:
            loaded = job
        data = {"quality": loaded.get("quality", loaded)}
    for item in overrides:
        if item.startswith(JOB_RULES):
            item = item[len("segment_stage.") :]
        if not item.startswith("quality."):
            raise ConfigError(f"filter takes only quality.* (or {JOB_RULES}*) overrides, got {item!r}")
        apply_override(data, item)
    try:
        return QualityConfig.model_validate(data.get("quality") or {})
    except ValidationError as exc:
        raise ConfigError(
            "invalid rules: " + "; ".join(f"quality.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from None


def recorded_rules(output: OutputConfig) -> dict[str, Any] | None:
    """What `_scriptorium/rules.json` says (None for an output judged before rules were recorded)."""
    led = Ledger(output)
    try:
        return json.loads(with_retries(lambda: led.fs.cat_file(led.path(RULES_PATH))))
    except FileNotFoundError:
        return None


def record_rules(output: OutputConfig, cfg: QualityConfig, applied_by: str, **extra: Any) -> dict[str, Any]:
    led = Ledger(output)
    payload = {
        **rules_payload(cfg),
        "applied_by": applied_by,
        "applied_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
    led.fs.makedirs(led.path("_scriptorium"), exist_ok=True)
    put_atomic(led.fs, led.path(RULES_PATH), json.dumps(payload, indent=1, sort_keys=True).encode())
    return payload


def rejudge_table(t: pa.Table, cfg: QualityConfig) -> pa.Table:
    """`t` with `accepted` and `reject_reasons` recomputed (and text signals filled in where an older
    output lacks them); every other column as it was."""
    missing = [c for c in TEXT_SIGNALS if c not in t.column_names]
    cols = [
        "text",
        "language",
        "confidence",
        "chars_per_second",
        "compression_ratio",
        "no_speech_prob",
        "language_prob",
        *[c for c in (*TEXT_SIGNALS, "language_agreement") if c in t.column_names],
        *[c for c in AUDIO_SIGNAL_FIELDS + WORD_SIGNAL_FIELDS if c in t.column_names],  # pipeline/audio_quality.py
    ]
    rows = t.select(cols).to_pylist()
    if missing:
        sig = [text_signals(r["text"], r["language"]) for r in rows]
        for r, s in zip(rows, sig):
            r.update(s)
    verdicts = [judge(r, cfg) for r in rows]
    accepted = pa.array([v[0] for v in verdicts], pa.bool_())
    reasons = pa.array([v[1] for v in verdicts], pa.list_(pa.string()))
    t = t.set_column(t.column_names.index("accepted"), "accepted", accepted)
    t = t.set_column(t.column_names.index("reject_reasons"), "reject_reasons", reasons)
    return t


def _committed_ids(led: Ledger) -> list[str]:
    recs = led.read("recordings", ["recording_id"])
    return sorted(set(recs.column("recording_id").to_pylist()))


def refilter(output: OutputConfig, cfg: QualityConfig, applied_by: str = "filter", lock: bool = True) -> dict[str, Any]:
    """Re-judge every segment of `output` under `cfg`; returns counts before/after and the rules."""
    from deltalake import write_deltalake  # heavy: delta-rs, ~30 MB native, only where a table is opened

    led = Ledger(output)
    dt = led.table("segments")
    if dt is None or led.table("recordings") is None:
        raise OutputMissingError(f"no Scriptorium output at {output.uri!r} (no committed segments/recordings tables)")
    run_lock = led.lock(f"filter-{time.time():.0f}") if lock else None
    try:
        ids = _committed_ids(led)
        before = {"accepted": 0, "rejected": 0}
        after = {"accepted": 0, "rejected": 0, "accepted_seconds": 0.0, "rejected_seconds": 0.0}
        by_reason: dict[str, int] = {}
        changed_rows = commits = 0
        for k in range(0, len(ids), CHUNK_RECORDINGS):
            chunk = ids[k : k + CHUNK_RECORDINGS]
            dt = led.table("segments")
            old = dt.to_pyarrow_dataset().to_table(filter=pc.field("recording_id").isin(chunk))
            if old.num_rows == 0:
                continue
            new = rejudge_table(old, cfg)
            n_acc_old = pc.sum(old.column("accepted")).as_py() or 0
            before["accepted"] += n_acc_old
            before["rejected"] += old.num_rows - n_acc_old
            dur = pc.subtract(new.column("end"), new.column("start")).to_pylist()
            for a, rs, d in zip(new.column("accepted").to_pylist(), new.column("reject_reasons").to_pylist(), dur):
                after["accepted" if a else "rejected"] += 1
                after["accepted_seconds" if a else "rejected_seconds"] += d
                for r in rs or []:
                    by_reason[r] = by_reason.get(r, 0) + 1
            diff = pc.or_(
                pc.not_equal(pc.fill_null(old.column("accepted"), False), new.column("accepted")),
                pc.not_equal(
                    pc.binary_join(
                        pc.fill_null(old.column("reject_reasons"), pa.scalar([], pa.list_(pa.string()))), ","
                    ),
                    pc.binary_join(new.column("reject_reasons"), ","),
                ),
            )
            n_changed = pc.sum(diff).as_py() or 0
            if n_changed == 0:
                continue  # idempotent: same rules, no commit
            changed_rows += n_changed
            write_deltalake(
                dt,
                new,
                mode="overwrite",
                predicate=in_predicate("recording_id", chunk),
                schema_mode="merge" if new.schema != dt.schema().to_arrow() else None,
            )
            commits += 1
        after["accepted_seconds"] = round(after["accepted_seconds"], 3)
        after["rejected_seconds"] = round(after["rejected_seconds"], 3)
        rules = record_rules(output, cfg, applied_by, segments_version=led.table("segments").version())
    finally:
        if run_lock is not None:
            run_lock.release()
    return {
        "before": before,
        "after": after,
        "by_reason": dict(sorted(by_reason.items())),
        "changed_segments": changed_rows,
        "commits": commits,
        "rules_hash": rules["hash"],
    }


def summary(res: dict[str, Any], cfg: QualityConfig | None = None) -> str:
    """What `scriptorium filter` prints; with `cfg` (the rules it applied), a warning line for each
    rule it was given that a language's own rule replaces (`shadowed_rules`)."""
    a, b = res["after"], res["before"]
    reasons = ", ".join(f"{k} {v}" for k, v in res["by_reason"].items()) or "none"
    lines = [
        f"filter: {a['accepted']} accepted ({a['accepted_seconds'] / 3600:.3f} h), {a['rejected']} rejected "
        f"({a['rejected_seconds'] / 3600:.3f} h); before {b['accepted']} accepted, {b['rejected']} rejected; "
        f"{res['changed_segments']} segments changed in {res['commits']} commits; rules {res['rules_hash']}",
        f"  rejections by reason: {reasons}",
    ]
    if cfg is not None:
        lines.append(
            "  these rules are recorded with the output: later runs judge by them (new recordings too) until a "
            "run's config sets a segment_stage.quality key"
        )
        lines += [f"  warning: {w}" for w in shadowed_rules(cfg, "quality.")]
    return "\n".join(lines)


def shadowed_rules(cfg: QualityConfig, prefix: str = "segment_stage.quality.") -> list[str]:
    """One line per rule the user gave globally that a per-language rule replaces for some language:
    `quality.min_confidence=0.9` is not the bar for German while `per_language.de` says 0.8 (from a
    rules file, a job config, or a release's defaults), and nothing else would say so."""
    out = []
    for key in sorted(cfg.model_fields_set - {"per_language"}):
        langs = {
            lang: over[key]
            for lang, over in sorted(cfg.per_language.items())
            if key in (over or {}) and over[key] != getattr(cfg, key)
        }
        if langs:
            each = ", ".join(f"{lang} {v}" for lang, v in langs.items())
            out.append(
                f"{prefix}{key}={getattr(cfg, key)} does not apply to {', '.join(langs)}: their per-language "
                f"rules say {each} ({prefix}per_language); set {prefix}per_language.<lang>.{key} too, or drop "
                "the language's rule to judge it by the global one"
            )
    return out


def rules_for_run(job: JobConfig) -> tuple[QualityConfig, list[str]]:
    """The rules a run judges with, and what to tell the user about them. One output, one rule set:
    the rules recorded with the output (by `filter` or an earlier run) stand unless this run's
    config sets a `segment_stage.quality` key itself (on the command line or in its YAML); the
    config's defaults never replace them. Then the end of the run (`apply_rules_after_run`)
    re-judges only when the config chose other rules."""
    own = job.segment_stage.quality
    given = job.given("segment_stage.quality")
    if given:
        return own, shadowed_rules(own)
    recorded = recorded_rules(job.output)
    if recorded is None:
        return own, []
    try:
        kept = QualityConfig.model_validate(recorded["rules"])
    except ValidationError as exc:
        return own, [
            f"quality rules: the output's recorded rules are not valid any more ({exc.errors()[0]['msg']}): "
            "this run judges by its config's"
        ]
    if rules_payload(kept)["hash"] == rules_payload(own)["hash"]:
        return own, []
    changes = "; ".join(
        f"{k} {v} (config: {c})"
        for k, c, v in settings_diff({"quality": own.model_dump()}, {"quality": kept.model_dump()})
    )
    return kept, [
        f"quality rules: kept the output's rules {recorded['hash']} (set by {recorded.get('applied_by', '?')} at "
        f"{recorded.get('applied_at', '?')}: {changes}); this config sets no segment_stage.quality key, and its "
        "defaults do not replace them (set a key to judge by the config)"
    ]


def _same_rules(recorded: dict[str, Any], cfg: QualityConfig) -> bool:
    """Do `cfg`'s rules judge as the recorded ones did? Equal values for every recorded key, and no rule
    the record lacks (a release added it since) switched on: then re-judging would change nothing."""
    now = cfg.model_dump()
    return all(now.get(k) == v for k, v in recorded.items()) and all(
        now[k] is None for k in now.keys() - recorded.keys()
    )


def apply_rules_after_run(
    output: OutputConfig, cfg: QualityConfig, skipped: int, given: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """End of a run (the run holds the lock): the quality rules are not in the fingerprint, so rows kept
    from earlier runs may have been judged by other rules. Re-judge them when the recorded rules differ
    from this run's (or were never recorded while earlier rows exist); else just record the rules.
    The result (None: nothing re-judged) carries `note`, the line the run's summary and report show;
    `given`: the run's own quality keys and where each came from (`JobConfig.given`), named there."""
    led = Ledger(output)
    if led.table("segments") is None:
        return None
    before = recorded_rules(output)
    if (before is None and skipped) or (before is not None and not _same_rules(before["rules"], cfg)):
        log.warning("quality rules differ from the ones the output was judged by: re-judging every segment")
        res = refilter(output, cfg, applied_by="run", lock=False)
        why = ", ".join(f"{k} ({v})" for k, v in sorted((given or {}).items())) or "this run's config"
        if before is None:
            was = "rules never recorded"
        else:
            old = before["rules"]
            diff = settings_diff({"quality": old}, {"quality": cfg.model_dump()})
            was = f"rules {before['hash']} by {before.get('applied_by', '?')} -> {res['rules_hash']}: " + (
                "; ".join(f"{k} {a} -> {b}" for k, a, b in diff) or "same values"
            )
        b, a = res["before"], res["after"]
        res["note"] = (
            f"quality rules: re-judged every segment of the output by {why} ({was}); {res['changed_segments']} "
            f"segments changed, accepted {b['accepted']} -> {a['accepted']}"
        )
        return res
    record_rules(output, cfg, "run", segments_version=led.table("segments").version())
    return None
