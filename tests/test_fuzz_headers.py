"""Issue 18: header fuzzing. Real files of ../shared/corpus (WAV, FLAC, MP3, Ogg Vorbis/Opus) with
their headers mutated (bit flips, length/rate/channel fields set to 0 or to their maximum, bytes cut
out) go through the decode stage (`decode_batch`, no Ray) in a subprocess. Asserted: no hang (each
case and the whole run have deadlines), no crash (the process exits normally, every case is one row
with status ok or error and an error row has a message), and peak memory under a stated bound.

Bounded: FUZZ_CASES cases per format from a fixed seed (reproducible), decode.max_duration_s=600, so
no case may hold more than 600 s x 64 KB/s = 38 MB of samples whatever its header claims.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
SEEDS = [
    CORPUS / "speech" / "speechbrain_spk1_snt2.wav",
    CORPUS / "speech" / "whisper_jfk.flac",
    CORPUS / "speech" / "silerovad_test.mp3",
    CORPUS / "multilingual" / "fleurs-de-000.ogg",
    CORPUS / "negative" / "silerovad_test.opus",
]
FUZZ_CASES = 40  # per seed file: 200 in all
#: VmHWM growth allowed over the process's own baseline (imports done): the 600 s limit's 38 MB of
#: samples, PyAV/FFmpeg's buffers and Arrow's copy of the batch
PEAK_BOUND_MB = 250
CASE_DEADLINE_S = 20.0

_FUZZ = r"""
import json, os, random, signal, struct, sys, time
import pyarrow as pa
from pipeline.config import DecodeConfig, StorageOptions
from pipeline.records import INPUT_SCHEMA
from pipeline.stages.decode import decode_batch

def vm(key):
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key)) / 1024

def mutate(data, rng):
    b = bytearray(data)
    head = min(len(b), 512)
    kind = rng.randrange(5)
    if kind == 0:  # flip a few bits in the header
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(head); b[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # a 32-bit field to an extreme
        i = rng.randrange(max(1, head - 4))
        b[i:i + 4] = struct.pack("<I", rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000]))
    elif kind == 2:  # a 16-bit field (channels, bits, block sizes) to an extreme
        i = rng.randrange(max(1, head - 2))
        b[i:i + 2] = struct.pack("<H", rng.choice([0, 1, 0xFFFF, 0x8000]))
    elif kind == 3:  # random bytes over a header stretch
        i = rng.randrange(head); n = rng.randint(1, 32)
        b[i:i + n] = bytes(rng.randrange(256) for _ in range(n))
    else:  # bytes cut out of the header, and the file maybe cut short too
        i = rng.randrange(head); n = rng.randint(1, 64)
        del b[i:i + n]
        if rng.random() < 0.5:
            del b[rng.randrange(len(b) // 2, len(b)):]
    return bytes(b)

out_dir, cases, seeds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rng = random.Random(18)
cfg, st = DecodeConfig(max_duration_s=600), StorageOptions()
base = vm('VmRSS'); worst = 0.0; results = []
def on_alarm(*_):
    raise SystemExit(f"HANG: {current}")
signal.signal(signal.SIGALRM, on_alarm)
for seed in seeds:
    data = open(seed, 'rb').read()
    ext = seed.rsplit('.', 1)[-1]
    for k in range(cases):
        path = os.path.join(out_dir, f"{os.path.basename(seed)}.{k}.{ext}")
        with open(path, 'wb') as f:
            f.write(mutate(data, rng))
        current = path
        signal.alarm(int(%(deadline)s))
        t0 = time.time()
        row = {"recording_id": "x", "uri": path, "size": 0, "etag": None, "mtime": None, "refused": None}
        t = decode_batch(pa.Table.from_pylist([row], schema=INPUT_SCHEMA), cfg, st)
        signal.alarm(0)
        r = t.drop_columns(["audio"]).to_pylist()[0]
        results.append({"case": os.path.basename(path), "status": r["status"], "error": r["error"],
                        "duration": r["duration"], "seconds": time.time() - t0})
        del t
        os.unlink(path)
print(json.dumps({"results": results, "base_mb": base, "peak_mb": vm('VmHWM')}))
""" % {"deadline": CASE_DEADLINE_S}


def test_fuzzed_headers_never_hang_crash_or_balloon(tmp_path):
    seeds = [str(p) for p in SEEDS if p.exists()]
    if len(seeds) < 4:
        pytest.fail(f"the shared corpus is missing its seed files: {SEEDS}")
    p = subprocess.run([sys.executable, "-c", _FUZZ, str(tmp_path), str(FUZZ_CASES), *seeds], cwd=REPO,
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, f"decode crashed or hung (rc {p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    out = json.loads(p.stdout.strip().splitlines()[-1])
    results = out["results"]
    assert len(results) == FUZZ_CASES * len(seeds)
    bad = [r for r in results if r["status"] not in ("ok", "error") or (r["status"] == "error" and not r["error"])]
    assert not bad, bad[:5]
    assert all(r["duration"] is None or r["duration"] <= 600.01 for r in results)
    grew = out["peak_mb"] - out["base_mb"]
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "error")}
    slowest = max(r["seconds"] for r in results)
    print(f"fuzz: {len(results)} cases, {counts}, slowest {slowest:.2f} s, peak RSS +{grew:.0f} MB")
    assert grew < PEAK_BOUND_MB, out["peak_mb"]
