"""Is the output whole? The files each table's Delta log references exist and open, and its log has
no missing entry. `run` and `status` check it (`check`); `run` repairs what it can (`repair`).

What is checked, cheaply (no data is read):

* every data file the current version references exists and its Parquet footer reads (two small
  range reads per file): a file cut short, zeroed or deleted is found before a reader fails on it,
  or, worse, before a rerun says "10 already done" over a table no one can read;
* the log's versions are contiguous from the last checkpoint (or 0) to the newest, and the newest is
  not older than the versions the last run recorded having committed (`_scriptorium/versions.json`,
  written at the end of a run): a deleted log entry, the newest one included, is a version gap.

`repair` (run only, under the output's lock): a damaged data file is moved aside to
`_scriptorium/damaged/<table>/` (kept, never deleted), the table forgets it (delta-rs's `repair`, a
commit of its `remove`), and the recordings whose rows were in it are dropped from `recordings`, so the
plan redoes them. A version gap cannot be repaired from the log: its recordings' rows are simply
missing, so the run redoes them as new; it is reported.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import with_retries
from pipeline.ledger.tables import TABLES, OutputError, in_predicate
from pipeline.storage import is_local, put_atomic
from pipeline.text import safe

log = logging.getLogger(__name__)

#: Footers read at once (object stores answer in tens of ms each).
FOOTER_THREADS = 16
VERSIONS_FILE = "_scriptorium/versions.json"


@dataclass
class TableCheck:
    table: str
    version: int | None = None
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    missing_versions: list[int] = field(default_factory=list)
    unreadable: str | None = None  # the log itself cannot be replayed: nothing here can repair it

    def lines(self) -> list[str]:
        """One line per problem, for a person."""
        out = [f"{self.table}: damaged data file {safe(path)} ({safe(why)})" for path, why in self.damaged]
        if self.unreadable:
            out.append(f"{self.table}: the Delta log cannot be read ({safe(self.unreadable)})")
        if self.missing_versions:
            shown = ", ".join(str(v) for v in self.missing_versions[:10])
            out.append(
                f"{self.table}: Delta log version gap: version(s) {shown} missing from {self.table}/_delta_log/ "
                "(deleted log entries: their rows are not in the table; a run redoes those recordings)"
            )
        return out


class _StoreError(Exception):
    """A read of the store failed under pyarrow (which hands a file object's own exception back as
    it is): kept apart from pyarrow's verdict on the bytes it did read."""


class _Tagged:
    """A file whose failed reads raise `_StoreError`, so that a dropped connection is not taken for a
    corrupt footer (both can be an OSError)."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._f, name)
        if name not in ("read", "readinto", "seek", "tell", "size"):
            return attr

        def call(*args: Any) -> Any:
            try:
                return attr(*args)
            except Exception as exc:
                raise _StoreError() from exc

        return call


def _footer(fs: Any, path: str, full: bool = False) -> str | None:
    """Why the Parquet file at `path` cannot be used, or None when its footer reads (`full`: and every
    page decodes, with page checksums verified where the writer stored them). A store that throttles,
    drops or times out is tried again, and if it still fails its error is raised: a file we could not
    reach is not a damaged file, and calling it one would move good rows aside."""

    def read() -> str | None:
        with fs.open(path, "rb") as f:
            try:
                pf = pq.ParquetFile(_Tagged(f), page_checksum_verification=full)
                if pf.metadata.num_columns == 0:
                    return "no columns"
                if full:
                    pf.read()
            except _StoreError as exc:
                raise exc.__cause__ from None  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001 - pyarrow could not use the bytes it read: damaged
                return f"unreadable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return None

    try:
        return with_retries(read)
    except FileNotFoundError:
        return "missing"


def _log_versions(led: Any, name: str) -> tuple[list[int], int]:
    """(versions of the commit entries in the table's log, the version the log must be whole from)."""
    logdir = led.path(name, "_delta_log")
    try:
        names = [p.rsplit("/", 1)[-1] for p in with_retries(lambda: led.fs.ls(logdir, detail=False))]
    except FileNotFoundError:
        return [], 0
    versions = sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())
    start = 0
    if "_last_checkpoint" in names:
        try:
            start = int(json.loads(led.fs.cat_file(f"{logdir}/_last_checkpoint"))["version"])
        except (ValueError, KeyError, OSError):
            pass
    else:  # log entries removed by log retention leave a checkpoint behind them
        checkpoints = [int(n.split(".", 1)[0]) for n in names if ".checkpoint." in n and n.split(".", 1)[0].isdigit()]
        start = max(checkpoints, default=0)
    return versions, start


