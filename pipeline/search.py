"""The archive's search index: full text over every committed segment, with filters (`scriptorium index`,
`scriptorium browse`, and the run's committer, which keeps it up to date).

Engine: SQLite FTS5 (Python's own `sqlite3`, nothing to install or run). One file holds the text index,
the columns the filters need (language, speaker, accepted, confidence, the recording's commit date and
URI) and each segment's words with their times (the page's transcript follows the audio with them), so a
query is one SQL statement and a reader never opens the Delta tables. Words are tokenised by FTS5's
`unicode61` (case and diacritics folded) and stemmed by its `porter` stemmer: English stemming only
(FTS5 ships no other); other languages match whole words, or word prefixes with `word*`. Results are
ranked by BM25 while the words match at most RANK_AT_MOST segments; a commoner query lists the newest
matches first, so that no query reads more of the index than the page shows.

Where the index lives: beside a local output (`OUT/_scriptorium/search.sqlite`); for an output on an
object store (SQLite needs a local file) in this machine's cache, keyed by the output's URI
(`$XDG_CACHE_HOME/scriptorium/search/<sha1(uri)>/search.sqlite`, or `$SCRIPTORIUM_SEARCH_DIR/...`).

Kept up to date incrementally, by Delta data file: the index records every data file of `segments` and
`recordings` whose rows it holds. `sync` compares that with the tables' current files: rows of files no
longer in a table (a recording replaced, `filter` re-judging, `maintain` compacting) are deleted, files new
to it are read and inserted, nothing else is touched. A run's committer calls `sync` after each group commit
(`keep_up`), so it reads just the files that commit added. Visibility follows `read_output`: a segment is
found only while a `recordings` row with its (recording_id, fingerprint, write_id) is committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Iterator

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from pipeline.config import OutputConfig
from pipeline.errors import UserError, with_retries
from pipeline.ledger import Ledger

log = logging.getLogger(__name__)

INDEX_NAME = "search.sqlite"
#: Bumped when the index's tables change: an index of another version is rebuilt.
INDEX_VERSION = 1
#: Rows read and inserted at a time (memory is bounded by one batch, not by a data file).
BATCH_ROWS = 50_000

SEG_COLUMNS = [
    "recording_id",
    "write_id",
    "fingerprint",
    "segment_index",
    "start",
    "end",
    "speaker",
    "language",
    "confidence",
    "accepted",
    "text",
    "words",
]
REC_COLUMNS = ["recording_id", "write_id", "fingerprint", "uri", "size", "duration", "status", "committed_at"]

_SCHEMA = f"""
PRAGMA user_version = {INDEX_VERSION};
CREATE TABLE IF NOT EXISTS files (id INTEGER PRIMARY KEY, tbl TEXT NOT NULL, uri TEXT NOT NULL, UNIQUE (tbl, uri));
CREATE TABLE IF NOT EXISTS seg (
    id INTEGER PRIMARY KEY, file INTEGER NOT NULL, recording_id TEXT NOT NULL, write_id TEXT, fingerprint TEXT,
    segment_index INTEGER, start REAL, "end" REAL, speaker TEXT, language TEXT, confidence REAL,
    accepted INTEGER, text TEXT, words TEXT);
CREATE INDEX IF NOT EXISTS seg_file ON seg (file);
CREATE INDEX IF NOT EXISTS seg_rec ON seg (recording_id, segment_index);
CREATE TABLE IF NOT EXISTS rec (
    recording_id TEXT PRIMARY KEY, file INTEGER NOT NULL, write_id TEXT, fingerprint TEXT, uri TEXT,
    size INTEGER, duration REAL, status TEXT, committed_at TEXT);
