"""A full disk (or quota, or a store's 507) during a run (issue 32): one line that names it, exit 1,
the output's lock released, no temporary file left; the next run completes, each recording once.

The whole-run test fills a real (tmpfs) disk between a group's two commits, through the fault hook the
crash tests use (tests/sitecustomize_faults): it needs root for the mount and skips without it."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from pipeline.config import OutputConfig
from pipeline.errors import QuietStorageFull, is_transient, storage_full
from pipeline.ledger import LOCK_TABLE, Ledger, read_output
from tests.helpers import CORPUS, REPO
from tests.helpers.cli import run_argv

FAULT_HOOKS = REPO / "tests" / "sitecustomize_faults"
SIMULATED = [
    "recording_stage.vad.backend=simulated",
    "segment_stage.lid.backend=simulated",
    "segment_stage.asr.backend=simulated",
]
CLIPS = ["speechbrain_spk1_snt1.wav", "speechbrain_spk1_snt2.wav", "speechbrain_spk1_snt3.wav"]


class DeltaError(Exception):
    """Named as delta-rs's error is (`storage_full` looks at the text, as it must for delta-rs)."""


class RayTaskError(Exception):
    """A Ray task's error as the driver gets it: the worker's exception in `.cause`."""

    def __init__(self, cause: BaseException):
        super().__init__(f"ray::Write() failed: {type(cause).__name__}")
        self.cause = cause


def test_a_full_disk_or_store_is_recognised_and_never_retried():
    enospc = OSError(errno.ENOSPC, "No space left on device")
    delta = DeltaError(
        "Generic LocalFileSystem error: Unable to copy data to file: No space left on device (os error 28)"
    )
    for exc in (
        enospc,
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        delta,
        RayTaskError(enospc),
        DeltaError("HTTP status server error (507 Insufficient Storage) for url (http://store/b/k)"),
    ):
        assert storage_full(exc), exc
        assert not is_transient(exc), exc
    try:
        try:
            raise enospc
        except OSError as inner:
            raise RuntimeError("commit failed") from inner
    except RuntimeError as outer:
        assert storage_full(outer) == "No space left on device"
    assert storage_full(OSError(errno.EIO, "Input/output error")) is None
    assert is_transient(OSError(errno.EIO, "Input/output error"))  # an I/O error may pass; a full disk does not


def test_the_terminal_hears_of_a_full_disk_once():
    """Each layer a full disk goes through logs it with a traceback; the terminal shows none of them."""
    quiet = QuietStorageFull()

    def rec(name, level, msg, exc=None):
        return logging.LogRecord(name, level, __file__, 1, msg, None, (type(exc), exc, None) if exc else None)

    enospc = OSError(errno.ENOSPC, "No space left on device")
    assert not quiet.filter(rec("ray.data", logging.ERROR, "An exception was raised from a task", RayTaskError(enospc)))
    assert not quiet.filter(rec("ray.data", logging.ERROR, "Exception occurred in Ray Data or Ray Core internal code"))
    assert not quiet.filter(rec("pipeline.execution.sink", logging.ERROR, "group commit failed", enospc))
    assert quiet.filter(rec("pipeline.runner", logging.WARNING, "pooling: a window holds ..."))
    assert QuietStorageFull().filter(
        rec("ray.data", logging.ERROR, "Exception occurred in Ray Data or Ray Core internal code")
    )


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def _fill(folder: Path) -> Path:
    """Write zeros until the disk is full; the file that holds them."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(bytes(1 << 16))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@pytest.mark.slow
def test_a_disk_that_fills_during_the_commit_is_one_line_and_the_rerun_completes(tmp_path):
    disk = Path(tempfile.mkdtemp(prefix="full-", dir="/tmp"))
    if not _mount_tmpfs(disk, "16M"):
        os.rmdir(disk)
        pytest.skip("needs root to mount a small tmpfs")
    try:
        inp = tmp_path / "in"
        inp.mkdir()
        for c in CLIPS:
            shutil.copyfile(CORPUS / "speech" / c, inp / c)
        out = disk / "out"
        hold = tmp_path / "hold"
        hold.mkdir()
        ray_tmp = tempfile.mkdtemp(prefix="rf-", dir="/tmp")  # short: Ray's socket paths
        (tmp_path / "ray").symlink_to(ray_tmp)  # removed with tmp_path's cleanup
        env = dict(os.environ, RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="disabled", SCRIPTORIUM_TEST_HOLD_DIR=str(hold))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(FAULT_HOOKS), str(REPO), env.get("PYTHONPATH")) if p)
        cmd = run_argv(inp, out, *SIMULATED, "ray.num_cpus=2", "pooling.max_files=1", "output.commit_max_recordings=1")
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # the committer holds after its first `segments` commit: fill the disk, then let it commit `recordings`
        deadline = time.time() + 300
        while not any(hold.iterdir()) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert any(hold.iterdir()), "the committer never reached its first commit"
        filler = _fill(disk)
        for marker in hold.iterdir():
            marker.unlink()
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 1, stdout[-2000:] + stderr[-3000:]
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("scriptorium: run ") and "storage full (No space left on device)" in last, stderr[-3000:]
        assert "the output's lock is released" in last, last
        assert "Traceback" not in stderr and "panicked" not in stderr, stderr[-3000:]
        assert len([x for x in stderr.splitlines() if x.strip()]) <= 8, stderr
        assert list(out.rglob(".tmp-*")) == []
        assert Ledger(OutputConfig(uri=str(out))).table(LOCK_TABLE).to_pyarrow_table().num_rows == 0  # released
        # space again: the next run does the rest, each recording once
        filler.unlink()
        env.pop("SCRIPTORIUM_TEST_HOLD_DIR")
        again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        rec = read_output(OutputConfig(uri=str(out)), "recordings")
        ids = rec.column("recording_id").to_pylist()
        assert len(ids) == len(set(ids)) == len(CLIPS)
        segs = read_output(OutputConfig(uri=str(out)))
        keys = list(zip(segs.column("recording_id").to_pylist(), segs.column("segment_index").to_pylist()))
        assert len(keys) == len(set(keys)) and set(k[0] for k in keys) <= set(ids)
        assert list(out.rglob(".tmp-*")) == [] and not list(out.rglob("lock-reserve"))
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
        shutil.rmtree(disk, ignore_errors=True)
