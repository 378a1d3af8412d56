"""Meetings: is the speaker count right when 3, 4 or 5 people take turns? DER (0.25 s collar) and
found/true speakers per synthesised meeting, through the public API (`pipeline.runner.run`).

    .venv/bin/python bench/meetings.py                      # 3, 4, 5 speakers x seeds 0-2, embedded default
    .venv/bin/python bench/meetings.py --seeds 8,9,10       # meetings the calibration never saw
    .venv/bin/python bench/meetings.py --override recording_stage.diarization.threshold_scale=null \
        --override recording_stage.diarization.min_speaker_s=3 --override recording_stage.diarization.min_speaker_share=0
                                                            # the fixed threshold 0.30 of before
    .venv/bin/python bench/meetings.py --sweep --seeds 0,1,2,3,4,5,6,7   # clustering settings side by side, no ASR
    .venv/bin/python bench/meetings.py --voices             # how far apart the encoder puts the voices
    .venv/bin/python bench/meetings.py --rooms              # far-field rooms, 2-8 speakers, vs one speaker (no ASR)
    .venv/bin/python bench/meetings.py --rooms --asr        # ... through the whole pipeline (English voices)

`--rooms` (pip install '.[bench]' for pyroomacoustics) puts the same voices in a simulated room
(`build_room`): one microphone, talkers 1-4 m away, RT60 0.3-0.9 s, 10-20 dB between the loudest and
the quietest talker, 10-30% of the speech overlapped, quiet backchannels of 0.3-1 s inside other turns,
babble and/or HVAC noise at 5-20 dB SNR. It reports DER, the speaker count, missed speech and false
alarm beside the one-speaker baseline (every VAD region, or every segment, given to one speaker).

The corpus (../shared/corpus) holds one real two-speaker call only, so meetings are built from its
distinct voices (`VOICES`: JFK, a LibriSpeech reader, the silero lecture, the two speechbrain
speakers, one FLEURS reader per language). Each voice's speech is cut by the pipeline's own VAD into
units of at most `UNIT_S`; a meeting draws `n` voices (the full run: English ones, `ENGLISH` says
why) and a talk share per voice (Dirichlet, so
some people talk much less than others), then lets them take turns of one or two units, never the
same voice twice in a row, with pauses of 0.2-0.8 s and, one turn in five, an overlap of 0.3-0.8 s
into the previous turn. Each voice is brought to the same loudness. The reference turns (RTTM) are
the units' positions. A meeting is deterministic in (n, seed).

`--sweep` runs VAD and the Resemblyzer windows once per file (meetings, the corpus call and every
single-speaker clip of the corpus) and then only the clustering, per setting: the fast way to
calibrate; its DER is the one of the diarizer's turns (the full run's is of the segments' speakers).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
SR = 16000

#: voice -> its files in ../shared/corpus. One FLEURS clip per language: the clips of one language
#: may share a reader, those of different languages do not.
VOICES: dict[str, list[str]] = {
    "jfk": ["speech/whisper_jfk.flac"],
    "librispeech-2412": ["speech/lhotse_2412-153948-0000.flac", "speech/lhotse_2412-153948-0001.flac"],
    "lecture": ["speech/silerovad_test.wav"],
    "speechbrain-spk1": [f"speech/speechbrain_spk1_snt{k}.wav" for k in range(1, 7)],
    "speechbrain-spk2": [f"speech/speechbrain_spk2_snt{k}.wav" for k in range(1, 7)],
    "fleurs-en": ["multilingual/fleurs-en-002.ogg"],
    "fleurs-de": ["multilingual/fleurs-de-003.ogg"],
    "fleurs-fr": ["multilingual/fleurs-fr-001.ogg"],
    "fleurs-es": ["multilingual/fleurs-es-001.ogg"],
    "fleurs-pt": ["multilingual/fleurs-pt-004.ogg"],
}
#: The English voices: a meeting shares a language, and Whisper decodes one language per 30 s window,
#: so speech in another language inside one utterance gets no words, and no speaker (ASR's error,
#: not diarization's). The full run uses these; `--sweep` (no ASR) uses every voice.
ENGLISH = ("jfk", "librispeech-2412", "lecture", "speechbrain-spk1", "speechbrain-spk2", "fleurs-en")
UNIT_S = 5.0  # longest piece of one voice's speech placed as a unit
MIN_UNIT_S = 0.8
SPEAKERS = (3, 4, 5)
SEEDS = (0, 1, 2)
TARGET_S = 60.0  # a meeting stops growing here (or when its voices run out of speech)


@dataclass
class Meeting:
    name: str
    audio: np.ndarray
    turns: list[tuple[float, float, str]]  # reference (start, end, voice)

    def rttm(self) -> str:
        return "".join(f"SPEAKER {self.name} 1 {s:.3f} {e - s:.3f} <NA> <NA> {v} <NA> <NA>\n" for s, e, v in self.turns)


def _decode(path: Path) -> np.ndarray:
    from pipeline.audio import decode

    return np.asarray(decode(str(path)).samples, dtype=np.float32)


def _vad():
    from pipeline.backends.silero import SileroVad
    from pipeline.config import load_config

    return SileroVad(load_config(REPO / "conf/local.yaml", []).recording_stage.vad)


def voice_units(corpus: Path = CORPUS) -> dict[str, list[np.ndarray]]:
    """Each voice's speech as units (VAD regions, long ones split at their quietest moment),
    loudness-normalised per voice (RMS 0.05)."""
    from pipeline.records import Span
    from pipeline.timeline import split_long

    vad = _vad()
    out: dict[str, list[np.ndarray]] = {}
    for voice, files in VOICES.items():
        units: list[np.ndarray] = []
        for rel in files:
            audio = _decode(corpus / rel)
            for r in vad.speech_regions(audio):
                for piece in split_long(Span(r.start, r.end), UNIT_S, audio):
                    if piece.duration >= MIN_UNIT_S:
                        units.append(audio[int(piece.start * SR) : int(piece.end * SR)])
        rms = np.sqrt(np.mean(np.concatenate(units).astype(np.float64) ** 2))
        out[voice] = [(u * (0.05 / max(rms, 1e-6))).astype(np.float32) for u in units]
    return out


def build_meeting(
    units: dict[str, list[np.ndarray]], n: int, seed: int, pool: tuple[str, ...] | None = None
) -> Meeting:
    """A meeting of `n` voices drawn from `pool` (default: every voice; see the module docstring).
    Deterministic in (n, seed, pool)."""
    rng = np.random.default_rng(1000 * n + seed)
    voices = [str(v) for v in rng.choice(sorted(pool or units), size=n, replace=False)]
    share = rng.dirichlet(np.full(n, 1.5))
    queue = {v: list(units[v]) for v in voices}
    order: list[tuple[str, np.ndarray]] = []
    # everyone speaks at least once (in a random order), then talk follows the shares
    for v in rng.permutation(voices):
        order.append((str(v), queue[str(v)].pop(0)))
    total = sum(len(u) for _, u in order) / SR
    while total < TARGET_S:
        live = [v for v in voices if queue[v] and v != order[-1][0]]
        if not live:
            break
        p = np.array([share[voices.index(v)] for v in live])
        v = live[int(rng.choice(len(live), p=p / p.sum()))]
        pieces = [queue[v].pop(0)]
        if queue[v] and rng.random() < 0.4:
            pieces.append(np.concatenate([np.zeros(int(0.25 * SR), np.float32), queue[v].pop(0)]))
        unit = np.concatenate(pieces)
        order.append((v, unit))
        total += len(unit) / SR
    # place the turns: pauses, and now and then an overlap into the previous turn
    placed: list[tuple[int, np.ndarray, str]] = []
    t = int(0.5 * SR)
    for k, (v, u) in enumerate(order):
        if k:
            prev_len = len(placed[-1][1])
            if rng.random() < 0.2:
                t -= min(int(rng.uniform(0.3, 0.8) * SR), prev_len // 2)
            else:
                t += int(rng.uniform(0.2, 0.8) * SR)
        placed.append((t, u, v))
        t += len(u)
    audio = np.zeros(t + int(0.5 * SR), dtype=np.float32)
    turns: list[tuple[float, float, str]] = []
    for start, u, v in placed:
        audio[start : start + len(u)] += u
        turns.append((round(start / SR, 3), round((start + len(u)) / SR, 3), v))
    return Meeting(f"meeting{n}_seed{seed}", audio, turns)


def write_meetings(folder: Path, speakers=SPEAKERS, seeds=SEEDS, pool: tuple[str, ...] | None = None) -> list[Meeting]:
    import soundfile as sf

    units = voice_units()
    folder.mkdir(parents=True, exist_ok=True)
    meetings = [build_meeting(units, n, s, pool) for n in speakers for s in seeds]
    for m in meetings:
        sf.write(folder / f"{m.name}.wav", m.audio, SR, subtype="PCM_16")
        (folder / f"{m.name}.rttm").write_text(m.rttm())
    return meetings


def score(ref: list[tuple[float, float, str]], hyp: list[tuple[float, float, str]]) -> dict:
    from pipeline.der import der

    return der(ref, hyp, collar=0.25)


def run_pipeline(folder: Path, meetings: list[Meeting], overrides: list[str]) -> list[dict]:
    """Every meeting through `pipeline.runner.run` with diarization on; one score row per meeting."""
    from diarization import _run  # bench/diarization.py: the public API, conf/local.yaml

    with tempfile.TemporaryDirectory() as tmp:
        segs, _recs = _run(folder, Path(tmp) / "out", ["recording_stage.diarization.enabled=true", *overrides])
    rows = []
    for m in meetings:
        hyp = [(s["start"], s["end"], s["speaker"]) for s in segs if Path(s["uri"]).stem == m.name]
        rows.append({"meeting": m.name, "speakers": len({v for *_, v in m.turns}), **score(m.turns, hyp)})
    return rows


def print_rows(rows: list[dict]) -> None:
    print("| meeting | speakers | found | DER (0.25 s collar) | missed s | false alarm s | confusion s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['meeting']} | {r['ref_speakers']} | {r['hyp_speakers']} | {r['der']:.3f} | {r['missed_s']:.2f} | "
            f"{r['false_alarm_s']:.2f} | {r['confusion_s']:.2f} |"
        )
    within = sum(abs(r["speaker_count_error"]) <= 1 for r in rows)
    exact = sum(r["speaker_count_error"] == 0 for r in rows)
    print(
        f"\ncount within one: {within} / {len(rows)}; exact: {exact} / {len(rows)}; "
        f"mean DER {np.mean([r['der'] for r in rows]):.3f}"
    )


# -- far-field rooms: the meetings as a microphone in the middle of the table hears them ------------

ROOM_SPEAKERS = (2, 3, 4, 6, 8)
ROOM_SEEDS = (0, 1)
ROOM_TARGET_S = 45.0


@dataclass
class Room(Meeting):
    condition: dict  # rt60 (s), distances (m), level spread (dB), snr (dB), noise, overlap share, backchannels


def _place_in(dims: np.ndarray, mic: np.ndarray, dist: float, rng: np.random.Generator) -> list[float]:
    """A talker's mouth `dist` m from the microphone (horizontally) in a random direction, kept 0.4 m
    from the walls (pulled closer to the microphone where the room is too small)."""
    for _ in range(50):
        a = rng.uniform(0, 2 * np.pi)
        p = mic[:2] + dist * np.array([np.cos(a), np.sin(a)])
        if np.all(p > 0.4) and np.all(p < dims[:2] - 0.4):
            return [float(p[0]), float(p[1]), float(rng.uniform(1.1, 1.4))]
        dist *= 0.95
    return [float(mic[0]) + 0.5, float(mic[1]), 1.2]


def _hvac(n: int, rng: np.random.Generator) -> np.ndarray:
    """HVAC-like noise: brown (1/f^2) rumble plus a low hum and its harmonics, with a slow wobble."""
    white = rng.normal(0, 1, n)
    brown = np.cumsum(white)
    brown -= np.convolve(brown, np.ones(4001) / 4001, mode="same")  # no drift below ~4 Hz
    t = np.arange(n) / SR
    hum = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) / k for k, f in enumerate((100.0, 200.0, 300.0), 1))
    x = brown / (np.std(brown) + 1e-9) + 0.3 * hum + 0.2 * white
    return (x * (1 + 0.1 * np.sin(2 * np.pi * 0.2 * t))).astype(np.float64)


def build_room(units: dict[str, list[np.ndarray]], n: int, seed: int, pool: tuple[str, ...] | None = None) -> Room:
    """A far-field meeting of `n` voices: turns with 10-30% of the speech overlapped, quiet 0.3-1 s
    backchannels inside other people's turns, talkers 1-4 m from one microphone in a shoebox room
    (pyroomacoustics image sources, RT60 0.3-0.9 s), 10-20 dB between the loudest and quietest talker,
    babble (voices not in the meeting, from far corners) and/or HVAC noise at 5-20 dB SNR. The
    reference turns are where each voice's (dry) speech was placed. Deterministic in (n, seed, pool)."""
    import pyroomacoustics as pra  # optional: the `bench` extra; only this benchmark simulates rooms
    from scipy.signal import fftconvolve  # heavy: SciPy takes about a second to import

    rng = np.random.default_rng(7000 + 100 * n + seed)
    names = sorted(pool or units)
    voices = [str(v) for v in rng.choice(names, size=n, replace=False)]
    share = rng.dirichlet(np.full(n, 1.0))
    queue = {v: list(units[v]) for v in voices}
    overlap_target = float(rng.uniform(0.10, 0.30))
    spread_db = float(rng.uniform(10, 20))
    gain_db = {v: float(g) for v, g in zip(voices, rng.permutation(np.linspace(0.0, -spread_db, n)))}
    order = [(str(v), queue[str(v)].pop(0)) for v in rng.permutation(voices)]
    total = sum(len(u) for _, u in order) / SR
    while total < ROOM_TARGET_S:
        live = [v for v in voices if queue[v] and v != order[-1][0]]
        if not live:
            break
        p = np.array([share[voices.index(v)] for v in live])
        v = live[int(rng.choice(len(live), p=p / p.sum()))]
        order.append((v, queue[v].pop(0)))
        total += len(order[-1][1]) / SR
    # place the turns, overlapping into the previous one until `overlap_target` of the speech is overlapped
    placed: list[tuple[int, np.ndarray, str]] = []
    t, speech, overlapped = int(0.5 * SR), 0, 0
    for k, (v, u) in enumerate(order):
        if k:
            if overlapped < overlap_target * (speech + len(u)):
                ov = min(int(rng.uniform(0.5, 2.0) * SR), len(placed[-1][1]) // 2, len(u) // 2)
                t -= ov
                overlapped += ov
            else:
                t += int(rng.uniform(0.2, 0.8) * SR)
        placed.append((t, u, v))
        t += len(u)
        speech += len(u)
    # backchannels: 0.3-1 s of another voice, 6-12 dB quieter, inside one turn in four
    backchannels = 0
    for start, u, v in list(placed):
        others = [w for w in voices if w != v and units[w]]
        if len(u) < 2 * SR or not others or rng.random() > 0.25:
            continue
        w = str(rng.choice(others))
        src = units[w][int(rng.integers(len(units[w])))]
        d = min(int(rng.uniform(0.3, 1.0) * SR), len(src))
        at = start + int(rng.integers(int(0.3 * SR), len(u) - d))
        placed.append((at, src[:d] * 10 ** (-rng.uniform(6, 12) / 20), w))
        backchannels += 1
    length = max(s + len(u) for s, u, _ in placed) + int(0.5 * SR)
    tracks = {v: np.zeros(length, np.float64) for v in voices}
    turns: list[tuple[float, float, str]] = []
    for start, u, v in sorted(placed, key=lambda x: x[0]):
        tracks[v][start : start + len(u)] += u * 10 ** (gain_db[v] / 20)
        turns.append((round(start / SR, 3), round((start + len(u)) / SR, 3), v))
    # the room
    dims = np.array([rng.uniform(4.5, 9.0), rng.uniform(3.5, 7.0), rng.uniform(2.6, 3.2)])
    rt60 = float(rng.uniform(0.3, 0.9))
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=SR, materials=pra.Material(absorption), max_order=min(max_order, 40))
    mic = np.array([dims[0] / 2 + rng.uniform(-0.5, 0.5), dims[1] / 2 + rng.uniform(-0.5, 0.5), 0.8])
    room.add_microphone(mic)
    dist = {v: float(rng.uniform(1.0, 4.0)) for v in voices}
    for v in voices:
        room.add_source(_place_in(dims, mic, dist[v], rng))
    noise_kind = str(rng.choice(["babble", "hvac", "babble+hvac"]))
    strangers = [w for w in names if w not in voices] or names
    babblers = [str(w) for w in rng.choice(strangers, size=min(4, len(strangers)), replace=False)]
    for _ in babblers:  # far corners
        room.add_source([float(rng.uniform(0.3, 1.0)), float(rng.uniform(0.3, dims[1] - 0.3)), 1.2])
    room.compute_rir()
    mix = np.zeros(length, np.float64)
    for k, v in enumerate(voices):
        mix += fftconvolve(tracks[v], room.rir[0][k])[:length]
    noise = np.zeros(length, np.float64)
    if "babble" in noise_kind:
        for k, w in enumerate(babblers):
            chatter = np.concatenate([units[w][int(i)] for i in rng.permutation(len(units[w]))] * 20)[:length]
            noise += fftconvolve(np.pad(chatter, (0, length - len(chatter))), room.rir[0][n + k])[:length]
    if "hvac" in noise_kind:
        h = _hvac(length, rng)
        noise += h * (np.std(noise) / np.std(h) if np.any(noise) else 1.0)
    active = np.zeros(length, bool)
    for s, e, _ in turns:
        active[int(s * SR) : int(e * SR)] = True
    snr = float(rng.uniform(5, 20))
    p_speech = float(np.mean(mix[active] ** 2))
    noise *= np.sqrt(p_speech / 10 ** (snr / 10) / max(float(np.mean(noise**2)), 1e-12))
    audio = mix + noise
    audio *= 0.3 / max(float(np.max(np.abs(audio))), 1e-9)
    condition = {
        "rt60": round(rt60, 2),
        "dist": f"{min(dist.values()):.1f}-{max(dist.values()):.1f}",
        "levels_db": round(spread_db, 1),
        "snr": round(snr, 1),
        "noise": noise_kind,
        "overlap": round(overlapped / max(speech, 1), 2),
        "backchannels": backchannels,
    }
    return Room(f"room{n}_seed{seed}", audio.astype(np.float32), turns, condition)


