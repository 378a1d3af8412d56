"""Word boosting (issues 17, 31), measured side by side in one run: Whisper without the vocabulary,
with the terms in the prompt of every window and no guard (how it was before issue 31), and as it
is now (terms in the prompt only where the plain text nearly holds one, the guard on).

    .venv/bin/python bench/vocabulary.py [--lists 1,10,100] [--modes before,now] [--json out.json]

Every clip is decoded by the embedded Whisper base (int8, beam 1, `asr.encode_pad_s` 1 as in
conf/local.yaml) through `WhisperAsr.transcribe` (the segment stage's own call) with its reference
language. The sets:

* term clips: espeak-ng sentences naming invented products/people/places (and two real but rare
  names), each laid between two pieces of real speech from ../shared/corpus. Recall = clips whose
  output holds their term (case-insensitive, whole words), over the clips whose term is in the list.
* reference clips: every clip of ../shared/corpus/references.jsonl with a reference text (English,
  and FLEURS de/en/es/fr/pt): WER per language, lower-cased, punctuation stripped, both sides. None
  of them says a term: WER there is what the vocabulary costs outside the term-bearing clips.
* segments: the reference clips whole, plus cuts of 2-12 s at seeded random places of every corpus
  clip (as VAD segments and packed windows start: mid-sentence). "lost >20%": segments whose word
  count with the list fell by more than 20% against the same segment decoded without it.
* lists: 1 term (ComfyUI, the issue's), 10 (the first ten term-clip terms), 100 (the twelve
  term-clip terms and 88 product, people and place names said nowhere: an archive's list).
* CPU: process CPU seconds of each decoding pass (all threads), the segment stage's ASR cost.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np

from pipeline import vocabulary as vocab
from pipeline.audio import decode
from pipeline.config import AsrConfig, VocabularyConfig

REPO = Path(__file__).resolve().parents[1]

CORPUS = REPO.parent / "shared" / "corpus"
SR = 16000

# (sentence, term said in it, espeak-ng voice, words per minute)
SENTENCES = [
    ("Please open Zorblax Studio before the meeting starts.", "Zorblax", "en-us", 150),
    ("The Quentrova sensor reported a fault this morning.", "Quentrova", "en-us", 160),
    ("Our team switched from Jenkins to Flumio for every release.", "Flumio", "en-gb", 150),
    ("We render every frame with Vextorial now.", "Vextorial", "en-us", 140),
    ("Doctor Amrakesh will present the results on Friday.", "Amrakesh", "en-gb", 155),
    ("The shipment left the port of Tellurivo yesterday.", "Tellurivo", "en-us", 165),
    ("Install the Plonkify plugin and restart the server.", "Plonkify", "en-us", 150),
    ("Mira Oskavell signed the contract in the afternoon.", "Oskavell", "en-gb", 145),
    ("Every node runs Kubernetes and the dashboard shows it.", "Kubernetes", "en-us", 160),
    ("I built the image pipeline in ComfyUI last week.", "ComfyUI", "en-gb", 150),
    ("The Brimwald valley floods every spring.", "Brimwald", "en-us", 150),
    ("Send the report to Zentharo before noon.", "Zentharo", "en-gb", 160),
]
# real speech around the synthetic sentences: corpus clips WITHOUT a reference transcript
CONTEXT = [
    "speech/speechbrain_spk1_snt6.wav",
    "speech/speechbrain_spk2_snt6.wav",
    "speech/lhotse_2412-153948-0001.flac",
    "speech/lhotse_common_voice_en_651325.mp3",
    "speech/silerovad_test.wav",
]


def load(path: Path | str) -> np.ndarray:
    return decode(str(path)).samples


def espeak(text: str, voice: str, wpm: int, out: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(out), text], check=True, capture_output=True)
    x = load(out)
    return (x / max(1e-6, float(np.abs(x).max())) * 0.5).astype(np.float32)


def term_clips(tmp: Path) -> list[np.ndarray]:
    ctx = [load(CORPUS / p) for p in CONTEXT]
    pieces = [c[i : i + 3 * SR] for c in ctx for i in range(0, max(1, len(c) - 3 * SR), 3 * SR)][:24]
    gap = np.zeros(SR // 3, np.float32)
    clips = []
    for k, (text, _term, voice, wpm) in enumerate(SENTENCES):
        synth = espeak(text, voice, wpm, tmp / f"{k}.wav")
        before, after = pieces[(2 * k) % len(pieces)], pieces[(2 * k + 1) % len(pieces)]
        clips.append(np.concatenate([before, gap, synth, gap, after]).astype(np.float32))
    return clips


def normalise(text: str) -> list[str]:
    text = unicodedata.normalize("NFC", text.lower())
    text = re.sub(r"[^\w\s']", " ", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(refs: list[str], hyps: list[str]) -> float:
    errors = sum(edit_distance(normalise(r), normalise(h)) for r, h in zip(refs, hyps))
    return errors / max(1, sum(len(normalise(r)) for r in refs))


# 88 names said nowhere in the corpus, with the twelve above: the 100-term list of an archive
OTHERS = (
    "PostgreSQL Terraform Grafana Prometheus Elasticsearch Kibana Jenkinsfile Ansible Kafka Zookeeper "
    "Cassandra Redis Memcached Nginx Traefik Istio Envoy Helm Argo Tekton Airflow Dagster Prefect Snowflake "
    "Databricks Looker Tableau Figma Miro Notion Confluence Jira Bitbucket GitLab Mattermost Zulip Discord "
    "Slackbot Twilio Stripe Plaid Shopify Magento WooCommerce Salesforce HubSpot Zendesk Intercom Mixpanel "
    "Amplitude Segment Heap Hotjar Optimizely LaunchDarkly Sentry Datadog NewRelic PagerDuty Opsgenie "
    "Splunk Sumologic Loggly Papertrail Cloudflare Fastly Akamai Vercel Netlify Heroku Render Fly.io "
    "Railway Supabase Firebase Appwrite Hasura Prisma Sequelize Mongoose Drizzle Knex Vite Webpack Rollup "
    "Esbuild Turbopack Svelte Astro Remix Nuxt Gatsby Qwik SolidJS Preact Alpine.js"
).split()


def term_lists() -> dict[str, list[str]]:
    terms = [t for _, t, _, _ in SENTENCES]
    hundred = (terms + [t for t in OTHERS if t not in terms])[:100]
    return {"1": ["ComfyUI"], "10": terms[:10], "100": hundred}


def cuts(clips: list[np.ndarray], seed: int = 0) -> list[tuple[int, np.ndarray]]:
    """(clip index, a 2-12 s cut at a seeded random place), about one per 4 s of each clip."""
    rng = np.random.default_rng(seed)
    out = []
    for k, x in enumerate(clips):
        n = len(x) / SR
        for _ in range(max(1, int(n // 4))):
            d = rng.uniform(2, 12)
            a = rng.uniform(0, max(0.0, n - d))
            out.append((k, x[int(a * SR) : int((a + d) * SR)]))
    return out


def transcribe(asr, clips: list[np.ndarray], langs: list[str], batch: int = 8) -> tuple[list[str], int]:
    out = []
    for i in range(0, len(clips), batch):
        chunk, chunk_langs = clips[i : i + batch], langs[i : i + batch]
        for lang in sorted(set(chunk_langs)):  # WhisperAsr decodes one language per call
            idx = [k for k, x in enumerate(chunk_langs) if x == lang]
            res = asr.transcribe([chunk[k] for k in idx], [lang] * len(idx))
            for k, r in zip(idx, res):
                out.append((i + k, r.text, r.vocabulary_guarded))
    out.sort()
    return [t for _, t, _ in out], sum(g for _, _, g in out)


MODES = {  # name -> (near_miss, max_word_loss)
    "before": (0.0, 1.0),  # the terms in every window's prompt, kept as decoded (before issue 31)
    "now": (0.0, VocabularyConfig().max_word_loss),  # every window also decoded plain; the guard chooses
    "near0.7": (0.7, VocabularyConfig().max_word_loss),  # the second pass only where a term is nearly said
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-prompt-tokens", type=int, default=VocabularyConfig().max_prompt_tokens)
    ap.add_argument("--model", default="base")
    ap.add_argument("--encode-pad-s", type=float, default=1.0)
    ap.add_argument("--lists", default="1,10,100")
    ap.add_argument("--modes", default="before,now,near0.7", help=f"of {','.join(MODES)}")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()

    from pipeline.backends.whisper import WhisperAsr

    asr = WhisperAsr(AsrConfig(model=args.model, encode_pad_s=args.encode_pad_s))
    refs = [json.loads(line) for line in (CORPUS / "references.jsonl").read_text().splitlines() if line.strip()]
    rest = [r for r in refs if r.get("text")]
    rest_clips = [load(CORPUS / r["audio_filepath"]) for r in rest]
    rest_langs = [r["lang"] for r in rest]
    spoken = [r for r in refs if r.get("lang")]
    cut = cuts([load(CORPUS / r["audio_filepath"]) for r in spoken])
    seg_clips = rest_clips + [c for _, c in cut]
    seg_langs = rest_langs + [spoken[k]["lang"] for k, _ in cut]
    with tempfile.TemporaryDirectory() as tmp:
        term_clips_ = term_clips(Path(tmp))
    said = [t for _, t, _, _ in SENTENCES]
    langs = sorted(set(rest_langs))

    def run(vocabulary: VocabularyConfig | None) -> dict:
        asr.set_vocabulary(vocabulary or VocabularyConfig())
        cpu = time.process_time()
        terms_out, _ = transcribe(asr, term_clips_, ["en"] * len(term_clips_))
        segs_out, guarded = transcribe(asr, seg_clips, seg_langs)
        return {"terms": terms_out, "segs": segs_out, "guarded": guarded, "cpu_s": time.process_time() - cpu}

    plain = run(None)
    print(f"[without] {plain['cpu_s']:.0f} CPU s", file=sys.stderr)
    rows = []

    def row(name: str, listed: list[str], r: dict) -> dict:
        ref_out = r["segs"][: len(rest)]
        wers = {
            lang: wer(
                [x["text"] for x in rest if x["lang"] == lang], [h for h, x in zip(ref_out, rest) if x["lang"] == lang]
            )
            for lang in langs
        }
        lost = {lang: 0 for lang in langs}
        for a, b, lang in zip(plain["segs"], r["segs"], seg_langs):
            if len(b.split()) < 0.8 * len(a.split()):
                lost[lang] += 1
        have = [k for k, t in enumerate(said) if t in listed]
        found = sum(vocab.contains_term(r["terms"][k], vocab.matcher([said[k]])) for k in have)
        m = vocab.matcher(listed) if listed else None
        alarms = sum(len(m.findall(h)) for h in ref_out) if m else 0
        return {
            "decoding": name,
            "terms": len(listed),
            "recall": f"{found}/{len(have)}",
            "wer": wers,
            "lost_20": lost,
            "guarded": r["guarded"],
            "false_alarms": alarms,
            "cpu_s": r["cpu_s"],
            "term_outputs": r["terms"],
        }

    rows.append(row("without", [], plain))
    print(f"ROW {json.dumps({k: v for k, v in rows[0].items() if k != 'term_outputs'})}", file=sys.stderr, flush=True)
    lists = term_lists()
    for n in args.lists.split(","):
        for mode in args.modes.split(","):
            near, loss = MODES[mode]
            v = VocabularyConfig(
                terms=lists[n], max_prompt_tokens=args.max_prompt_tokens, near_miss=near, max_word_loss=loss
            )
            r = run(v)
            rows.append(row(mode, lists[n], r))
            x = rows[-1]
            print(f"ROW {json.dumps({k: v for k, v in x.items() if k != 'term_outputs'})}", file=sys.stderr, flush=True)
            print(f"[{mode}, {n} terms] {r['cpu_s']:.0f} CPU s", file=sys.stderr)
            for t, h in zip(said, r["terms"]):
                if t in lists[n]:
                    print(
                        f"  {t:<11} {'+' if vocab.contains_term(h, vocab.matcher([t])) else '-'} {h}", file=sys.stderr
                    )

    print(
        f"Whisper {args.model}, int8, beam 1, encode_pad_s {args.encode_pad_s}; max_prompt_tokens={args.max_prompt_tokens}; "
        f"term clips: {len(term_clips_)}; reference clips: {len(rest)}; segments: {len(seg_clips)} "
        f"({len(rest)} reference clips + {len(cut)} cuts)"
    )
    print()
    print(
        "| decoding | terms | recall | "
        + " | ".join(f"WER {x} (change)" for x in langs)
        + " | segments lost >20% ("
        + "/".join(langs)
        + ") | guard fired | false alarms | CPU s |"
    )
    print("|---" * (7 + len(langs)) + "|")
    base = rows[0]["wer"]
    for r in rows:
        w = " | ".join(f"{r['wer'][x]:.4f} ({r['wer'][x] - base[x]:+.4f})" for x in langs)
        lost = "/".join(str(r["lost_20"][x]) for x in langs)
        print(
            f"| {r['decoding']} | {r['terms']} | {r['recall']} | {w} | {lost} (total {sum(r['lost_20'].values())}) | "
            f"{r['guarded']} | {r['false_alarms']} | {r['cpu_s']:.0f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
