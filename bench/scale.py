"""Corpus-scale benchmark (issue 11): start-up cost of a nightly rerun against a big output.

    .venv/bin/python bench/scale.py                      # 10 k and 100 k committed recordings
    .venv/bin/python bench/scale.py --sizes 10000 --million   # add 1 M (manifest operations only, below)

On the loopback S3 server (moto, `ThreadedMotoServer` on 127.0.0.1), per size N:
  1. N tiny input objects under s3://scale/in-N/ and a manifest of them (with and without size and
     duration on each line), and N committed recordings synthesised straight into the output's
     Delta tables (`recordings` + one `segments` row each, in commits of --chunk rows; no models),
     with the quality rules a run records (else the first no-op run re-judges every segment).
     At 1 M (--million) no input objects are made (moto keeps each object in a temporary file and
     lists a bucket in O(N) per 1,000-key page) and only the manifest operations are measured.
  2. Each measured operation runs in a fresh subprocess; its peak memory is the driver's (VmHWM,
     not ru_maxrss, which Linux carries over from the big parent across fork + exec):
       listing      discover() of the folder (the listing itself)
       manifest     discover() of a manifest that gives size + duration (trusted: no request per line)
       manifest-head discover() of a manifest of bare paths (one HEAD per line, 64 in flight)
       plan         the column-projected read of `recordings` + Ledger.plan (all skipped)
       no-op run    pipeline.runner.run on the unchanged input (discover + lock + plan + report)
       no-op run (manifest)  the same with the trusted manifest as its input
       status       pipeline.status.status_data (reads `recordings`, lists the input, plans)
  3. A table: seconds and peak RSS per operation and size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
OPS = [
    "listing",
    "manifest",
    "manifest-head",
    "plan",
    "no-op run",
    "no-op run (manifest)",
    "status",
    "commit",
    "maintain",
    "plan after maintain",
    "commit after maintain",
]
#: What is measured at 1 M: no input objects exist there (see the docstring).
MILLION_OPS = ["manifest", "plan", "no-op run (manifest)"]


def _cfg(endpoint: str, n: int, manifest: str | None = None):
    from pipeline.config import load_config

    inp = manifest or f"s3://scale/in-{n}/"
    return load_config(
        REPO / "conf" / "local.yaml",
        [
            f"input.uri={inp}",
            f"output.uri=s3://scale/out-{n}",
            f"input.storage.endpoint_url={endpoint}",
            f"output.storage.endpoint_url={endpoint}",
        ],
    )


def _fingerprint(cfg) -> str:
    """The job's fingerprint, as the runner computes it."""
    from pipeline.fingerprint import job_fingerprint
    from pipeline.vocabulary import resolve

    return job_fingerprint(cfg, resolve(cfg.segment_stage.vocabulary))


