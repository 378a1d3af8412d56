"""report.html: one self-contained page a person opens after a run (no network, no JavaScript).

Plots are drawn with matplotlib (Agg backend, no display) and embedded as PNG data URIs, so the page
can be mailed, attached to a ticket or opened from an object store as it is. Everything on it comes
from the run report (pipeline/report.py): "Output" from its `output_totals` (the whole output, read
from the Delta tables after the run, so a rerun that did nothing still shows what the output holds),
"This run" from what the run itself did. A chart with nothing to show is left out.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from pipeline.audio_quality import HISTOGRAMS
from pipeline.report import OutputTotals, RunReport


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display)."""
    import matplotlib  # heavy: matplotlib and pyplot take about a second; only report.html draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"), so that no display backend is tried

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _bar(title: str, labels: list[str], values: list[float], xlabel: str = "", color: str = "#4c72b0") -> str | None:
    """A horizontal bar chart; None when every value is zero (the page leaves it out)."""
    if not any(values):
        return None
    fig, ax = _pyplot().subplots(figsize=(4.6, 2.6))
    ax.barh(labels[::-1], values[::-1], color=color)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _png(fig)


def _histogram(title: str, bins: list[int]) -> str | None:
    if not any(bins):
        return None
    fig, ax = _pyplot().subplots(figsize=(4.6, 2.6))
    ax.bar([i / 10 + 0.05 for i in range(len(bins))], bins, width=0.09, color="#55a868")
    ax.set_xlim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("confidence", fontsize=8)
    ax.set_ylabel("segments", fontsize=8)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _png(fig)


def _table(rows: list[list[str]], head: list[str]) -> str:
    if not rows:
        return "<p class=muted>none</p>"
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + cells + "</table>"


def _hours(seconds: float) -> str:
    """Audio length as a person reads it: hours from 0.1 h, minutes below, seconds below a minute."""
    if seconds >= 360:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _tiles(tiles: list[tuple[str, str]]) -> str:
    return "".join(f"<div class=tile><div class=k>{k}</div><div class=v>{html.escape(v)}</div></div>" for k, v in tiles)


def _images(charts: list[tuple[str, str | None]]) -> str:
    return "".join(f'<img alt="{alt}" src="{src}">' for alt, src in charts if src)


def _languages(seconds: dict[str, float]) -> str | None:
    langs = sorted(seconds.items(), key=lambda kv: -kv[1])[:15]
    return _bar("languages", [k for k, _ in langs], [v / 60 for _, v in langs], "minutes of segments", "#c44e52")


def _speakers(per: dict[str, int]) -> str | None:
    spk = sorted(per.items(), key=lambda kv: int(kv[0]))
    return _bar(
        "speakers per file",
        [f"{k} speaker{'s' if k != '1' else ''}" for k, _ in spk],
        [v for _, v in spk],
        "files",
        "#dd8452",
    )


def _output_section(t: OutputTotals) -> str:
    """The whole output after the run: totals and its languages / speakers charts."""
    share = t.accepted_share
    tiles = [
        ("recordings", f"{t.recordings} ({t.ok} ok · {t.no_speech} no speech · {t.error} error)"),
        ("audio", _hours(t.audio_seconds)),
        (
            "languages",
            ", ".join(list(t.language_seconds)[:6]) + (" ..." if len(t.language_seconds) > 6 else "") or "none",
        ),
        (
            "speakers",
            f"{t.speakers} in {sum(t.speakers_per_recording.values())} files"
            if t.speakers_per_recording
            else "not diarized",
        ),
        (
            "accepted",
            f"{share:.1%} of segment audio ({t.accepted_segments} of {t.accepted_segments + t.rejected_segments} segments)"
            if share is not None
            else "no segments",
        ),
    ]
    images = _images(
        [("output languages", _languages(t.language_seconds)), ("output speakers", _speakers(t.speakers_per_recording))]
    )
    models = _table([[m] for m in t.models], ["models (provenance of the committed rows)"])
    return (
        f"<h2>Output</h2><div class=tiles>{_tiles(tiles)}</div><div class=plots>{images}</div><h3>Models</h3>{models}"
    )


