"""Faults and secrets (issue 32): a pinned Whisper folder covers every file, credentials never reach
what a run writes or prints, a stalled store fails fast, damaged tables are noticed."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import LOCAL_CONF
from tests.helpers.cli import cli_inproc


def _flip(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))


def _folder_digest_by_shell(folder: Path) -> str:
    """The documented command (pipeline.models.FOLDER_SHA256_COMMAND), run by the shell, not by us."""
    from pipeline.models import FOLDER_SHA256_COMMAND

    out = subprocess.run(
        ["bash", "-c", FOLDER_SHA256_COMMAND.replace("DIR", f"'{folder}'")], capture_output=True, text=True, check=True
    )
    return out.stdout.split()[0]


def test_require_sha256_covers_whisper_folders(tmp_path, monkeypatch, corpus):
    """A copy of the Whisper folder with one byte flipped: unpinned under models.require_sha256 it is
    refused (exit 2, one line, with the digest to pin); pinned to the original folder it is refused as a
    mismatch; the digest is the documented shell command's. A flipped tokenizer byte is caught too."""
    from pipeline.backends.whisper import EMBEDDED, embedded_model_dir

    monkeypatch.setenv("SCRIPTORIUM_DIGEST_CACHE", str(tmp_path / "digests"))
    original = embedded_model_dir("base")
    pin = _folder_digest_by_shell(original)
    assert pin == EMBEDDED["base"]["folder_sha256"]
    copy = tmp_path / "whisper-copy"
    shutil.copytree(original, copy)
    audio = tmp_path / "in"
    audio.mkdir()
    shutil.copy(corpus / "speech" / "whisper_jfk.flac", audio)

    def run(*extra: str):
        return cli_inproc(
            "run", str(LOCAL_CONF), f"input.uri={audio}", f"output.uri={tmp_path / 'out'}",
            f"segment_stage.asr.model={copy}", *extra,
        )  # fmt: skip

    # an intact copy, pinned to the folder digest: preflight passes the models (the run itself is not needed)
    from pipeline.backends.whisper import resolve_whisper_model
    from pipeline.config import AsrConfig, ModelsConfig

    strict = ModelsConfig(require_sha256=True)
    assert resolve_whisper_model(AsrConfig(model=str(copy), sha256=pin.upper()), strict) == str(copy)
    _flip(copy / "model.bin", 4096)
    res = run("models.require_sha256=true")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no sha256" in lines[0] and "require_sha256" in lines[0], lines
    assert _folder_digest_by_shell(copy) in lines[0]  # the digest to pin, if the folder is trusted
    res = run("models.require_sha256=true", f"segment_stage.asr.sha256={pin}")
    assert res.returncode == 2 and "does not match its sha256" in res.stderr and pin in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    # the older pin (model.bin's digest alone) is not enough where every file must be covered
    _flip(copy / "model.bin", 4096)  # back to the original weights
    _flip(copy / "tokenizer.json", 100)
    res = run("models.require_sha256=true", f"segment_stage.asr.sha256={EMBEDDED['base']['sha256']}")
    assert res.returncode == 2 and "pins" in res.stderr and "model.bin only" in res.stderr, res.stderr
    res = run(f"segment_stage.asr.sha256={pin}")
    assert res.returncode == 2 and "does not match its sha256" in res.stderr, res.stderr
    assert hashlib.sha256((copy / "model.bin").read_bytes()).hexdigest() == EMBEDDED["base"]["sha256"]


SIMULATED = [
    "recording_stage.vad.backend=simulated",
    "segment_stage.lid.backend=simulated",
    "segment_stage.asr.backend=simulated",
]
KEY, SECRET = "AKIAFAULTSKEY0042", "s3cr3t/Wv9+zQ"  # a '/' and a '+': written percent-encoded in URIs


