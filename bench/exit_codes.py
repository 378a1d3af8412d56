"""Exit codes of reads of an output: how often each way of reading `recordings` aborts at interpreter
exit ("terminate called without an active exception", exit 134) after printing the right answer.

    .venv/bin/python bench/exit_codes.py OUTPUT [--runs 60] [--extra 120] [--parallel 3]

OUTPUT is a Scriptorium output (copied first; `--extra` more `recordings` commits, one data file each,
are added to the copy: more files, more of Arrow's IO threads alive at exit). Each row runs a fresh
interpreter `--runs` times, `--parallel` at once (a busy machine makes the race likelier), and counts
the exit codes (an abort: SIGABRT, which a shell shows as 134). Rows: deltalake's own filesystem (the default) through pyarrow, deltalake with a pyarrow
native filesystem (the README's recipe), Polars, DuckDB over the table's file list, `scriptorium status`
as before (the interpreter's teardown) and as now (`pipeline.cli.exit_now`).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

READS = {
    "deltalake default fs -> pyarrow -> pandas": (
        "import sys\nfrom deltalake import DeltaTable\nprint(len(DeltaTable(sys.argv[1] + '/recordings').to_pandas()))"
    ),
    "deltalake + pyarrow native fs (README)": (
        "import sys\nfrom pyarrow import fs\nfrom deltalake import DeltaTable\np = sys.argv[1] + '/recordings'\n"
        "t = DeltaTable(p).to_pyarrow_table(filesystem=fs.SubTreeFileSystem(p, fs.LocalFileSystem()))\n"
        "print(len(t.to_pandas()))"
    ),
    "polars read_delta (README)": "import sys\nimport polars as pl\nprint(pl.read_delta(sys.argv[1] + '/recordings').height)",
    "duckdb over file_uris (README)": (
        "import sys\nimport duckdb\nfrom deltalake import DeltaTable\n"
        "files = DeltaTable(sys.argv[1] + '/recordings').file_uris()\n"
        "print(duckdb.read_parquet(files).aggregate('count(*)').fetchall())"
    ),
    "scriptorium status, interpreter teardown (before)": (
        "import sys\nfrom pipeline.cli import main\nsys.exit(main(['status', sys.argv[1]]))"
    ),
    "scriptorium status, exit_now (now)": "import sys\nfrom pipeline.cli import main\nsys.argv[1:] = ['status', sys.argv[1]]\nmain()",
}


def add_commits(out: Path, extra: int) -> None:
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    path = str(out / "recordings")
    row = DeltaTable(path).to_pyarrow_table().slice(0, 1)
    for k in range(extra):
        r = row.set_column(row.schema.get_field_index("recording_id"), "recording_id", pa.array([f"extra-{k}"]))
        r = r.set_column(r.schema.get_field_index("uri"), "uri", pa.array([f"/nowhere/extra-{k}.wav"]))
        write_deltalake(path, r, mode="append")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--extra", type=int, default=120)
    ap.add_argument("--parallel", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="exit-codes-"))
    out = tmp / "out"
    shutil.copytree(args.output, out)
    add_commits(out, args.extra)
    print(f"{'read':<52}{'runs':>6}{'exit 0':>8}{'abort (134)':>13}{'other':>7}")
    for name, code in READS.items():

        def once(_: int, code: str = code) -> int:
            cmd = [sys.executable, "-c", code, str(out)]
            code = subprocess.run(cmd, capture_output=True, cwd=REPO, timeout=300).returncode
            return 134 if code == -6 else code  # killed by SIGABRT

        with ThreadPoolExecutor(args.parallel) as pool:
            codes = collections.Counter(pool.map(once, range(args.runs)))
        other = args.runs - codes[0] - codes[134]
        print(f"{name:<52}{args.runs:>6}{codes[0]:>8}{codes[134]:>13}{other:>7}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