CREATE INDEX IF NOT EXISTS rec_file ON rec (file);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(
    text, content='seg', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER IF NOT EXISTS seg_ai AFTER INSERT ON seg BEGIN
    INSERT INTO fts (rowid, text) VALUES (new.id, new.text); END;
CREATE TRIGGER IF NOT EXISTS seg_ad AFTER DELETE ON seg BEGIN
    INSERT INTO fts (fts, rowid, text) VALUES ('delete', old.id, old.text); END;
"""

#: A segment is visible while its recording's committed row carries the same commit key (`read_output`).
_VISIBLE = "rec.recording_id = seg.recording_id AND rec.write_id = seg.write_id AND rec.fingerprint = seg.fingerprint"


class SearchError(UserError, RuntimeError):
    """The index cannot answer as asked (no output there, a query the engine refuses): exit 2."""


def index_path(cfg: OutputConfig) -> Path:
    """Where the index of `cfg.uri` lives: beside a local output, in the local cache for a remote one."""
    protocol = fsspec.utils.get_protocol(cfg.uri)
    if protocol in ("file", "local"):
        return Path(fsspec.core.strip_protocol(cfg.uri)).resolve() / "_scriptorium" / INDEX_NAME
    base = os.environ.get("SCRIPTORIUM_SEARCH_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "scriptorium", "search"
    )
    key = hashlib.sha1(cfg.uri.rstrip("/").encode()).hexdigest()[:16]
    return Path(base) / key / INDEX_NAME


def connect(path: Path, create: bool = False) -> sqlite3.Connection:
    """The index's connection (WAL: a browser's queries read while a run's committer writes)."""
    if not create and not path.exists():
        raise SearchError(f"no search index at {path} (run `scriptorium index OUTPUT` first)")
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA cache_size=-262144")  # 256 MB of pages: a build's index inserts stay in memory
    if create:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, INDEX_VERSION):  # an older layout: start afresh (it is derived data)
            db.close()
            path.unlink()
            return connect(path, create=True)
        db.executescript(_SCHEMA)
    return db


@dataclass
class SyncStats:
    """What one `sync` did."""

    files_added: int = 0
    files_removed: int = 0
    segments_added: int = 0
    segments_removed: int = 0
    segments_moved: int = 0  # unchanged text, now in another data file (compaction, `filter`)
    seconds: float = 0.0
    path: str = ""

    def line(self) -> str:
        return (
            f"search index {self.path}: +{self.segments_added} / -{self.segments_removed} segments "
            f"({self.segments_moved} kept as they were) "
            f"(+{self.files_added} / -{self.files_removed} data files) in {self.seconds:.1f} s"
        )


def sync(cfg: OutputConfig, path: Path | None = None, rebuild: bool = False, ledger: Ledger | None = None) -> SyncStats:
    """Bring the index of `cfg` up to date with the output's committed tables (see the module docstring).

    `ledger`: the run's own (its tables stay open between commits); `rebuild`: drop the index first."""
    t0 = time.perf_counter()
    led = ledger or Ledger(cfg)
    path = path or index_path(cfg)
    if rebuild and path.exists():
        for p in path.parent.glob(path.name + "*"):  # the -wal and -shm files too
            p.unlink()
    stats = SyncStats(path=str(path))
    # the run's committer keeps its tables open (`Ledger.current`): no new listing of their logs
    tables = {name: led.current(name) if ledger is not None else led.table(name) for name in ("recordings", "segments")}
    if tables["recordings"] is None:
        raise SearchError(f"no Scriptorium output at {cfg.uri!r} (no committed recordings table)")
    with closing(connect(path, create=True)) as db:
        for name, dt in tables.items():
            current = set(dt.file_uris()) if dt is not None else set()
            have = dict(db.execute("SELECT uri, id FROM files WHERE tbl = ?", (name,)).fetchall())
            gone = [have[u] for u in have.keys() - current]
            replacing = name == "segments" and bool(gone)
            for uri in sorted(current - have.keys()):
                cur = db.execute("INSERT OR IGNORE INTO files (tbl, uri) VALUES (?, ?)", (name, uri))
                if not cur.rowcount:  # another sync (a run's committer, `browse`) indexed it meanwhile
                    continue
                fid = cur.lastrowid
                n = _insert_file(db, led, name, uri, fid, "incoming" if replacing else None)
                stats.files_added += 1
                stats.segments_added += n if name == "segments" and not replacing else 0
                if not replacing:
                    db.commit()  # a file at a time: a big build's WAL stays small, a reader sees whole files
            stats.files_removed += len(gone)
            if replacing:
                added, moved, removed = _replace_files(db, gone)
                stats.segments_added += added
                stats.segments_moved += moved
                stats.segments_removed += removed
            elif gone:
                _delete_files(db, name, gone)
            db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the index is one file again (its size is its size)
    stats.seconds = time.perf_counter() - t0
    return stats


