"""`scriptorium status`: what an output holds, and what a rerun of a config would do.

Read-only: one column-projected read of the `recordings` Delta table (pipeline/ledger/) and a
listing of the input; never touches audio. Without `--config`, "what a rerun would do" is computed
for the last run's input and pipeline fingerprint (from report.json), i.e. for a rerun of the same
command.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pyarrow.compute as pc

from pipeline.config import InputConfig, OutputConfig, load_config
from pipeline.discover import DiscoveryError, discover_table
from pipeline.filter import recorded_rules
from pipeline.fingerprint import job_fingerprint
from pipeline.ledger import Ledger, OutputError
from pipeline.ledger.integrity import check as check_integrity
from pipeline.storage import with_retries
from pipeline.text import safe  # names and messages come from inputs: escaped, credentials redacted
from pipeline.vocabulary import resolve as resolve_vocabulary


class OutputDamagedError(OutputError):
    """A data file of the output's tables is missing or unreadable (one line per file)."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))


def status_data(output_uri: str, config: str | None = None, overrides: list[str] = ()) -> dict:  # type: ignore[assignment]
    cfg = load_config(config, [*overrides, f"output.uri={output_uri}"]) if config else None
    out_cfg = cfg.output if cfg else OutputConfig(uri=output_uri)
    ledger = Ledger(out_cfg)
    damage = [line for c in check_integrity(ledger) for line in c.lines()]  # footers and the log: no data read
    if any("damaged data file" in line or "log cannot be read" in line for line in damage):
        # the tables cannot be read as they are: say what is wrong, and what repairs it
        raise OutputDamagedError(
            [f"output {safe(output_uri)}: {line}" for line in damage]
            + [
                f"output {safe(output_uri)}: `scriptorium run` with its config moves damaged files aside and redoes their recordings"
            ]
        )
    dt = ledger.table("recordings")
    recs = ledger.read("recordings", ["recording_id", "uri", "status", "error"])
    counts = Counter(recs.column("status").to_pylist())
    failed = recs.filter(pc.equal(recs.column("status"), "error")).select(["uri", "error"]).to_pylist()
    last_commit = None
    if dt is not None and dt.version() > 0:
        last_commit = dt.history(1)[0]["timestamp"] / 1000.0
    data: dict = {
        "output": output_uri,
        "committed": recs.num_rows,
        "files": len(dt.file_uris()) if dt is not None else 0,
        "version": dt.version() if dt is not None else None,
        "ok": counts.get("ok", 0),
        "no_speech": counts.get("no_speech", 0),
        "error": counts.get("error", 0),
        "failed": sorted(failed, key=lambda d: d["uri"]),
        "last_commit": last_commit,
        "last_run": None,
        "rerun": None,
        "integrity": damage,
    }
    report = ledger.path("report.json")
    last = None
    try:
        last = json.loads(with_retries(lambda: ledger.fs.cat_file(report)))
    except FileNotFoundError:
        pass
    data["last_run"] = last
    data["quality_rules"] = recorded_rules(out_cfg)  # what judged `accepted` (scriptorium filter / a run)
    data["judgement"] = _judgement(ledger)
    if cfg is not None:
        in_cfg, fingerprint = cfg.input, job_fingerprint(cfg, resolve_vocabulary(cfg.segment_stage.vocabulary))
    elif last is not None:
        in_cfg, fingerprint = InputConfig(uri=last["input_uri"], storage=out_cfg.storage), last["fingerprint"]
    else:
        return data
    try:
        files = discover_table(in_cfg)
    except DiscoveryError as exc:
        data["rerun"] = {"error": str(exc)}
        return data
    _, plan = ledger.plan(files, fingerprint)
    listed = files.column("recording_id")
    # committed, input no longer listed
    plan["gone"] = (
        recs.num_rows - pc.sum(pc.is_in(recs.column("recording_id"), value_set=listed)).as_py() if recs.num_rows else 0
    )
    plan["input"] = in_cfg.uri
    data["rerun"] = plan
    return data


