"""Every CLI command's exit code is its result, never a teardown abort: `status` and `export` read the
Delta tables with deltalake + pyarrow, whose thread pools could abort the interpreter's exit with
"terminate called without an active exception" (exit 134) after the right answer was printed
(pipeline/cli.py `exit_now`). 25 runs of each, four at a time (the abort hit 3 reads in 10: 25 clean
runs of a regression leave under one chance in 7,000), on one output holding 120 extra `recordings`
commits (a data file each: more files, more of Arrow's IO threads at exit)."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.exit_codes import add_commits
from tests.helpers.cli import run_cli

RUNS = 25


def _many_files(out, extra: int = 120) -> int:
    """`extra` one-row `recordings` commits (bench/exit_codes.py's); the table's rows after them."""
    from deltalake import DeltaTable

    add_commits(out, extra)
    return DeltaTable(str(out / "recordings")).to_pyarrow_table().num_rows


@pytest.mark.slow
def test_status_and_export_exit_with_their_result_every_time(shared_output, tmp_path):
    _, out = shared_output
    mine = tmp_path / "out"
    shutil.copytree(out, mine)
    rows = _many_files(mine)

    def status(_: int):
        return run_cli("status", str(mine))

    def export(k: int):
        return run_cli("export", str(mine), "--format", "nemo", "--to", str(tmp_path / f"nemo{k}"))

    with ThreadPoolExecutor(4) as pool:
        done = {"status": list(pool.map(status, range(RUNS))), "export": list(pool.map(export, range(RUNS)))}
    for command, results in done.items():
        codes = [r.returncode for r in results]
        assert codes == [0] * RUNS, (command, codes, [r.stderr[-300:] for r in results if r.returncode])
        assert not any("terminate called" in r.stderr for r in results)
    assert all(f"{rows} recordings committed" in r.stdout for r in done["status"])
    assert all(r.stdout.strip().endswith("manifest.jsonl") for r in done["export"])
