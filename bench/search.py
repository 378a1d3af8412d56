"""The archive's search index (pipeline/search.py) at scale, against a DuckDB `ILIKE` scan of the same table.

    .venv/bin/python bench/search.py                       # 1 M segments (100 k recordings), 10 k new
    .venv/bin/python bench/search.py --segments 100000     # a quicker look

Synthesises an output (the real Delta tables, written as a run writes them: one append per block of
recordings, every segment with ~12 words and their times; Zipf-distributed words from a 30 k vocabulary,
five languages, four speakers, confidences 0-1, a phrase planted in 3 segments), then measures, in one run:

- building the index from nothing (`sync(rebuild=True)`), and its size on disk;
- updating it for 10 k new segments (one more block committed, then `sync`: what the run's committer
  does after a group commit), and for 10 k segments of 1 k recordings replaced (a predicate overwrite,
  which rewrites every file those recordings sat in);
- queries (p50 / p95 of 20 runs each) on the index and as DuckDB `ILIKE '%...%'` over the table's
  Parquet files (DuckDB's own reader, all its threads), the same filters, 50 rows each.

`--first-audio N` measures instead what a listener waits for: in headless Chromium (Selenium), from the
click on a result to the audio element's `playing` event, for a FLEURS clip on the local disk and the same
clip on a loopback S3 server (moto), N times each, each in a fresh browser (nothing cached).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import OutputConfig  # noqa: E402
from pipeline.ledger import RECORDINGS_TABLE_SCHEMA, SEGMENTS_TABLE_SCHEMA, Ledger  # noqa: E402
from pipeline.ledger.tables import in_predicate  # noqa: E402
from pipeline.records import WORD_TYPE  # noqa: E402
from pipeline.search import Query, connect, search, sync  # noqa: E402

LANGS = np.array(["en", "de", "fr", "es", "pt"])
SPEAKERS = np.array(["SPEAKER_00", "SPEAKER_01", "SPEAKER_02", "SPEAKER_03"])
PHRASE = "the mayor mentioned the bridge"
SEG_PER_REC = 10
WORDS_PER_SEG = 12


def vocabulary(n: int, rng: np.random.Generator) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(3, 10, n)
    words = {"".join(rng.choice(letters, k)) for k in lengths}
    common = "the of and to a in is it that was for on are with as he be at by this had not but what all were".split()
    return np.array(common + sorted(words - set(common)))


def block(first_rec: int, n_rec: int, vocab: np.ndarray, rng: np.random.Generator, run: str, plant: bool = False):
    """(segments, recordings) tables of `n_rec` recordings from number `first_rec`, as committed."""
    n = n_rec * SEG_PER_REC
    rec_no = first_rec + np.repeat(np.arange(n_rec), SEG_PER_REC)
    rec_ids = np.char.mod("%016x", rec_no)
    uris = np.char.add(np.char.add(np.char.mod("s3://archive/%d/", 2000 + rec_no % 25), rec_ids), ".wav")
    zipf = np.minimum(rng.zipf(1.3, n * WORDS_PER_SEG) - 1, len(vocab) - 1)
    tokens = vocab[zipf].reshape(n, WORDS_PER_SEG)
    texts = [" ".join(row) for row in tokens]
    if plant:
        for i in (7, n // 2, n - 3):
            texts[i] = f"and then {PHRASE} again"
    seg_index = np.tile(np.arange(SEG_PER_REC), n_rec)
    start = seg_index * 6.0
    step = 5.0 / WORDS_PER_SEG
    counts = np.array([len(t.split()) for t in texts])
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    k = np.concatenate([np.arange(c) for c in counts])
    wstart = np.repeat(start, counts) + k * step
    words = pa.ListArray.from_arrays(
        pa.array(offsets),
        pa.StructArray.from_arrays(
            [
                pa.array([w for t in texts for w in t.split()]),
                pa.array(np.round(wstart, 3)),
                pa.array(np.round(wstart + step, 3)),
                pa.array(rng.random(len(k))),
                pa.nulls(len(k), pa.string()),
                pa.nulls(len(k), pa.bool_()),
            ],
            fields=list(WORD_TYPE),
        ),
    )
    conf = rng.random(n)
    write_id = f"{run}-w{first_rec}"
    cols = {
        "recording_id": pa.array(rec_ids),
        "uri": pa.array(uris),
        "segment_index": pa.array(seg_index, pa.int32()),
        "start": pa.array(start),
        "end": pa.array(start + 5.0),
        "duration": pa.array(np.full(n, 5.0)),
        "speaker": pa.array(SPEAKERS[rng.integers(0, len(SPEAKERS), n)]),
        "language": pa.array(np.repeat(LANGS[(first_rec + np.arange(n_rec)) % len(LANGS)], SEG_PER_REC)),
        "text": pa.array(texts),
        "words": words,
        "confidence": pa.array(conf),
        "accepted": pa.array(conf > 0.3),
        "fingerprint": pa.array(np.full(n, "fp")),
        "write_id": pa.array(np.full(n, write_id)),
    }
    seg = pa.table({f.name: cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in SEGMENTS_TABLE_SCHEMA})
    ids = np.char.mod("%016x", first_rec + np.arange(n_rec))
    rcols = {
        "recording_id": pa.array(ids),
        "uri": pa.array(uris[::SEG_PER_REC]),
        "size": pa.array(np.full(n_rec, 1_000_000)),
        "duration": pa.array(np.full(n_rec, 60.0)),
        "status": pa.array(np.full(n_rec, "ok")),
        "num_segments": pa.array(np.full(n_rec, SEG_PER_REC), pa.int32()),
        "fingerprint": pa.array(np.full(n_rec, "fp")),
        "write_id": pa.array(np.full(n_rec, write_id)),
        "run_id": pa.array(np.full(n_rec, run)),
        "committed_at": pa.array(np.full(n_rec, int(time.time() * 1e6)), pa.timestamp("us", tz="UTC")),
    }
    rec = pa.table(
        {
            f.name: rcols[f.name].cast(f.type) if f.name in rcols else pa.nulls(n_rec, f.type)
            for f in RECORDINGS_TABLE_SCHEMA
        }
    )
    return seg.cast(SEGMENTS_TABLE_SCHEMA), rec


def commit(led: Ledger, seg: pa.Table, rec: pa.Table, replace: bool = False) -> None:
    from deltalake import write_deltalake

    for name, rows in (("segments", seg), ("recordings", rec)):
        pred = in_predicate("recording_id", rec.column("recording_id").to_pylist()) if replace else None
        write_deltalake(
            led.table_uri(name), rows, mode="overwrite" if replace else "append", predicate=pred, schema_mode="merge"
        )


def timed(fn, runs: int = 20) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def first_audio(trials: int) -> None:
    """Click -> `playing` of a clicked result, local input and loopback S3 input (see the docstring)."""
    import socket
    import threading

    import boto3
    import uvicorn
    from moto.server import ThreadedMotoServer
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from pipeline.browse import make_app
    from pipeline.config import StorageOptions
    from pipeline.execution.sink import write_table
    from pipeline.records import TRANSCRIBED_SCHEMA, recording_id_for

    def port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    s3_port = port()
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{s3_port}"
    clip = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "multilingual" / "fleurs-de-000.ogg"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    boto3.client("s3", endpoint_url=endpoint).put_object(Bucket="bench", Key="fleurs.ogg", Body=clip.read_bytes())
    root = Path(tempfile.mkdtemp(prefix="bench-browse-"))
    cfg = OutputConfig(uri=str(root / "out"), storage=StorageOptions(endpoint_url=endpoint))
    inputs = {"local disk": str(clip), "loopback S3": "s3://bench/fleurs.ogg"}
    rows = [
        {
            "recording_id": recording_id_for(uri),
            "uri": uri,
            "size": clip.stat().st_size,
            "status": "ok",
            "segments": [
                {
                    "segment_index": 0,
                    "start": 4.1,
                    "end": 14.0,
                    "text": f"aussichten {where.split()[-1]}",
                    "words": [],
                    "accepted": True,
                    "reject_reasons": [],
                }
            ],
        }
        for where, uri in inputs.items()
    ]
    write_table(cfg, pa.Table.from_pylist(rows, schema=TRANSCRIBED_SCHEMA), "bench", "fp")
    sync(cfg)
    web_port = port()
    server = uvicorn.Server(uvicorn.Config(make_app(cfg), host="127.0.0.1", port=web_port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    print("\n| input | click -> playing, ms (each trial) | median ms | target |\n| --- | --- | --- | --- |")
    for where in inputs:
        waits = []
        for _ in range(trials):
            opts = webdriver.ChromeOptions()
            opts.binary_location = shutil.which("chromium")
            for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--mute-audio"):
                opts.add_argument(arg)
            driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
            try:
                driver.get(f"http://127.0.0.1:{web_port}/")
                driver.find_element(By.ID, "q").send_keys(f"aussichten {where.split()[-1]}\n")
                WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results li"))
                driver.execute_script(
                    "window.__t0 = performance.now(); document.getElementById('audio').addEventListener("
                    "'playing', () => { window.__t1 = performance.now(); }, {once: true});"
                    "document.querySelector('#results li').click();"
                )
                WebDriverWait(driver, 30).until(lambda d: d.execute_script("return window.__t1 !== undefined"))
                waits.append(driver.execute_script("return window.__t1 - window.__t0"))
            finally:
                driver.quit()
        target = "<= 1000" if where == "local disk" else "<= 2000"
        print(f"| {where} | {', '.join(f'{w:.0f}' for w in waits)} | {statistics.median(waits):.0f} | {target} |")
    server.should_exit = True
    moto.stop()
    shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=1_000_000)
    ap.add_argument("--new", type=int, default=10_000, help="segments added (and replaced) for the update rows")
    ap.add_argument("--block-recordings", type=int, default=10_000, help="recordings per committed block")
    ap.add_argument("--keep", help="write the output here (default: a temp dir, removed)")
    ap.add_argument("--first-audio", type=int, metavar="N", help="measure click -> playing instead (N trials)")
    args = ap.parse_args()
    if args.first_audio:
        return first_audio(args.first_audio)
    rng = np.random.default_rng(0)
    vocab = vocabulary(30_000, rng)
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-search-"))
    out = root / "out"
    shutil.rmtree(out, ignore_errors=True)
    cfg = OutputConfig(uri=str(out))
    led = Ledger(cfg)
    n_rec = args.segments // SEG_PER_REC
    t = time.perf_counter()
    for first in range(0, n_rec, args.block_recordings):
        seg, rec = block(first, min(args.block_recordings, n_rec - first), vocab, rng, "run1", plant=first == 0)
        commit(led, seg, rec)
    print(
        f"synthesised {args.segments:,} segments in {n_rec:,} recordings: {time.perf_counter() - t:.0f} s", flush=True
    )

    rows = []
    t, cpu = time.perf_counter(), time.process_time()
    stats = sync(cfg, rebuild=True)
    build, build_cpu = time.perf_counter() - t, time.process_time() - cpu
    index = Path(stats.path)
    size = sum(p.stat().st_size for p in index.parent.glob(index.name + "*"))
    rows.append(
        (
            "build the index",
            f"{stats.segments_added:,} segments",
            f"{build:.1f} s ({build_cpu:.1f} CPU s)",
            "<= 120 s (1 M)",
        )
    )
    rows.append(("index size", "", f"{size / 1e6:.0f} MB", f"{size / 1e6 * 1e6 / args.segments:.0f} MB per 1 M"))

    new_rec = args.new // SEG_PER_REC
    seg, rec = block(n_rec, new_rec, vocab, rng, "run2")
    commit(led, seg, rec)
    t, cpu = time.perf_counter(), time.process_time()
    stats = sync(cfg)
    took = f"{time.perf_counter() - t:.2f} s ({time.process_time() - cpu:.2f} CPU s)"
    rows.append(("update: new segments", f"+{stats.segments_added:,}", took, "<= 5 s"))

    seg, rec = block(0, new_rec, vocab, rng, "run3")  # recordings 0.. transcribed again
    commit(led, seg, rec, replace=True)
    t, cpu = time.perf_counter(), time.process_time()
    stats = sync(cfg)
    took = f"{time.perf_counter() - t:.2f} s ({time.process_time() - cpu:.2f} CPU s)"
    what = (
        f"+{stats.segments_added:,} / -{stats.segments_removed:,}, {stats.segments_moved:,} kept "
        f"({stats.files_added} files rewritten)"
    )
    rows.append(("update: 10 k segments replaced", what, took, ""))

    import duckdb

    con = duckdb.connect()
    files = led.table("segments").file_uris()
    con.execute(f"CREATE VIEW segs AS SELECT * FROM read_parquet({files!r})")
    db = connect(index)
    total = db.execute("SELECT count(*) FROM seg").fetchone()[0]
    rare = str(vocab[3000])  # ~1 in 4,000 segments
    queries = [
        ("a phrase (3 segments)", Query(text=f'"{PHRASE}"'), f"%{PHRASE}%", ""),
        ("a rare word", Query(text=rare), f"%{rare}%", ""),
        ("a common word", Query(text="the"), "%the%", ""),
        ("two words", Query(text=f"{vocab[40]} {vocab[60]}"), f"%{vocab[40]}%{vocab[60]}%", ""),
        (
            "rare word + language + confidence",
            Query(text=rare, language="de", min_confidence=0.5),
            f"%{rare}%",
            " AND language = 'de' AND confidence >= 0.5",
        ),
        (
            "filters only (no words)",
            Query(language="fr", speaker="SPEAKER_01", accepted=True),
            "%",
            " AND language = 'fr' AND speaker = 'SPEAKER_01' AND accepted",
        ),
    ]
    qrows = []
    for name, q, pattern, extra in queries:
        hits = search(db, q)
        p50, p95 = timed(lambda: search(db, q))
        sql = f"SELECT recording_id, segment_index, text FROM segs WHERE text ILIKE ?{extra} LIMIT 50"
        found = len(con.execute(sql, [pattern]).fetchall())
        d50, d95 = timed(lambda: con.execute(sql, [pattern]).fetchall(), runs=5)
        qrows.append((name, len(hits), f"{p50:.1f} / {p95:.1f}", found, f"{d50:.0f} / {d95:.0f}"))

    print(
        f"\nsearch index over {total:,} segments (SQLite {sqlite3.sqlite_version} FTS5), "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| step | rows | time / size | target |\n| --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(
        "\n| query (50 rows at most) | index hits | index p50 / p95 ms | DuckDB ILIKE hits | DuckDB ILIKE p50 / p95 ms |"
    )
    print("| --- | --- | --- | --- | --- |")
    for r in qrows:
        print("| " + " | ".join(map(str, r)) + " |")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