def keep_up(cfg: OutputConfig, ledger: Ledger) -> SyncStats | None:
    """The run's hook after a group commit: sync the index this machine keeps for the output (a local
    output always has one; a remote output's only once `index` or `browse` made it here). The index is
    derived data: a failure is a warning, and the next `sync` catches up."""
    path = index_path(cfg)
    remote = fsspec.utils.get_protocol(cfg.uri) not in ("file", "local")
    if remote and not path.exists():
        return None
    try:
        return sync(cfg, path, ledger=ledger)
    except Exception as exc:  # noqa: BLE001 - derived data: never fail a run for it
        log.warning(
            "search index not updated (%s: %s); `scriptorium index %s` catches up", type(exc).__name__, exc, cfg.uri
        )
        return None


def _delete_files(db: sqlite3.Connection, name: str, ids: list[int]) -> int:
    marks = ",".join("?" * len(ids))
    n = db.execute(f"DELETE FROM {'seg' if name == 'segments' else 'rec'} WHERE file IN ({marks})", ids).rowcount
    db.execute(f"DELETE FROM files WHERE id IN ({marks})", ids)
    return n


def _replace_files(db: sqlite3.Connection, gone: list[int]) -> tuple[int, int, int]:
    """Data files of `segments` were replaced by others (their rows are in `incoming`): a segment whose
    text is unchanged (the files of a `maintain` compaction, a `filter` verdict, the other recordings
    of a rewritten file) keeps its place in the text index and only takes its new columns; the others
    are inserted, and what is left of the old files deleted. Returns (added, moved, removed)."""
    marks = ",".join("?" * len(gone))
    db.execute(f"CREATE TEMP TABLE IF NOT EXISTS incoming ({_SEG_INSERT})")
    db.execute("CREATE INDEX IF NOT EXISTS temp.incoming_key ON incoming (recording_id, segment_index)")
    moved = db.execute(
        'UPDATE seg SET file = i.file, write_id = i.write_id, fingerprint = i.fingerprint, start = i.start, "end" = '
        'i."end", speaker = i.speaker, language = i.language, confidence = i.confidence, accepted = i.accepted, '
        "words = i.words FROM incoming AS i WHERE seg.file IN (" + marks + ") AND i.recording_id = seg.recording_id "
        "AND i.segment_index = seg.segment_index AND i.text IS seg.text",
        gone,
    ).rowcount
    db.execute(
        "DELETE FROM incoming WHERE EXISTS (SELECT 1 FROM seg WHERE seg.recording_id = incoming.recording_id AND "
        "seg.segment_index = incoming.segment_index AND seg.file = incoming.file)"
    )
    added = db.execute(f"INSERT INTO seg ({_SEG_INSERT}) SELECT {_SEG_INSERT} FROM incoming").rowcount
    removed = _delete_files(db, "segments", gone)
    db.execute("DROP TABLE incoming")
    return added, moved, removed


def _batches(led: Ledger, name: str, uri: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The data file's rows, a batch at a time; a column an older release did not write reads as null."""
    fs, path = (led.fs, led.fs._strip_protocol(uri)) if "://" in uri else (fsspec.filesystem("file"), uri)
    with with_retries(lambda: fs.open(path, "rb")) as f:
        pf = pq.ParquetFile(f)
        have = set(pf.schema_arrow.names)
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=[c for c in columns if c in have]):
            for c in columns:
                if c not in have:
                    batch = batch.append_column(c, pa.nulls(batch.num_rows))
            yield batch


_SEG_INSERT = (
    'file, recording_id, write_id, fingerprint, segment_index, start, "end", speaker, language, confidence, '
    "accepted, text, words"
)


def _insert_file(db: sqlite3.Connection, led: Ledger, name: str, uri: str, fid: int, into: str | None = None) -> int:
    """Insert a data file's rows (into `seg` or `rec`; `into="incoming"`: a temp table `_replace_files` reads)."""
    n = 0
    if name == "recordings":
        for b in _batches(led, name, uri, REC_COLUMNS):
            when = pc.strftime(b.column("committed_at"), "%Y-%m-%dT%H:%M:%S") if b.num_rows else pa.array([])
            cols = [b.column(c).to_pylist() for c in REC_COLUMNS[:-1]] + [when.to_pylist()]
            db.executemany(
                "INSERT OR REPLACE INTO rec (file, recording_id, write_id, fingerprint, uri, size, duration, status, "
                "committed_at) VALUES (?,?,?,?,?,?,?,?,?)",
                ((fid, *row) for row in zip(*cols)),
            )
            n += b.num_rows
        return n
    table = into or "seg"
    if into:
        db.execute(f"CREATE TEMP TABLE IF NOT EXISTS {into} ({_SEG_INSERT})")
    for b in _batches(led, name, uri, SEG_COLUMNS):
        cols = [b.column(c).to_pylist() for c in SEG_COLUMNS[:-1]] + [_words_json(b.column("words"))]
        db.executemany(
            f"INSERT INTO {table} ({_SEG_INSERT}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ((fid, *row) for row in zip(*cols)),
        )
        n += b.num_rows
    return n