def status(output_uri: str, config: str | None = None, overrides: list[str] = ()) -> str:  # type: ignore[assignment]
    d = status_data(output_uri, config, overrides)
    problems = [f"output {safe(output_uri)}: {line}" for line in d.get("integrity") or []]
    lines = problems + [
        f"output {safe(output_uri)}: {d['committed']} recordings committed"
        + (f" (Delta table version {d['version']}, {d['files']} data files)" if d["version"] is not None else ""),
        f"  ok {d['ok']}  no speech {d['no_speech']}  failed (error) {d['error']}",
    ]
    for f in d["failed"][:10]:
        lines.append(f"  failed: {safe(f['uri'])}: {safe(f['error'])}")
    if len(d["failed"]) > 10:
        lines.append(f"  ... and {len(d['failed']) - 10} more failed")
    last = d["last_run"]
    if last:
        lines.append(
            f"  last run {safe(last['run_id'])}: {last.get('new', 0)} new, {last.get('changed', 0)} changed, "
            f"{last.get('skipped', 0)} skipped; ok {last['ok']}, no speech {last['no_speech']}, error {last['error']}; "
            f"{last['audio_seconds']:.1f} s audio in {last['wall_seconds']:.1f} s"
        )
    if d["last_commit"]:
        lines.append(f"  last commit {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(d['last_commit']))}")
    j = d.get("judgement")
    if j and j["segments"]:
        lines.append(
            f"  segments: {j['accepted']} accepted ({j['accepted_hours']:.3f} h), {j['rejected']} rejected "
            f"({j['rejected_hours']:.3f} h)"
            + (
                "; rejected by reason: " + ", ".join(f"{k} {n} ({h:.3f} h)" for k, (n, h) in j["by_reason"].items())
                if j["by_reason"]
                else ""
            )
        )
    if j and j["by_reason"]:
        lines.append(most_rejecting(j["by_reason"]))
    q = d.get("quality_rules")
    if q:
        rules = {k: v for k, v in q["rules"].items() if k != "per_language"}
        per = q["rules"].get("per_language") or {}
        lines.append(
            f"  quality rules {q['hash']} (applied by {q['applied_by']} at {q['applied_at']}): "
            + ", ".join(f"{k}={v}" for k, v in rules.items())
            + "".join(f"; {lang}: " + ", ".join(f"{k}={v}" for k, v in o.items()) for lang, o in per.items())
        )
    r = d["rerun"]
    if r and "error" in r:
        lines.append(f"  a rerun cannot list its input: {safe(r['error'])}")
    elif r:
        lines.append(
            f"  a rerun on {safe(r['input'])} would process {r['new']} new, {r['changed']} changed, "
            f"{r['retry_failed']} failed before (retried); skip {r['skipped']} done"
            + (f"; {r['gone']} committed recordings are no longer in the input" if r["gone"] else "")
        )
    return "\n".join(lines)


def _judgement(ledger: Ledger) -> dict:
    """Accepted / rejected segments and hours, rejections by reason (one column-projected read of
    `segments`; rows of a recording being rewritten may be counted from its older commit)."""
    t = ledger.read("segments", ["recording_id", "start", "end", "accepted", "reject_reasons"])
    dur = pc.subtract(t.column("end"), t.column("start")).to_pylist()
    out = {
        "segments": t.num_rows,
        "accepted": 0,
        "rejected": 0,
        "accepted_hours": 0.0,
        "rejected_hours": 0.0,
        "by_reason": {},
    }
    for a, rs, d in zip(t.column("accepted").to_pylist(), t.column("reject_reasons").to_pylist(), dur):
        key = "accepted" if a else "rejected"
        out[key] += 1
        out[key + "_hours"] += d / 3600
        for r in rs or []:
            n, h = out["by_reason"].get(r, (0, 0.0))
            out["by_reason"][r] = (n + 1, h + d / 3600)
    out["by_reason"] = dict(sorted(out["by_reason"].items()))
    return out


def most_rejecting(by_reason: dict[str, tuple[int, float]]) -> str:
    """The line naming the rule that rejects the most speech (hours; a segment counts for each of its
    reasons): the first threshold to look at when too little is kept."""
    reason, (n, hours) = max(by_reason.items(), key=lambda kv: (kv[1][1], kv[1][0]))
    total = sum(h for _, h in by_reason.values()) or 1.0
    return f"  the rule rejecting the most speech: {reason} ({n} segments, {hours:.3f} h, {hours / total:.0%} of rejections)"