def write_rooms(
    folder: Path, speakers=ROOM_SPEAKERS, seeds=ROOM_SEEDS, pool: tuple[str, ...] | None = None
) -> list[Room]:
    import soundfile as sf

    units = voice_units()
    folder.mkdir(parents=True, exist_ok=True)
    rooms = [build_room(units, n, s, pool) for n in speakers for s in seeds]
    for r in rooms:
        sf.write(folder / f"{r.name}.wav", r.audio, SR, subtype="PCM_16")
        (folder / f"{r.name}.rttm").write_text(r.rttm())
    return rooms


def _speech_s(turns: list[tuple[float, float, str]]) -> float:
    """Seconds of reference speech (the union of the turns; an overlap counts once)."""
    edges = sorted(turns)
    total, end = 0.0, 0.0
    for s, e, _ in edges:
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def rooms_diarizer(rooms: list[Meeting], overrides: list[str]) -> list[dict]:
    """VAD and the diarizer's own turns per room (no ASR), against one speaker over the same VAD regions."""
    from pipeline.config import load_config
    from pipeline.stages.recording import RecordingStage, at_level

    job = load_config(REPO / "conf/local.yaml", ["recording_stage.diarization.enabled=true", *overrides])
    stage = RecordingStage.from_config(job)  # the VAD, the sensitive pass and the diarizer a run would load
    rows = []
    for m in rooms:
        heard = at_level(m.audio, job.recording_stage.vad.level_dbfs)  # as the recording stage hears it
        regions = stage.vad.speech_regions(heard)
        duration = len(m.audio) / SR
        turns = (
            stage.diarizer.diarize(m.audio, stage.diarizer_regions(heard, regions, {}, duration)).turns
            if regions
            else []
        )
        hyp = [(t.start, t.end, t.speaker) for t in turns]
        one = [(r.start, r.end, "one") for r in regions]
        rows.append(_room_row(m, hyp, one))
    return rows


