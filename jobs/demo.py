"""`make demo`: the whole product on one machine, s3:// to s3://, with nothing but pip and apt packages.

1. Synthesises a small corpus with espeak-ng: four languages, two voices, pauses, a file that switches
   language mid-way, a silent file and a file that is not audio (to show how errors are reported).
2. Starts an S3 server (moto) on 127.0.0.1 and uploads the corpus to s3://demo/audio/.
3. Runs the pipeline (conf/local.yaml, diarization on) from s3://demo/audio/ to s3://demo/out/.
4. Prints the run summary and the transcripts, and copies the output to ./demo-out for a look.

Then point it at your own data:  scriptorium run conf/local.yaml input.uri=... output.uri=...
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SR = 16000

# (file name, [(espeak voice, text), ...]): a pause of PAUSE_S is put between parts. Pauses shorter
# than segmentation.merge_gap_s are merged into one utterance (cut & merge), so a language switch
# needs a real pause to get its own segment and language.
PAUSE_S = 1.5
CORPUS = [
    ("interview_en.flac", [
        ("en-us+m3", "Welcome back to the archive. Today we talk about the history of the harbour."),
        ("en-us+f4", "Thank you. The harbour was built in eighteen seventy, and it changed the whole town."),
        ("en-us+m3", "What happened to the old fishing boats?"),
        ("en-us+f4", "Most of them were sold, but a few are still kept in the museum."),
    ]),
    ("nachrichten_de.mp3", [("de+m2", "Guten Abend. Das Wetter bleibt morgen sonnig und warm, im Norden gibt es einzelne Schauer.")]),
    ("note_fr.ogg", [("fr+f2", "Bonjour à tous. La réunion de demain commence à neuf heures dans la grande salle.")]),
    ("cuento_es.wav", [("es+m1", "Había una vez un pequeño pueblo junto al mar, donde todos conocían el nombre del viento.")]),
    ("mixed en-de.flac", [
        ("en-us+m1", "This recording starts in English and then switches to German."),
        ("de+m1", "Jetzt sprechen wir Deutsch, und das Modell erkennt die Sprache für jeden Abschnitt."),
    ]),
]


def synthesise(text: str, voice: str) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", tmp.name, text], check=True)
        audio, rate = sf.read(tmp.name, dtype="float32")
    if rate != SR:  # espeak-ng speaks at 22.05 kHz; write 16 kHz so every codec below accepts it
        import soxr

        audio = soxr.resample(audio, rate, SR)
    return audio


def build_corpus(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    pause = np.zeros(int(PAUSE_S * SR), dtype=np.float32)
    paths = []
    for name, parts in CORPUS:
        pieces = [pause]
        for voice, text in parts:
            pieces += [synthesise(text, voice), pause]
        audio = np.concatenate(pieces)
        wav = folder / (Path(name).stem + ".tmp.wav")
        sf.write(wav, audio, SR)
        target = folder / name
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(target)], check=True)
        wav.unlink()
        paths.append(target)
    sf.write(folder / "silence.wav", np.zeros(5 * SR, dtype=np.float32), SR)
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

    from moto.server import ThreadedMotoServer

    import s3fs

    from pipeline.config import load_config
    from pipeline.ledger import read_output
    from pipeline.runner import run

    # Throwaway credentials for the embedded server only; real jobs use the AWS credential chain.
    os.environ.update(AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo", AWS_DEFAULT_REGION="us-east-1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"1/4 synthesising a demo corpus with espeak-ng ...")
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
                "diarization.enabled=true",
            ],
        )
        print("3/4 running the pipeline: decode -> VAD -> diarization -> LID -> ASR -> Parquet ...")
        report = run(cfg)
        print("\n" + report.summary() + "\n")
        print("4/4 transcripts (s3://demo/out/segments/*.parquet):")
        for s in sorted(read_output(cfg.output, "segments").to_pylist(), key=lambda s: (s["uri"], s["start"])):
            print(f"  {Path(s['uri']).name:22s} {s['start']:6.2f}-{s['end']:6.2f} {s['speaker'] or '-':5s} "
                  f"{s['language']} {s['text']}")
        local = Path(args.local_copy)
        shutil.rmtree(local, ignore_errors=True)
        fs.get("demo/out/", str(local), recursive=True)
        print(f"\noutput copied to {local}/ (segments/, recordings/, report.json, _ledger/)")
        return 1 if report.failed_completely else 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