def _every_byte(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


@pytest.mark.slow
def test_credentials_in_uris_reach_nothing_a_run_writes_or_prints(corpus, s3_endpoint, tmp_path):
    """`input.uri=s3://KEY:SECRET@bucket/manifest.jsonl` whose entries carry the credentials too: at the
    default verbosity, -v and --debug, every run exits 0 and neither the key nor the secret (as written
    or percent-encoded) is in any byte of the output folder (tables, Delta log statistics, report.json,
    report.html, _ledger/runs) nor in what the CLI printed."""
    import json
    from urllib.parse import quote

    import s3fs

    from tests.helpers.cli import run_cli

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir("secrets")
    clips = ["speech/whisper_jfk.flac", "multilingual/fleurs-fr-002.ogg"]
    for rel in clips:
        fs.put_file(str(corpus / rel), f"secrets/in/{Path(rel).name}")
    userinfo = f"{quote(KEY, safe='')}:{quote(SECRET, safe='')}"
    lines = [
        {"audio_filepath": f"s3://{userinfo}@secrets/in/{Path(clips[0]).name}"},
        {"audio_filepath": f"in/{Path(clips[1]).name}"},
    ]
    fs.pipe_file("secrets/manifest.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode())
    needles = {KEY, SECRET, quote(SECRET, safe=""), userinfo}
    for n, flags in enumerate([(), ("-v",), ("--debug",)]):
        out = tmp_path / f"out{n}"
        res = run_cli(
            *flags, "run", str(LOCAL_CONF), f"input.uri=s3://{userinfo}@secrets/manifest.jsonl",
            f"input.storage={{endpoint_url: '{s3_endpoint}'}}", f"output.uri={out}", *SIMULATED,
            timeout=300,
        )  # fmt: skip
        printed = res.stdout + res.stderr
        assert res.returncode == 0, (flags, printed[-3000:])
        assert "error 0" in res.stdout, res.stdout
        written = _every_byte(out)
        for needle in needles:
            assert needle not in printed, (flags, needle, [x for x in printed.splitlines() if needle in x][:3])
            assert needle.encode() not in written, (flags, needle)
        assert f"s3://secrets/in/{Path(clips[0]).name}".encode() in written  # stored, without its user info
    assert "DEBUG" in printed  # --debug printed the libraries' debug lines, redacted


class _Silent:
    """A TCP server that accepts every connection and never answers a byte."""

    def __init__(self):
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list = []
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.held.append(conn)  # kept open, never read or written

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


def test_a_stalled_store_is_one_line_and_exit_2_in_bounded_time(tmp_path):
    """A store that accepts connections and never answers, as input.storage.endpoint_url: one line,
    exit 2, after at most S3_ATTEMPTS x S3FS_RETRIES read timeouts (2 s here; the defaults, asserted
    below, bound it to ~60 s: within the 120 s target)."""
    import time

    from pipeline.config import StorageOptions
    from pipeline.storage import S3_ATTEMPTS, S3FS_RETRIES

    defaults = StorageOptions()
    assert 5 <= defaults.connect_timeout_s <= 10 and 30 <= defaults.read_timeout_s <= 60
    attempts = S3_ATTEMPTS * S3FS_RETRIES
    assert attempts * (defaults.read_timeout_s + 1) <= 120  # the worst case of one request, with defaults
    srv = _Silent()
    try:
        t0 = time.monotonic()
        res = cli_inproc(
            "run", str(LOCAL_CONF), "input.uri=s3://stalled/in/", f"output.uri={tmp_path / 'out'}",
            f"input.storage={{endpoint_url: 'http://127.0.0.1:{srv.port}', read_timeout_s: 2, connect_timeout_s: 1}}",
            *SIMULATED,
        )  # fmt: skip
        took = time.monotonic() - t0
    finally:
        srv.close()
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "input s3://stalled/in/" in lines[0] and "timeout" in lines[0].lower(), lines
    assert took < attempts * 2 + 20, took  # no retry loop beyond the request budget (2 s each; the rest is start-up)
    assert 1 <= srv.accepted <= attempts, srv.accepted


def test_a_deleted_s3_input_is_not_found_at_once(s3_endpoint):
    """A key deleted after listing, read without prefetch: 'not found' on the first answer (a 404 is
    botocore's ClientError, which has no `.status`), not four attempts with backoff."""
    import time

    import s3fs

    from pipeline.config import DecodeConfig, StorageOptions
    from pipeline.stages.decode import decode_one

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir("gone")
    t0 = time.monotonic()
    row = decode_one("s3://gone/deleted.wav", DecodeConfig(), StorageOptions(endpoint_url=s3_endpoint))
    assert row["status"] == "error" and "not found" in row["error"], row
    assert time.monotonic() - t0 < 1.5  # the retries' sleeps alone would be 0.4 + 0.8 + 1.6 s


@pytest.mark.ray
@pytest.mark.slow
def test_damaged_tables_are_reported_and_a_run_redoes_what_was_lost(corpus, tmp_path):
    """One `segments` Parquet file cut in half: `status` says so in one line per file (exit 2), and the
    next `run` moves it aside, redoes the recordings whose rows it held and leaves a readable table.
    The newest `recordings` log entry deleted: `status` reports a version gap, and a run redoes it."""
    from deltalake import DeltaTable

    from pipeline.config import load_config
    from pipeline.ledger import OutputError, read_output
    from pipeline.runner import run

    src = tmp_path / "in"
    src.mkdir()
    for p in sorted((corpus / "speech").glob("speechbrain_spk1_snt*.wav"))[:4]:
        shutil.copyfile(p, src / p.name)
    out = tmp_path / "out"
    cfg = lambda: load_config(  # noqa: E731 - a fresh config per run (discovery rewrites input.uri)
        LOCAL_CONF,
        [f"input.uri={src}", f"output.uri={out}", "ray.num_cpus=2", "pooling.max_files=1",
         "output.commit_max_recordings=1", *SIMULATED],
    )  # fmt: skip
    first = run(cfg())
    assert first.ok == 4, first
    segs = DeltaTable(str(out / "segments"))
    victim = Path(sorted(segs.file_uris())[0])
    import pyarrow.parquet as pq

    lost_ids = set(pq.read_table(victim, columns=["recording_id"]).column("recording_id").to_pylist())
    assert lost_ids
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])

    res = cli_inproc("status", str(out))
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert any("damaged data file" in x and victim.name in x for x in lines) and len(lines) == 2, lines

    res = cli_inproc("maintain", str(out), "--verify")  # every file read whole: the same file, exit 2
    assert res.returncode == 2 and victim.name in res.stderr and len(res.stderr.strip().splitlines()) == 1, res

    second = run(cfg())
    assert any("damaged" in w for w in second.warnings), second.warnings
    assert (second.ok, second.skipped) == (len(lost_ids), 4 - len(lost_ids)), second
    assert (out / "_scriptorium" / "damaged" / "segments" / victim.name).exists()
    recs = read_output(cfg().output, "recordings").to_pylist()
    segs_after = read_output(cfg().output, "segments")  # readable again, and whole
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs)
    assert {r["recording_id"] for r in recs if r["num_segments"]} == set(segs_after.column("recording_id").to_pylist())
    res = cli_inproc("status", str(out))
    assert res.returncode == 0 and "damaged data file" not in res.stdout and "4 recordings committed" in res.stdout, res

    res = cli_inproc("maintain", str(out), "--verify")
    assert res.returncode == 0 and "segments version" in res.stdout and "whole" in res.stdout, res

    log = sorted((out / "recordings" / "_delta_log").glob("*.json"))
    log[-1].unlink()  # the newest log entry: its recording's row is gone, and nothing else says so
    res = cli_inproc("status", str(out))
    assert res.returncode == 0 and "version gap" in res.stdout and "3 recordings committed" in res.stdout, res.stdout
    third = run(cfg())
    assert third.ok == 1, third
    res = cli_inproc("status", str(out))
    assert "version gap" not in res.stdout and "4 recordings committed" in res.stdout, res.stdout

    middle = sorted((out / "recordings" / "_delta_log").glob("*.json"))[2]
    kept = middle.read_bytes()
    middle.unlink()  # a gap delta-rs cannot replay: said in one line each, exit 2, nothing written over it
    res = cli_inproc("status", str(out))
    assert res.returncode == 2 and "version gap" in res.stderr and "log cannot be read" in res.stderr, res
    with pytest.raises(OutputError, match="version gap"):
        run(cfg())
    middle.write_bytes(kept)
    assert cli_inproc("status", str(out)).returncode == 0