def _room_row(m: Meeting, hyp: list, one: list) -> dict:
    d, base = score(m.turns, hyp), score(m.turns, one)
    speech = _speech_s(m.turns)
    heard = score([(s, e, "x") for s, e, _ in m.turns], [(s, e, "x") for s, e, _ in hyp])  # speech vs none
    return {
        "meeting": m.name,
        **getattr(m, "condition", {}),
        **d,
        "der_one": base["der"],
        "vad_missed_s": heard["missed_s"],
        "vad_false_alarm_s": heard["false_alarm_s"],
        "vad_scored_s": heard["scored_s"],
        "missed_share": d["missed_s"] / d["scored_s"] if d["scored_s"] else 0.0,
        "speech_s": speech,
        # speaker time beyond the first voice at each instant: what a diarizer that names one speaker per
        # instant (the embedded one) must miss, whatever its clustering (collar not applied)
        "overlap_floor": 1.0 - speech / max(sum(e - s for s, e, _ in m.turns), 1e-9),
    }


def rooms_pipeline(folder: Path, rooms: list[Meeting], overrides: list[str]) -> list[dict]:
    """Every room through `pipeline.runner.run` with diarization on: DER of the segments' speakers, and
    of the same segments given to one speaker (the baseline of issue 34)."""
    from diarization import _run  # bench/diarization.py: the public API, conf/local.yaml

    with tempfile.TemporaryDirectory() as tmp:
        segs, _recs = _run(folder, Path(tmp) / "out", ["recording_stage.diarization.enabled=true", *overrides])
    rows = []
    for m in rooms:
        mine = [s for s in segs if Path(s["uri"]).stem == m.name and s["text"]]
        hyp = [(s["start"], s["end"], s["speaker"]) for s in mine]
        rows.append(_room_row(m, hyp, [(s["start"], s["end"], "one") for s in mine]))
    return rows