def render(report: RunReport) -> str:
    """The whole page as one HTML string."""
    r = report
    did = r.processed > 0  # a no-op rerun: the run's own tiles and charts would all be zero
    tiles = [
        ("audio", _hours(r.audio_seconds)),
        ("wall time", f"{r.wall_seconds / 60:.1f} min"),
        ("files", f"{r.ok} ok · {r.no_speech} no speech · {r.error} error · {r.skipped} skipped"),
    ]
    if did:
        tiles[2:2] = [("speed", f"{r.real_time_factor:.1f}x real time"), ("padding", f"{r.padding_ratio:.1%}")]
        tiles.append(
            (
                "segments",
                f"{r.accepted_segments} accepted ({_hours(r.accepted_seconds)}) · {r.rejected_segments} rejected",
            )
        )
    if r.overlap_recordings:  # only diarization backends that can tell overlapped speech report it
        tiles.append(("overlapped speech", f"{r.overlap_seconds / 60:.1f} min in {r.overlap_recordings} files"))
    charts: list[tuple[str, str | None]] = []
    if did:
        reasons = sorted(r.reject_reasons.items(), key=lambda kv: -kv[1])
        charts = [
            (
                "stages",
                _bar(
                    "real-time factor per stage (higher is faster)",
                    ["decode", "VAD + diarization", "ASR", "end to end"],
                    [
                        r.decode_real_time_factor,
                        r.recording_stage_real_time_factor,
                        r.asr_real_time_factor,
                        r.real_time_factor,
                    ],
                    "audio seconds per second",
                ),
            ),
            (
                "status",
                _bar("files by status", ["ok", "no speech", "error"], [r.ok, r.no_speech, r.error], "files", "#8172b2"),
            ),
            ("confidence", _histogram("segment confidence", r.confidence_histogram or [0] * 10)),
            (
                "rejections",
                _bar("rejections by reason", [k for k, _ in reasons], [v for _, v in reasons], "segments", "#937860"),
            ),
        ]
        if r.output_totals is None:  # an old caller without the output's totals: the run's own
            charts[2:2] = [
                ("languages", _languages(r.language_seconds)),
                ("speakers", _speakers(r.speakers_per_recording)),
            ]
    slow = _table(
        [[s["uri"], f"{s['duration']:.1f} s", f"{s['seconds']:.1f} s"] for s in r.slowest],
        ["file", "audio", "stage time"],
    )
    failed = _table([[e["uri"], e["error"] or ""] for e in r.errors[:200]], ["file", "error"])
    models = _table([[m] for m in r.models], ["models (provenance of the rows written)"])
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in r.warnings)
    output = _output_section(r.output_totals) if r.output_totals is not None else ""
    this_run = (
        f"<div class=plots>{_images(charts)}</div><h3>Models</h3>{models}<h3>Slowest files</h3>{slow}"
        if did
        else "<p class=muted>Nothing to do: every file found was already in the output.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Scriptorium run {html.escape(r.run_id)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}}
h1{{font-size:20px;margin:0 0 4px}} h2{{font-size:16px;margin:22px 0 8px}} h3{{font-size:14px;margin:16px 0 6px}}
.muted{{color:#777}} .tiles{{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}}
.tile{{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:150px}}
.k{{font-size:11px;color:#777;text-transform:uppercase}} .v{{font-size:15px;margin-top:2px}}
.plots img{{margin:4px 8px 4px 0;border:1px solid #eee}}
table{{border-collapse:collapse;font-size:12px}} td,th{{border:1px solid #ddd;padding:3px 8px;text-align:left}}
</style></head><body>
<h1>Scriptorium run {html.escape(r.run_id)}</h1>
<div class=muted>{html.escape(r.input_uri)} &rarr; {html.escape(r.output_uri)}</div>
{output}
<h2>This run</h2>
<div class=muted>{r.discovered} files found: {r.new} new, {r.changed} changed, {r.retried_failed} retried, {r.skipped} skipped</div>
<div class=tiles>{_tiles(tiles)}</div>
{"<h3>Warnings</h3><ul>" + warnings + "</ul>" if warnings else ""}
{this_run}
{_audio_quality(r)}
<h3>Failed files</h3>{failed}
</body></html>
"""


def _audio_quality(report: RunReport) -> str:
    """SNR, bandwidth and MOS of accepted against rejected segments (pipeline/audio_quality.py): whether
    the rejected audio is the noisy, narrowband or poor-sounding part. Empty when no signal was measured."""
    h = report.audio_histograms
    plots = []
    for name, (lo, hi, n) in HISTOGRAMS.items():
        acc, rej = h.get(f"{name}:accepted") or [0] * n, h.get(f"{name}:rejected") or [0] * n
        if not sum(acc) + sum(rej):
            continue
        fig, ax = _pyplot().subplots(figsize=(4.6, 2.6))
        width = (hi - lo) / n
        left = [lo + k * width for k in range(n)]
        ax.bar(left, acc, width=width * 0.9, align="edge", color="#55a868", label="accepted")
        ax.bar(left, rej, width=width * 0.9, align="edge", bottom=acc, color="#c44e52", label="rejected")
        ax.set_title(f"{name} of segments", fontsize=9)
        ax.set_ylabel("segments", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
        plots.append(f'<img alt="{name}" src="{_png(fig)}">')
    return "<h3>Audio quality: accepted vs rejected</h3><div class=plots>" + "".join(plots) + "</div>" if plots else ""
