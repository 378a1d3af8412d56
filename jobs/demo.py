"""`make demo`: the whole product on one machine, s3:// to s3://, with nothing but pip and apt packages.

1. Takes the real speech clips shipped in jobs/demo-audio/ (see its README for sources and licences):
   English, German, French and Spanish read speech, JFK, a two-speaker telephone call; joins two of
   them into a file that switches from English to German, and adds a file that is not audio (to show
   how a failure is reported while the rest goes on).
2. Starts an S3 server (moto) on 127.0.0.1 and uploads them to s3://demo/audio/.
3. Runs the pipeline (conf/local.yaml, diarization on) from s3://demo/audio/ to s3://demo/out/.
4. Prints the run summary and the transcripts, and copies the output to ./demo-out for a look
   (open demo-out/report.html in a browser).

Then point it at your own data:  scriptorium run conf/local.yaml input.uri=... output.uri=...
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO / "jobs" / "demo-audio"
SR = 16000
PAUSE_S = 1.5  # longer than recording_stage.segmentation.merge_gap_s, so the language switch gets its own segment


def build_corpus(folder: Path) -> list[Path]:
    """The shipped clips, one file joined from two languages, and one file that is not audio."""
    from pipeline.audio import decode

    folder.mkdir(parents=True, exist_ok=True)
    for clip in sorted(CLIPS.iterdir()):
        if clip.suffix in (".opus", ".ogg") and clip.stem not in ("fleurs-en-000", "fleurs-de-003"):
            shutil.copyfile(clip, folder / clip.name)
    pause = np.zeros(int(PAUSE_S * SR), dtype=np.float32)
    en = decode(str(CLIPS / "fleurs-en-000.ogg")).samples
    de = decode(str(CLIPS / "fleurs-de-003.ogg")).samples
    sf.write(folder / "switch en-de.flac", np.concatenate([en, pause, de]), SR)
    (folder / "readme-not-audio.wav").write_text("this file is text, not audio\n")
    return sorted(folder.iterdir())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local-copy", default=str(REPO / "demo-out"), help="where to copy the output")
    args = parser.parse_args()

    import logging

    import s3fs
    from moto.server import ThreadedMotoServer

    from pipeline.config import load_config
    from pipeline.ledger import read_output
    from pipeline.progress import NativeLogFilter
    from pipeline.runner import run

    # Throwaway credentials for the embedded server only; real jobs use the AWS credential chain.
    os.environ.update(AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo", AWS_DEFAULT_REGION="us-east-1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request otherwise
    warnings.filterwarnings("ignore", module=r"ray(\.|$)")  # Ray Data's operator advice, as the CLI hides it
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"1/4 preparing the demo clips from {CLIPS.relative_to(REPO)}/ ...")
            files = build_corpus(Path(tmp) / "audio")
            fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
            fs.mkdir("demo")
            print(f"2/4 uploading {len(files)} files to s3://demo/audio/ on the embedded S3 server {endpoint}")
            for f in files:
                fs.put_file(str(f), f"demo/audio/{f.name}")
        storage = f"{{endpoint_url: '{endpoint}'}}"
        cfg = load_config(
            REPO / "conf/local.yaml",
            [
                "input.uri=s3://demo/audio/",
                "output.uri=s3://demo/out",
                f"input.storage={storage}",
                f"output.storage={storage}",
                "recording_stage.diarization.enabled=true",
            ],
        )
        print("3/4 running the pipeline: decode -> VAD -> diarization -> LID -> ASR -> Parquet ...")
        quiet = NativeLogFilter.install()  # Ray's C++ log lines stay in its session log, as in the CLI
        try:
            report = run(cfg)
        finally:
            quiet.close()
        print("\n" + report.summary() + "\n")
        print("4/4 transcripts (s3://demo/out/segments/*.parquet):")
        for s in sorted(read_output(cfg.output, "segments").to_pylist(), key=lambda s: (s["uri"], s["start"])):
            mark = "" if s["accepted"] else f"   [rejected: {', '.join(s['reject_reasons'])}]"
            print(
                f"  {Path(s['uri']).name:34s} {s['start']:6.2f}-{s['end']:6.2f} {s['speaker'] or '-':5s} "
                f"{s['language']} {s['text']}{mark}"
            )
        local = Path(args.local_copy)
        shutil.rmtree(local, ignore_errors=True)
        fs.get("demo/out/", str(local), recursive=True)
        print(f"\noutput copied to {local}/ (Delta tables segments/ and recordings/, report.json, report.html)")
        return 1 if report.failed_completely else 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