def print_rooms(rows: list[dict]) -> None:
    print(
        "| room | RT60 s | dist m | levels dB | SNR dB | noise | overlap | backch. | speakers | found "
        "| DER | DER one speaker | missed % | overlap floor % | missed s | false alarm s | confusion s "
        "| speech missed % |"
    )
    print("| --- " * 18 + "|")
    for r in rows:
        print(
            f"| {r['meeting']} | {r.get('rt60', '-')} | {r.get('dist', '-')} | {r.get('levels_db', '-')} "
            f"| {r.get('snr', '-')} | {r.get('noise', '-')} | {r.get('overlap', '-')} | {r.get('backchannels', '-')} "
            f"| {r['ref_speakers']} | {r['hyp_speakers']} | {r['der']:.3f} | {r['der_one']:.3f} "
            f"| {100 * r['missed_share']:.1f} | {100 * r['overlap_floor']:.1f} | {r['missed_s']:.2f} | {r['false_alarm_s']:.2f} | {r['confusion_s']:.2f} "
            f"| {100 * r['vad_missed_s'] / max(r['vad_scored_s'], 1e-9):.1f} |"
        )
    for label, sel in (
        ("2-4 speakers", lambda r: r["ref_speakers"] <= 4),
        ("5-8 speakers", lambda r: r["ref_speakers"] > 4),
    ):
        group = [r for r in rows if sel(r)]
        if not group:
            continue
        scored = sum(r["scored_s"] for r in group)
        pooled = lambda key: sum(r[key] * r["scored_s"] for r in group) / scored  # noqa: E731
        print(
            f"{label}: DER {pooled('der'):.3f} (one speaker {pooled('der_one'):.3f}), count within one "
            f"{sum(abs(r['speaker_count_error']) <= 1 for r in group)}/{len(group)}, mean |count error| "
            f"{np.mean([abs(r['speaker_count_error']) for r in group]):.2f}, missed "
            f"{100 * sum(r['missed_s'] for r in group) / scored:.1f}%, false alarm "
            f"{100 * sum(r['false_alarm_s'] for r in group) / scored:.1f}%, worse than one speaker in "
            f"{sum(r['der'] > r['der_one'] for r in group)}/{len(group)}; speech heard by nobody "
            f"{100 * sum(r['vad_missed_s'] for r in group) / sum(r['vad_scored_s'] for r in group):.1f}% "
            f"(the rest of 'missed' is overlap: one speaker per instant); overlap floor "
            f"{100 * np.mean([r['overlap_floor'] for r in group]):.1f}% (no one-speaker-per-instant diarizer "
            f"scores a DER below it)"
        )