def test_a_stalled_host_in_a_manifest_is_that_entrys_error_row(corpus, tmp_path):
    """An allowed `http://` manifest entry on a host that never answers: after STALLED_ENTRY_ATTEMPTS
    read timeouts it is listed with its error (the run records it as an error row) and the local entry
    beside it is listed as usual; as the run's input, the same host is one line saying it cannot be reached."""
    import json
    import time

    from pipeline.config import InputConfig, StorageOptions
    from pipeline.discover import STALLED_ENTRY_ATTEMPTS, discover
    from pipeline.preflight import check_input

    srv = _Silent()
    try:
        shutil.copy(corpus / "speech" / "whisper_jfk.flac", tmp_path / "good.flac")
        far = f"http://127.0.0.1:{srv.port}/a.wav"
        manifest = tmp_path / "m.jsonl"
        manifest.write_text(
            json.dumps({"audio_filepath": far}) + "\n" + json.dumps({"audio_filepath": "good.flac"}) + "\n"
        )
        storage = StorageOptions(connect_timeout_s=1, read_timeout_s=1)
        cfg = InputConfig(uri=str(manifest), storage=storage, allowed_roots=[f"http://127.0.0.1:{srv.port}/"])
        t0 = time.monotonic()
        found = {f.uri: f for f in discover(cfg)}
        assert time.monotonic() - t0 < STALLED_ENTRY_ATTEMPTS * 2 * 1 + 5
        assert "cannot be reached" in (found[far].error or ""), found[far]
        assert found[str(tmp_path / "good.flac")].error is None and found[str(tmp_path / "good.flac")].size > 0
        (line,) = check_input(InputConfig(uri=far, storage=storage))
        assert "cannot be reached" in line and "Timeout" in line, line
    finally:
        srv.close()