def synthesise(endpoint: str, n: int, chunk: int, head_lines: int, objects: bool = True) -> None:
    """Input objects (unless not `objects`), manifests and N committed recordings (the commits a run
    would have made)."""
    import pyarrow as pa
    import s3fs

    from pipeline.ledger import Ledger
    from pipeline.records import recording_id_for

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
    if not fs.exists("scale"):
        fs.mkdir("scale")
    cfg = _cfg(endpoint, n)
    fp = _fingerprint(cfg)
    t0 = time.time()
    bodies = {f"scale/in-{n}/f{i:07d}.wav": f"RIFF{i:012d}".encode() for i in range(n)}
    if objects:
        # Straight into the in-process moto backend: uploading 100 k objects over HTTP takes longer than
        # everything measured here; the listing and HEADs measured below do go over HTTP.
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
        for key, body in bodies.items():
            backend.put_object("scale", key.split("/", 1)[1], body, disable_notification=True)
    uris = [f"s3://{k}" for k in bodies]
    trusted = "\n".join(
        json.dumps({"audio_filepath": u, "size": len(b), "duration": 1.0, "etag": hashlib.md5(b).hexdigest()})
        for u, b in zip(uris, bodies.values())
    )
    fs.pipe_file(f"scale/in-{n}.jsonl", trusted.encode())
    del trusted
    bare = "\n".join(json.dumps({"audio_filepath": u}) for u in uris[:head_lines])
    fs.pipe_file(f"scale/in-{n}-bare.jsonl", bare.encode())
    print(f"  {n}: {n if objects else 0} objects + manifests in {time.time() - t0:.1f} s", flush=True)
    t0 = time.time()
    led = Ledger(cfg.output)
    from deltalake import write_deltalake

    from pipeline.ledger import RECORDINGS_TABLE_SCHEMA, SEGMENTS_TABLE_SCHEMA

    now = int(time.time() * 1e6)
    for i in range(0, n, chunk):
        part = list(zip(uris[i : i + chunk], list(bodies.values())[i : i + chunk]))
        wid = f"20260101T000000-synth-{i:07d}"
        rec = [
            {
                "recording_id": recording_id_for(u),
                "uri": u,
                "size": len(b),
                "etag": hashlib.md5(b).hexdigest(),
                "duration": 1.0,
                "status": "ok",
                "num_segments": 1,
                "fingerprint": fp,
                "mtime": None,
                "run_id": "20260101T000000-synth",
                "write_id": wid,
                "committed_at": now,
            }
            for u, b in part
        ]
        seg = [
            {
                "recording_id": r["recording_id"],
                "uri": r["uri"],
                "segment_index": 0,
                "start": 0.0,
                "end": 1.0,
                "duration": 1.0,
                "text": "synthetic",
                "words": [],
                "accepted": True,
                "reject_reasons": [],
                "fingerprint": fp,
                "write_id": wid,
            }
            for r in rec
        ]
        # plain appends (the ids are new): synthesis, not what is measured; "commit" below is a real one
        write_deltalake(
            led.table_uri("segments"),
            pa.Table.from_pylist(seg, schema=SEGMENTS_TABLE_SCHEMA),
            mode="append",
            storage_options=led.options,
        )
        write_deltalake(
            led.table_uri("recordings"),
            pa.Table.from_pylist(rec, schema=RECORDINGS_TABLE_SCHEMA),
            mode="append",
            storage_options=led.options,
        )
    from pipeline.filter import record_rules

    record_rules(cfg.output, cfg.segment_stage.quality, "run")  # what a run leaves beside its commits
    print(
        f"  {n}: {n} recordings committed in {-(-n // chunk)} commits per table in {time.time() - t0:.1f} s", flush=True
    )


def _cpu() -> float:
    """This process's CPU seconds: our own code's cost, less sensitive than wall time to a loaded
    machine (the S3 server's work is in the parent process, not here)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(endpoint: str, n: int, op: str) -> dict:
    """One operation, in this (fresh) process: wall seconds and the process's peak RSS."""
    from pipeline.discover import discover_table as discover
    from pipeline.ledger import Ledger
    from pipeline.records import peak_rss_mb

    cfg = _cfg(endpoint, n)
    if op.startswith("commit"):  # imports (Ray Data) are not what is measured
        import pipeline.sink  # noqa: F401
        import pipeline.stages.segment  # noqa: F401
    t0, c0 = time.time(), _cpu()
    out: dict = {}
    if op == "listing":
        out["files"] = discover(cfg.input).num_rows
    elif op == "manifest":
        out["files"] = discover(_cfg(endpoint, n, f"s3://scale/in-{n}.jsonl").input).num_rows
    elif op == "manifest-head":
        out["files"] = discover(_cfg(endpoint, n, f"s3://scale/in-{n}-bare.jsonl").input).num_rows
    elif op.startswith("commit"):
        out["files_before"] = _commit_new_block(cfg, op)
    elif op == "maintain":
        from pipeline.ledger import maintain

        done = maintain(cfg.output)
        out.update(recordings_files=done["recordings"]["files_after"], segments_files=done["segments"]["files_after"])
    elif op.startswith("plan"):
        files = discover(_cfg(endpoint, n, f"s3://scale/in-{n}.jsonl").input)
        t0, c0 = time.time(), _cpu()  # the plan alone: one read of `recordings` + the comparison
        _, counts = Ledger(cfg.output).plan(files, _fingerprint(cfg))
        out.update(counts)
    elif op.startswith("no-op run"):
        from pipeline.runner import run

        r = run(_cfg(endpoint, n, f"s3://scale/in-{n}.jsonl") if "manifest" in op else cfg)
        out.update(skipped=r.skipped, processed=r.processed)
    elif op == "status":
        from pipeline.status import status_data

        d = status_data(
            cfg.output.uri,
            str(REPO / "conf" / "local.yaml"),
            [
                f"input.uri={cfg.input.uri}",
                f"input.storage.endpoint_url={endpoint}",
                f"output.storage.endpoint_url={endpoint}",
            ],
        )
        out.update(committed=d["committed"], skipped=d["rerun"]["skipped"])
    out.update(seconds=time.time() - t0, cpu_seconds=_cpu() - c0, peak_rss_mb=peak_rss_mb())
    return out