# -- calibration: windows once, clustering many times -------------------------------------------------


def _corpus_files() -> tuple[list[tuple[str, Path, list | None]], list[tuple[str, Path]]]:
    refs = [json.loads(line) for line in (CORPUS / "references.jsonl").read_text().splitlines() if line.strip()]
    multi = [
        (r["audio_filepath"], CORPUS / r["audio_filepath"], (CORPUS / r["rttm_filepath"]))
        for r in refs
        if r.get("rttm_filepath")
    ]
    single = [(r["audio_filepath"], CORPUS / r["audio_filepath"]) for r in refs if r.get("num_speakers") == 1]
    return multi, single


def _windows(diarizer, vad, audio: np.ndarray):
    regions = vad.speech_regions(audio)
    centres, embeds, groups = diarizer._window_embeddings(audio, regions)
    return regions, np.asarray(centres), (np.stack(embeds) if embeds else np.zeros((0, 256))), np.asarray(groups)


def sweep(settings: list[dict], meetings: list[Meeting]) -> None:
    """DER and count per clustering setting, from the diarizer's own turns (no ASR)."""
    from pipeline.backends.resemblyzer import ResemblyzerDiarizer, turns_from_windows
    from pipeline.clustering import cluster_for
    from pipeline.config import load_config
    from pipeline.der import read_rttm

    base = load_config(
        REPO / "conf/local.yaml", ["recording_stage.diarization.enabled=true"]
    ).recording_stage.diarization
    vad, diarizer = _vad(), ResemblyzerDiarizer(base)
    multi, single = _corpus_files()
    cases = [(m.name, _windows(diarizer, vad, m.audio), m.turns) for m in meetings]
    cases += [(name, _windows(diarizer, vad, _decode(p)), read_rttm(rttm.read_text())) for name, p, rttm in multi]
    singles = [(name, _windows(diarizer, vad, _decode(p))) for name, p in single]
    print(
        "| setting | meetings: count within one | exact | mean DER | call: found | call DER | single-speaker as 1 | found/true per meeting |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for setting in settings:
        cfg = base.model_copy(update=setting)
        res = []
        for name, (regions, centres, embeds, groups), ref in cases:
            labels = cluster_for(cfg, embeds, cfg.embedding_hop_s, groups) if len(embeds) else np.zeros(0, int)
            hyp = turns_from_windows(regions, centres, labels) if len(embeds) else []
            res.append((name, score(ref, [(t.start, t.end, t.speaker) for t in hyp])))
        meets = [d for name, d in res if name.startswith("meeting")]
        call = dict(res)["diarization/pyannote_sample.wav"]
        ones = 0
        for _name, (_regions, _centres, embeds, groups) in singles:
            ones += len(embeds) == 0 or len(set(cluster_for(cfg, embeds, cfg.embedding_hop_s, groups))) == 1
        detail = " ".join(f"{d['hyp_speakers']}/{d['ref_speakers']}" for d in meets)
        print(
            f"| {setting} | {sum(abs(d['speaker_count_error']) <= 1 for d in meets)} / {len(meets)} "
            f"| {sum(d['speaker_count_error'] == 0 for d in meets)} | {np.mean([d['der'] for d in meets]):.3f} "
            f"| {call['hyp_speakers']} | {call['der']:.3f} | {ones} / {len(singles)} | {detail} |"
        )


def voices_table() -> None:
    """Mean cosine similarity of Resemblyzer windows within and between voices (can it tell them apart?)."""
    from pipeline.backends.resemblyzer import ResemblyzerDiarizer
    from pipeline.config import load_config

    cfg = load_config(
        REPO / "conf/local.yaml", ["recording_stage.diarization.enabled=true"]
    ).recording_stage.diarization
    diarizer = ResemblyzerDiarizer(cfg)
    units = voice_units()
    emb = {}
    for v, us in units.items():
        audio = np.concatenate(us)
        from pipeline.records import Span

        _c, e, _g = diarizer._window_embeddings(audio, [Span(0.0, len(audio) / SR)])
        e = np.stack(e)
        emb[v] = e / np.linalg.norm(e, axis=1, keepdims=True)
    names = list(emb)
    print("| voice | " + " | ".join(names) + " |")
    print("| --- " * (len(names) + 1) + "|")
    for a in names:
        cells = []
        for b in names:
            sim = emb[a] @ emb[b].T
            if a == b:
                sim = sim[~np.eye(len(sim), dtype=bool)]
            cells.append(f"{float(np.mean(sim)):.2f}")
        print(f"| {a} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--override", action="append", default=[], help="extra dotted.key=value for the run")
    parser.add_argument("--sweep", action="store_true", help="clustering settings side by side (no ASR)")
    parser.add_argument("--voices", action="store_true", help="window similarity within/between voices")
    parser.add_argument("--keep", type=Path, help="write the meetings (WAV + RTTM) here and keep them")
    parser.add_argument("--seeds", default="0,1,2", help="meeting seeds, comma-separated (default 0,1,2)")
    parser.add_argument(
        "--all-voices",
        action="store_true",
        help="the full run draws from every voice, not only the English ones (--sweep always does)",
    )
    parser.add_argument("--rooms", action="store_true", help="far-field rooms (2-8 speakers): VAD + diarizer, no ASR")
    parser.add_argument("--asr", action="store_true", help="with --rooms: through the whole pipeline (English voices)")
    parser.add_argument("--speakers", default=None, help="with --rooms: speaker counts (default 2,3,4,6,8)")
    args = parser.parse_args()
    seeds = tuple(int(x) for x in args.seeds.split(","))
    if args.voices:
        voices_table()
        return
    if args.rooms:
        speakers = tuple(int(x) for x in args.speakers.split(",")) if args.speakers else ROOM_SPEAKERS
        if args.asr:  # a room of English voices has at most as many speakers as there are English voices
            if args.speakers and max(speakers) > len(ENGLISH):
                parser.error(f"--asr rooms draw from {len(ENGLISH)} English voices: --speakers at most {len(ENGLISH)}")
            speakers = tuple(n for n in speakers if n <= len(ENGLISH))
        room_seeds = seeds if args.seeds != "0,1,2" else ROOM_SEEDS
        with tempfile.TemporaryDirectory() as tmp:
            folder = args.keep or Path(tmp) / "rooms"
            rooms = write_rooms(folder, speakers, room_seeds, pool=ENGLISH if args.asr else None)
            run = rooms_pipeline(folder, rooms, args.override) if args.asr else rooms_diarizer(rooms, args.override)
            print_rooms(run)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "meetings"
        pool = None if (args.sweep or args.all_voices) else ENGLISH
        meetings = write_meetings(folder, seeds=seeds, pool=pool)
        if args.sweep:
            settings = SWEEP if not args.override else [{}]
            if args.override:  # dotted keys of the diarization section, as JSON values
                settings = [{k.rsplit(".", 1)[-1]: json.loads(v) for k, v in (o.split("=", 1) for o in args.override)}]
            sweep(settings, meetings)
            return
        print_rows(run_pipeline(folder, meetings, args.override))


#: The settings `--sweep` compares: the fixed threshold of before (and around it), the default
#: (threshold from the recording, 4 s, 15% of the longest speaker), and its neighbours.
_FIXED = {"threshold_scale": None, "min_speaker_s": 3.0, "min_speaker_share": 0.0}
SWEEP = (
    [{**_FIXED, "cluster_threshold": t} for t in (0.25, 0.30, 0.35, 0.40)]
    + [{}]
    + [{"threshold_scale": a} for a in (1.4, 1.5, 1.7, 1.8)]
    + [{"min_speaker_s": 3.0}, {"min_speaker_share": 0.0}, {"min_speaker_s": 3.0, "min_speaker_share": 0.25}]
)

if __name__ == "__main__":
    main()