def test_one_redaction_covers_log_records_tracebacks_and_streams():
    """The pieces `pipeline.redact.install` puts in place, on a secret seen in a URI: a third-party
    logger's message and its traceback, and a line written straight to a stream, all come out redacted."""
    import io
    import logging

    from pipeline.redact import RedactingFilter, RedactingStream
    from pipeline.storage import split_userinfo

    clean, creds = split_userinfo("s3://AKIAREDACTME77:pl41n%2Bsecret@bkt/in/a.wav")
    assert clean == "s3://bkt/in/a.wav" and creds == ("AKIAREDACTME77", "pl41n+secret")
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(RedactingFilter())
    lib = logging.getLogger("botocore.fake")
    lib.addHandler(handler)
    try:
        try:
            raise ValueError("bucket AKIAREDACTME77:pl41n+secret@bkt is invalid")
        except ValueError:
            lib.error("call failed for key %s", "AKIAREDACTME77", exc_info=True)
    finally:
        lib.removeHandler(handler)
    stream_out = io.StringIO()
    stream = RedactingStream(stream_out)
    stream.write("Traceback ... secret=pl41n+secret and pl41n%2Bsecret\npartial pl41n")
    stream.write("+secret end\n")
    stream.flush()
    for text in (buf.getvalue(), stream_out.getvalue()):
        assert "AKIAREDACTME77" not in text and "pl41n+secret" not in text and "pl41n%2Bsecret" not in text, text
        assert "***" in text
    assert "ValueError" in buf.getvalue()  # the traceback is kept, redacted


def test_a_store_that_fails_a_footer_read_is_not_damage(tmp_path):
    """A footer read that meets a dropped connection is tried again; one that keeps failing raises the
    store's error. Neither calls a good file damaged (which would move its rows aside), while a file
    whose bytes are not Parquet still is."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.ledger.integrity import _footer

    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), good)
    bad.write_bytes(b"PAR1" + b"\0" * 64)

    class Flaky:
        """A filesystem whose first `fails` reads drop the connection."""

        def __init__(self, fails: int) -> None:
            self.fails, self.reads = fails, 0

        def open(self, path: str, mode: str):
            outer = self

            class F(io.FileIO):
                def read(self, *args):
                    outer.reads += 1
                    if outer.reads <= outer.fails:
                        raise ConnectionError("connection dropped")
                    return super().read(*args)

            return F(path, mode)

    flaky = Flaky(2)
    assert _footer(flaky, str(good)) is None and flaky.reads > 2
    with pytest.raises(ConnectionError):
        _footer(Flaky(10**6), str(good))
    assert _footer(Flaky(0), str(bad)).startswith("unreadable: ArrowInvalid")
    assert _footer(Flaky(0), str(tmp_path / "gone.parquet")) == "missing"