def _words_json(words: pa.Array) -> list[str | None]:
    """Each segment's words as compact JSON `[["word",start,end],...]` (what the page's transcript reads),
    made column-wise in Arrow (a Python loop over a million segments' words took most of a build)."""
    if pa.types.is_null(words.type):
        return [None] * len(words)
    flat = pc.list_flatten(words)
    text = pc.replace_substring_regex(pc.fill_null(flat.field("word"), ""), r"[\x00-\x1f]", " ")
    text = pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), '"', '\\"')
    times = [pc.cast(pc.fill_null(pc.round(flat.field(f), 3), 0.0), pa.string()) for f in ("start", "end")]
    items = pc.binary_join_element_wise('["', text, '",', times[0], ",", times[1], "]", "")
    offsets = pc.subtract(words.offsets, words.offsets[0])  # a slice's offsets start where it starts
    per_segment = pc.binary_join(pa.ListArray.from_arrays(offsets, items, mask=words.is_null()), ",")
    return pc.binary_join_element_wise("[", per_segment, "]", "").to_pylist()


# -- querying -------------------------------------------------------------------------------------


class Query(BaseModel):
    """One search: words (all must match; "a phrase" in quotes, `word*` a prefix) and filters, each optional."""

    text: str = ""
    language: str | None = None
    speaker: str | None = None
    accepted: bool | None = None
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    max_confidence: float | None = Field(default=None, ge=0, le=1)
    since: date | None = None  # the recording's commit date (UTC), inclusive
    until: date | None = None
    path: str | None = None  # a substring of the input's URI
    limit: int = Field(default=50, ge=1, le=100_000)
    offset: int = Field(default=0, ge=0)


class Hit(BaseModel):
    """One segment found, with what a result line shows. `snippet` marks matched words with \\x02 ... \\x03
    (control characters no transcript holds: the page turns them into <mark> elements, the text into text nodes)."""

    recording_id: str
    uri: str
    segment_index: int
    start: float
    end: float
    speaker: str | None
    language: str | None
    confidence: float | None
    accepted: bool | None
    text: str
    snippet: str
    committed_at: str | None


_TOKEN = re.compile(r'"([^"]*)"|(\S+)')


def match_expression(text: str) -> str:
    """User words -> an FTS5 MATCH expression that cannot be a syntax error: every word or "phrase" is a
    quoted FTS5 string (all must match); a trailing `*` stays a prefix query."""
    parts = []
    for phrase, word in _TOKEN.findall(text):
        item = phrase if phrase else word
        prefix = not phrase and item.endswith("*") and len(item) > 1
        item = item.rstrip("*") if prefix else item
        item = item.replace("\x02", "").replace("\x03", "").strip()
        if item:
            parts.append('"' + item.replace('"', '""') + '"' + ("*" if prefix else ""))
    return " ".join(parts)


def _where(q: Query) -> tuple[list[str], list[Any]]:
    where, args = [], []
    for col, value in (("seg.language", q.language), ("seg.speaker", q.speaker)):
        if value:
            where.append(f"{col} = ?")
            args.append(value)
    if q.accepted is not None:
        where.append("seg.accepted = ?")
        args.append(int(q.accepted))
    if q.min_confidence is not None:
        where.append("seg.confidence >= ?")
        args.append(q.min_confidence)
    if q.max_confidence is not None:
        where.append("seg.confidence <= ?")
        args.append(q.max_confidence)
    if q.since is not None:
        where.append("rec.committed_at >= ?")
        args.append(q.since.isoformat())
    if q.until is not None:
        where.append("rec.committed_at < ?")
        args.append(date.fromordinal(q.until.toordinal() + 1).isoformat())
    if q.path:
        where.append("instr(rec.uri, ?) > 0")
        args.append(q.path)
    return where, args


#: A query matching at most this many segments is ranked by BM25; one matching more lists the newest
#: matches first (ranking every match of a common word costs ~0.5 s a million segments; newest-first
#: reads the matches in index order and stops at the page's last row).
RANK_AT_MOST = 2000