def recorded_versions(led: Any) -> dict[str, int]:
    """The table versions the last run recorded having committed (empty for older outputs)."""
    try:
        return json.loads(with_retries(lambda: led.fs.cat_file(led.path(*VERSIONS_FILE.split("/")))))
    except (FileNotFoundError, ValueError):
        return {}


def record_versions(led: Any) -> None:
    """Remember the tables' current versions (end of a run): a later deletion of the newest log
    entries shows as a gap against them."""
    versions = {}
    for name in TABLES:
        dt = led.table(name)
        if dt is not None:
            versions[name] = dt.version()
    body = json.dumps(versions).encode()
    with_retries(lambda: put_atomic(led.fs, led.path(*VERSIONS_FILE.split("/")), body))


def check(led: Any, full: bool = False) -> list[TableCheck]:
    """Each table's damaged files and version gaps (no data is read: footers and the log's listing;
    `full`, for `scriptorium maintain --verify`: every file read whole)."""
    recorded = recorded_versions(led)
    out = []
    for name in TABLES:
        res = TableCheck(name)
        versions, start = _log_versions(led, name)
        newest = max(versions, default=-1)
        expected = max(newest, int(recorded.get(name, -1)))
        have = set(versions)
        res.missing_versions = [v for v in range(start, expected + 1) if v not in have and not (v == start and v > 0)]
        try:
            dt = led.table(name)
        except Exception as exc:  # noqa: BLE001 - a log delta-rs cannot replay: say it, in one line
            why = str(exc).splitlines()[0] if str(exc) else ""
            res.unreadable = "a version is missing" if "version gap" in why else f"{type(exc).__name__}: {why[:200]}"
            out.append(res)
            continue
        if dt is None:
            out.append(res)
            continue
        res.version = dt.version()
        paths = [led.fs._strip_protocol(u) for u in dt.file_uris()]
        with ThreadPoolExecutor(FOOTER_THREADS) as pool:
            for path, why in zip(paths, pool.map(lambda p: _footer(led.fs, p, full), paths)):
                if why is not None:
                    res.damaged.append((path, why))
        out.append(res)
    return out


def repair(led: Any, checks: list[TableCheck]) -> list[str]:
    """Under the output's lock: move damaged files aside, make each table forget them, and drop the
    `recordings` rows of recordings whose rows were lost, so that the plan redoes them. Returns the
    lines to report (empty when the output is whole)."""
    said: list[str] = []
    broken = [line for c in checks if c.unreadable for line in c.lines()]
    if broken:  # a log that cannot be replayed: stop here, before anything is written over it
        raise OutputError("\n".join(broken))
    for c in checks:
        said += c.lines()
        if not c.damaged:
            continue
        for path, why in c.damaged:
            if why != "missing":
                aside = led.path("_scriptorium", "damaged", c.table, path.rsplit("/", 1)[-1])
                if is_local(led.fs):  # an object store has no folders
                    led.fs.makedirs(aside.rsplit("/", 1)[0], exist_ok=True)
                with_retries(lambda: led.fs.mv(path, aside))
        dt = led.table(c.table)
        dt.repair(dry_run=False)  # a `remove` for every referenced file that no longer exists
        said.append(
            f"{c.table}: {len(c.damaged)} damaged file(s) moved to _scriptorium/damaged/ and removed from the table"
        )
    if any(c.damaged for c in checks):
        lost = _lost_recordings(led)
        if lost:
            led.table("recordings").delete(in_predicate("recording_id", lost))
            said.append(f"{len(lost)} recording(s) lost rows in the damage: this run redoes them")
    return said


def _lost_recordings(led: Any) -> list[str]:
    """Committed recordings with segments, none of which are in `segments` any more."""
    recs = led.read("recordings", ["recording_id", "num_segments"])
    with_segs = recs.filter(pc.greater(pc.fill_null(recs.column("num_segments"), 0), 0)).column("recording_id")
    have = led.read("segments", ["recording_id"]).column("recording_id")
    return with_segs.filter(pc.invert(pc.is_in(with_segs, value_set=have))).to_pylist()
