"""Peak memory of an export against the output's size (issue 11: exports stream).

    .venv/bin/python bench/export_memory.py --recordings 2000,20000 --segments-per-recording 10

Synthesises a local output per size (committed `recordings` + `segments` with text and words, written
straight into the Delta tables, no models), then runs `scriptorium export --format nemo` on it in a
fresh subprocess and reports its wall time and peak memory (VmHWM). Streaming means the peak stays
about flat while the output grows.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def synthesise(out: Path, n: int, per: int) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    from pipeline.config import OutputConfig
    from pipeline.ledger import RECORDINGS_TABLE_SCHEMA, SEGMENTS_TABLE_SCHEMA, Ledger
    from pipeline.records import recording_id_for

    led = Ledger(OutputConfig(uri=str(out)))
    for i in range(0, n, 5000):
        uris = [f"/data/in/f{k:08d}.wav" for k in range(i, min(i + 5000, n))]
        rec = [
            {
                "recording_id": recording_id_for(u),
                "uri": u,
                "size": 1,
                "duration": per * 2.0,
                "status": "ok",
                "num_segments": per,
                "fingerprint": "fp",
                "run_id": "synth",
                "write_id": "w",
            }
            for u in uris
        ]
        words = [{"word": f" w{j}", "start": j * 0.3, "end": j * 0.3 + 0.2, "confidence": 0.9} for j in range(6)]
        seg = [
            {
                "recording_id": r["recording_id"],
                "uri": r["uri"],
                "segment_index": j,
                "start": j * 2.0,
                "end": j * 2.0 + 1.8,
                "duration": 1.8,
                "text": "a synthetic segment of six words",
                "words": words,
                "language": "en",
                "confidence": 0.9,
                "accepted": True,
                "reject_reasons": [],
                "fingerprint": "fp",
                "write_id": "w",
            }
            for r in rec
            for j in range(per)
        ]
        write_deltalake(
            led.table_uri("segments"), pa.Table.from_pylist(seg, schema=SEGMENTS_TABLE_SCHEMA), mode="append"
        )
        write_deltalake(
            led.table_uri("recordings"), pa.Table.from_pylist(rec, schema=RECORDINGS_TABLE_SCHEMA), mode="append"
        )


MEASURE = """
import sys, time
from pipeline.config import OutputConfig
from pipeline.export import export
from pipeline.records import peak_rss_mb
t0 = time.time()
export(OutputConfig(uri=sys.argv[1]), "nemo", sys.argv[2])
print(f"RESULT {time.time() - t0:.1f} {peak_rss_mb():.0f}")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recordings", default="2000,20000")
    ap.add_argument("--segments-per-recording", type=int, default=10)
    args = ap.parse_args()
    print("| recordings | segments | export wall s | peak MB |\n|---|---|---|---|")
    for n in (int(x) for x in args.recordings.split(",")):
        with tempfile.TemporaryDirectory(prefix="scriptorium-exportmem-") as tmp:
            t0 = time.time()
            synthesise(Path(tmp) / "out", n, args.segments_per_recording)
            print(f"  (synthesised in {time.time() - t0:.0f} s)", file=sys.stderr)
            proc = subprocess.run(
                [sys.executable, "-c", MEASURE, str(Path(tmp) / "out"), str(Path(tmp) / "nemo")],
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(proc.stderr[-3000:])
            wall, peak = line.split()[1:]
            print(f"| {n:,} | {n * args.segments_per_recording:,} | {wall} | {peak} |", flush=True)


if __name__ == "__main__":
    main()