def _commit_new_block(cfg, tag: str) -> int:
    """What one write task does for 16 new recordings: both commits (predicate overwrite)."""
    import pyarrow as pa

    from pipeline.execution.sink import flatten
    from pipeline.ledger import Ledger
    from pipeline.records import TRANSCRIBED_SCHEMA

    rows = [
        {
            "recording_id": hashlib.sha1(f"{tag}{i}".encode()).hexdigest()[:16],
            "uri": f"s3://new/{tag}{i}.wav",
            "size": 1,
            "status": "ok",
            "duration": 1.0,
            "segments": [{"segment_index": 0, "start": 0.0, "end": 1.0, "text": "x"}],
        }
        for i in range(16)
    ]
    led = Ledger(cfg.output)
    files = len(led.table("recordings").file_uris())
    seg, rec = flatten(pa.Table.from_pylist(rows, schema=TRANSCRIBED_SCHEMA), _fingerprint(cfg), "bench", tag)
    ids = [r["recording_id"] for r in rows]
    led.commit_table("segments", seg, ids, f"bench-{tag}")
    led.commit_table("recordings", rec, ids, f"bench-{tag}")
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument(
        "--million", action="store_true", help=f"add 1,000,000 (no input objects; only {', '.join(MILLION_OPS)})"
    )
    ap.add_argument("--chunk", type=int, default=2000, help="recordings per synthesised commit")
    ap.add_argument("--head-lines", type=int, default=1000, help="lines of the bare manifest (one HEAD each)")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--_measure", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.update({k: os.environ.get(k, v) for k, v in CREDS.items()})
    if args._measure:
        endpoint, n, op = args._measure
        print("RESULT " + json.dumps(measure(endpoint, int(n), op)), flush=True)
        return
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as sock:  # a free port on the loopback
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    sizes = [int(s) for s in args.sizes.split(",")] + ([1_000_000] if args.million else [])
    results: dict = {}
    # each measured operation imports this checkout's `pipeline` (the repository root first on its path)
    env = dict(
        os.environ,
        RAY_AUTH_MODE="disabled",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    )
    try:
        for n in sizes:
            million = n >= 1_000_000
            synthesise(
                endpoint,
                n,
                max(args.chunk, 100_000) if million else args.chunk,
                min(args.head_lines, n),
                objects=not million,
            )
            for op in args.ops.split(","):
                if million and op not in MILLION_OPS:
                    continue
                proc = subprocess.run(
                    [sys.executable, __file__, "--_measure", endpoint, str(n), op],
                    capture_output=True,
                    text=True,
                    cwd=REPO,
                    env=env,
                )
                line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"{op} at {n} failed")
                results[(n, op)] = json.loads(line[7:])
                print(f"  {n} {op}: {results[(n, op)]}", flush=True)
    finally:
        server.stop()
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| operation | " + " | ".join(f"{n:,}: wall s | CPU s | peak RSS MB" for n in sizes) + " |")
    print("|---|" + "---|---|---|" * len(sizes))
    for op in args.ops.split(","):
        cells = []
        for n in sizes:
            r = results.get((n, op))
            cells += [f"{r['seconds']:.2f}", f"{r['cpu_seconds']:.2f}", f"{r['peak_rss_mb']:.0f}"] if r else ["—"] * 3
        label = op if op != "manifest-head" else f"manifest-head (first {args.head_lines:,} lines at most)"
        print(f"| {label} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{n}:{op}": r for (n, op), r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
