"""`scriptorium status`: what an output holds, and what a rerun of a config would do."""

from __future__ import annotations

import json
import time
from collections import Counter

from pipeline.config import OutputConfig, load_config
from pipeline.ledger import Ledger
from pipeline.storage import with_retries


def status(output_uri: str, config: str | None = None, overrides: list[str] = ()) -> str:  # type: ignore[assignment]
    cfg = load_config(config, [*overrides, f"output.uri={output_uri}"]) if config else None
    out_cfg = cfg.output if cfg else OutputConfig(uri=output_uri)
    ledger = Ledger(out_cfg)
    commits = ledger.commits()
    entries = ledger.entries(commits)
    counts = Counter(e.status for e in entries.values())
    lines = [
        f"output {output_uri}: {len(entries)} recordings committed in {len(commits)} parts",
        f"  ok {counts.get('ok', 0)}  no speech {counts.get('no_speech', 0)}  error {counts.get('error', 0)}",
    ]
    report = ledger.path("report.json")
    if with_retries(lambda: ledger.fs.exists(report)):
        last = json.loads(with_retries(lambda: ledger.fs.cat_file(report)))
        lines.append(
            f"  last run {last['run_id']}: ok {last['ok']}, no speech {last['no_speech']}, error {last['error']}, "
            f"{last['audio_seconds']:.1f} s audio in {last['wall_seconds']:.1f} s"
        )
    if commits:
        lines.append(f"  last commit {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(commits[-1]['committed_at']))}")
    if cfg is not None:
        from pipeline.discover import discover

        _, plan = ledger.plan(discover(cfg.input), cfg.fingerprint())
        lines.append(
            f"  a rerun would process {plan['new']} new, {plan['changed']} changed, "
            f"{plan['retry_failed']} failed; skip {plan['skipped']}"
        )
    return "\n".join(lines)