def search(db: sqlite3.Connection, q: Query) -> list[Hit]:
    """Segments matching `q`: best first (BM25) when the words match at most RANK_AT_MOST segments, else
    newest first; without words, newest first. Every filter applies either way."""
    where, args = _where(q)
    expr = match_expression(q.text)
    cols = (
        'seg.recording_id, rec.uri, seg.segment_index, seg.start, seg."end", seg.speaker, seg.language, '
        "seg.confidence, seg.accepted, seg.text, rec.committed_at"
    )
    filters = "".join(" AND " + w for w in where)
    # CROSS JOIN fixes the loop order (SQLite never reorders it): the text index or the segments
    # outside, read in rowid order, so that LIMIT stops the scan early
    try:
        if expr:
            many = db.execute(
                "SELECT count(*) FROM (SELECT 1 FROM fts WHERE fts MATCH ? LIMIT ?)", (expr, RANK_AT_MOST + 1)
            ).fetchone()[0]
            order = "fts.rowid DESC" if many > RANK_AT_MOST else "fts.rank"
            sql = (
                f"SELECT {cols}, highlight(fts, 0, char(2), char(3)) FROM fts CROSS JOIN seg ON seg.id = fts.rowid "
                f"CROSS JOIN rec ON {_VISIBLE} WHERE fts MATCH ?{filters} ORDER BY {order} LIMIT ? OFFSET ?"
            )
            args = [expr, *args]
        else:
            sql = (
                f"SELECT {cols}, NULL FROM seg CROSS JOIN rec ON {_VISIBLE} WHERE 1{filters} "
                "ORDER BY seg.id DESC LIMIT ? OFFSET ?"
            )
        rows = db.execute(sql, [*args, q.limit, q.offset]).fetchall()
    except sqlite3.OperationalError as exc:
        raise SearchError(f"the index cannot answer {q.text!r}: {exc}") from exc
    return [_hit(r) for r in rows]


def _hit(r: tuple) -> Hit:
    rid, uri, idx, start, end, speaker, lang, conf, acc, text, committed, highlighted = r
    return Hit(
        recording_id=rid,
        uri=uri,
        segment_index=idx,
        start=start,
        end=end,
        speaker=speaker,
        language=lang,
        confidence=conf,
        accepted=None if acc is None else bool(acc),
        text=text or "",
        snippet=highlighted if highlighted is not None else (text or ""),
        committed_at=committed,
    )


def facets(db: sqlite3.Connection) -> dict[str, list[str]]:
    """The languages and speakers found in the index (the page's filter lists)."""
    return {
        "languages": [
            r[0] for r in db.execute("SELECT DISTINCT language FROM seg WHERE language IS NOT NULL ORDER BY 1")
        ],
        "speakers": [r[0] for r in db.execute("SELECT DISTINCT speaker FROM seg WHERE speaker IS NOT NULL ORDER BY 1")],
    }


def recording(db: sqlite3.Connection, recording_id: str) -> dict[str, Any] | None:
    """A committed recording and its visible segments with their words (None: not in the output)."""
    row = db.execute(
        "SELECT recording_id, uri, size, duration, status FROM rec WHERE recording_id = ?", (recording_id,)
    ).fetchone()
    if row is None:
        return None
    segs = db.execute(
        f'SELECT seg.segment_index, seg.start, seg."end", seg.speaker, seg.language, seg.confidence, seg.accepted, '
        f"seg.text, seg.words FROM seg JOIN rec ON {_VISIBLE} WHERE seg.recording_id = ? ORDER BY seg.start",
        (recording_id,),
    ).fetchall()
    keys = ("segment_index", "start", "end", "speaker", "language", "confidence", "accepted", "text", "words")
    out = []
    for s in segs:
        d = dict(zip(keys, s))
        d["accepted"] = None if d["accepted"] is None else bool(d["accepted"])
        d["words"] = json.loads(d["words"]) if d["words"] else []
        out.append(d)
    return {
        "recording_id": row[0],
        "uri": row[1],
        "size": row[2],
        "duration": row[3],
        "status": row[4],
        "segments": out,
    }


def count(db: sqlite3.Connection) -> int:
    """Visible segments in the index."""
    return db.execute(f"SELECT count(*) FROM seg JOIN rec ON {_VISIBLE}").fetchone()[0]
