"""One real pipeline output shared by tests/test_export.py, test_filter.py and test_eval.py (through the
`shared_output` fixture of tests/conftest.py).

The pipeline runs ONCE per pytest process (the result is cached here)
on corpus clips chosen to break exports: Ogg (FLEURS), a real Ogg/Opus file made with ffmpeg, an MP3,
the 44.1 kHz stereo JFK FLAC, two inputs of the same basename in two folders (a/x.wav, b/x.wav), a
250-byte basename and a name holding U+2028. Tests that change the output (filter) copy it first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.helpers import CORPUS, LOCAL_CONF

LONG_NAME = "L" * 246 + ".wav"  # 250 bytes
ODD_NAME = "odd\u2028name ü.wav"

#: input relative path -> corpus file
CLIPS = {
    "a/x.wav": "speech/speechbrain_spk1_snt1.wav",
    "b/x.wav": "speech/speechbrain_spk2_snt1.wav",
    "jfk.flac": "speech/whisper_jfk.flac",
    "cv.mp3": "speech/lhotse_common_voice_en_651325.mp3",
    "de/fleurs-de-000.ogg": "multilingual/fleurs-de-000.ogg",
    LONG_NAME: "speech/speechbrain_spk1_snt2.wav",
    ODD_NAME: "speech/speechbrain_spk2_snt2.wav",
}
OPUS = "fr/fleurs-fr-000.opus"  # transcoded to real Opus (48 kHz codec, 16 kHz input rate in the header)

_CACHE: dict[str, object] = {}


def references(root: Path) -> Path:
    """A references manifest for the clips (texts from the corpus' references.jsonl)."""
    refs = {
        json.loads(x)["audio_filepath"]: json.loads(x) for x in (CORPUS / "references.jsonl").read_text().splitlines()
    }
    lines = []
    for rel, src in {**CLIPS, OPUS: "multilingual/fleurs-fr-000.ogg"}.items():
        r = dict(refs[src], audio_filepath=f"audio/{rel}")
        lines.append(json.dumps(r, ensure_ascii=False))
    path = root / "references.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def pipeline_output() -> tuple[Path, Path]:
    """(input folder, output folder) of one run of conf/local.yaml over the clips."""
    if "out" in _CACHE:
        return _CACHE["audio"], _CACHE["out"]  # type: ignore[return-value]
    from pipeline.config import load_config
    from pipeline.runner import run

    keep = os.environ.get("SCRIPTORIUM_TEST_PL_ROOT")  # development: reuse one run across pytest processes
    if keep and (Path(keep) / "out/recordings").exists():
        _CACHE.update(audio=Path(keep) / "audio", out=Path(keep) / "out", root=Path(keep))
        return _CACHE["audio"], _CACHE["out"]  # type: ignore[return-value]
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="scriptorium-pl-"))
    shutil.rmtree(root, ignore_errors=True)
    audio = root / "audio"
    for rel, src in CLIPS.items():
        (audio / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CORPUS / src, audio / rel)
    (audio / OPUS).parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            str(CORPUS / "multilingual/fleurs-fr-000.ogg"),
            "-c:a",
            "libopus",
            "-b:a",
            "32k",
            str(audio / OPUS),
        ],
        check=True,
    )
    out = root / "out"
    report = run(load_config(LOCAL_CONF, [f"input.uri={audio}", f"output.uri={out}"]))
    assert report.ok == len(CLIPS) + 1, report.summary()
    references(root)  # beside the audio folder, so the input holds audio only
    _CACHE.update(audio=audio, out=out, root=root)
    return audio, out
