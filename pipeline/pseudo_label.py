"""`scriptorium pseudo-label CONFIG [dotted.key=value ...] [--to DEST] [--yes]`: a run, then the
accepted segments of the whole output as training data, NeMo manifest (DEST/nemo/manifest.jsonl) and
Lhotse cuts (DEST/lhotse/cuts.jsonl.gz); DEST defaults to OUTPUT/export.

Made to be rerun: a rerun transcribes only what is new or changed (`pipeline.runner.run`) and replaces
the labels it exported before as a whole, so they always match the output (and its quality rules,
`scriptorium filter`). When some files fail, the labels of the ones that succeeded are still written,
the failed files are named, and the exit code says so (3), so a scheduler still sees it.

Exit codes: 0 labels written, nothing failed; 3 labels written, some files failed; 1 no labels (no
accepted segment in the output, or the run crashed); 2 a wrong config or input, or an unconfirmed
large redo (`pipeline.plan`), before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow.compute as pc

from pipeline.config import JobConfig
from pipeline.export import ExportError, export
from pipeline.ledger import Ledger
from pipeline.plan import Confirm
from pipeline.report import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, RunReport
from pipeline.text import safe

#: Pseudo-label formats, each into DEST/<format>.
FORMATS = ("nemo", "lhotse")


@dataclass
class Labels:
    """What `pseudo_label` did: the run's report, the files written, what to tell the user, the exit code."""

    report: RunReport
    written: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    exit_code: int = EXIT_OK


def default_dest(cfg: JobConfig) -> str:
    return cfg.output.uri.rstrip("/") + "/export"


def pseudo_label(cfg: JobConfig, dest: str | None = None, confirm: Confirm | None = None) -> Labels:
    """Run `cfg`, then export the accepted segments of its output (replacing an earlier export)."""
    from pipeline.runner import run  # heavy: the runner imports Ray; only a run needs it

    report = run(cfg, confirm=confirm)
    res = Labels(report=report)
    dest = (dest or default_dest(cfg)).rstrip("/")
    try:
        for fmt in FORMATS:
            res.written += export(cfg.output, fmt, f"{dest}/{fmt}", accepted_only=True, overwrite=True)
    except ExportError as exc:  # nothing accepted: the earlier labels are gone too (they would be stale)
        res.lines.append(f"pseudo-label: no labels written: {exc}")
        res.exit_code = EXIT_FAILED
        return res
    recs = Ledger(cfg.output).read("recordings", ["status"])
    ok = pc.sum(pc.equal(recs.column("status"), "ok")).as_py() or 0
    failed = report.errors  # this run's: a file that failed and is gone from the input is not named
    res.lines.append(
        f"pseudo-label: labels of the accepted segments of {ok} recordings written to {safe(dest)} "
        f"({', '.join(FORMATS)}), replacing any earlier export there"
    )
    res.exit_code = EXIT_OK
    if report.error:  # labels written, some files failed (even when every file this run processed failed)
        n = f"{report.error} file{'s' if report.error > 1 else ''}"
        res.lines.append(
            f"pseudo-label: {n} of the {report.processed} this run processed failed, without labels (a rerun "
            "retries them); the labels hold the rest:"
        )
        res.lines += [f"  failed: {safe(r['uri'])}: {safe(r['error'])}" for r in failed[:10]]
        if report.error > 10:
            res.lines.append(f"  ... and more: scriptorium status {safe(cfg.output.uri)}")
        res.exit_code = EXIT_PARTIAL
    return res
