"""Duration bucketing: pooled segments -> sub-batches under a padded-audio-seconds budget.

Padding is the largest waste in batch speech inference. The segment stage pools the segments of all
recordings in a Ray batch, sorts them by duration and packs neighbours together, so a batch's
longest item (which sets everyone's padded length) is close to its shortest. The cost of a batch is
the backend's own cost model (`AsrBackend.padded_seconds`): longest x count for FastConformer, a
fixed 30 s window per item for Whisper. With bucketing off, items are packed in arrival order under
the same budget: that is the baseline `bench/throughput.py` compares against.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CostFn = Callable[[Sequence[float]], float]


def plan_batches(
    durations: Sequence[float],
    cost: CostFn,
    max_padded_s: float,
    max_items: int,
    sort: bool = True,
    max_extra_padding: float | None = None,
    groups: Sequence[object] | None = None,
) -> list[list[int]]:
    """Indices of `durations` grouped into model calls. Every index appears exactly once; an item
    whose own cost exceeds the budget goes alone.

    With `sort` and `groups` (e.g. the language of each item, for a model that decodes one language
    per call), items are ordered by group, then duration, and a call never mixes groups.

    With `sort` and `max_extra_padding` r, an item joins the current batch only if that adds at most
    r x its duration more padding than starting a new batch would. This needs no knowledge of the
    model: for FastConformer (longest x count) it closes a batch when lengths drift apart; for
    Whisper (30 s per item whatever the batch) joining never costs more, so batches stay full."""
    group = (lambda i: str(groups[i])) if (sort and groups is not None) else (lambda i: "")
    order = (
        sorted(range(len(durations)), key=lambda i: (group(i), -durations[i])) if sort else list(range(len(durations)))
    )
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        trial = current + [i]
        if current:
            trial_cost = cost([durations[j] for j in trial])
            full = len(trial) > max_items or trial_cost > max_padded_s or group(i) != group(current[-1])
            drift = False
            if sort and max_extra_padding is not None:
                joined = trial_cost - cost([durations[j] for j in current])
                alone = cost([durations[i]])
                drift = joined - alone > max_extra_padding * durations[i]
            if full or drift:
                batches.append(current)
                trial = [i]
        current = trial
    if current:
        batches.append(current)
    return batches


def with_quadratic(cost: CostFn, quadratic_s: float) -> CostFn:
    """Add an attention term to a backend's linear cost: count x (longest / 30 s)^2 x quadratic_s."""
    if quadratic_s <= 0:
        return cost
    return lambda d: cost(d) + quadratic_s * len(d) * (max(d) / 30.0) ** 2 if d else 0.0


# Rough bytes per second by container, to estimate durations from listing sizes alone (no download).
_BYTES_PER_S = {
    ".wav": 32000,
    ".flac": 18000,
    ".mp3": 16000,
    ".m4a": 16000,
    ".mp4": 16000,
    ".aac": 16000,
    ".ogg": 8000,
    ".opus": 4000,
    ".webm": 6000,
}


def estimated_seconds(files: pa.Table) -> np.ndarray:
    """Seconds of each listed file (a LISTED_SCHEMA table): the manifest's duration, else the size
    over the container's typical bytes per second."""
    uri = pc.utf8_lower(files.column("uri"))
    rate = pa.repeat(pa.scalar(16000.0), files.num_rows)
    for ext, bps in _BYTES_PER_S.items():
        rate = pc.if_else(pc.ends_with(uri, ext), bps * 1.0, rate)
    by_size = pc.divide(pc.cast(files.column("size"), pa.float64()), rate)
    return pc.coalesce(files.column("duration_hint"), by_size).to_numpy().astype(float)


def windows(files: pa.Table, window_s: float, max_files: int) -> list[tuple[int, int]]:
    """Group the (already ordered) files into pooling windows of about `window_s` estimated seconds;
    returns (offset, length) slices of `files`.

    A window is one Ray block, and the segment stage receives it whole, so its segments are bucketed
    together. Long files go alone; neighbours in the longest-first order have similar lengths."""
    out: list[tuple[int, int]] = []
    start, seconds = 0, 0.0
    for i, est in enumerate(estimated_seconds(files).tolist()):
        if i > start and (seconds + est > window_s or i - start >= max_files):
            out.append((start, i - start))
            start, seconds = i, 0.0
        seconds += est
    if files.num_rows > start:
        out.append((start, files.num_rows - start))
    return out


def small_pools(pool_seconds: Sequence[float], call_s: float) -> float | None:
    """The median audio seconds of a pooling window when it is under two model calls' worth
    (`call_s` padded seconds each) and there is more than one window; else None.

    The segment stage sorts only the segments of one window, so a window that holds less than two
    calls leaves bucketed calls small (or, without the padding cap, padded). Small calls are slow
    on a CPU: for 200 short clips, local.yaml's pools gave a NeMo FastConformer 144 calls of median
    1 utterance, 12% slower than pools of 256 files (44 calls), 16% with 20% of a core busy
    elsewhere (bench/nemo_pools.py)."""
    if len(pool_seconds) < 2:  # the whole input fits one window: there is no more to pool
        return None
    median = float(np.median(pool_seconds))
    return median if median < 2 * call_s else None


def pack_windows(
    durations: Sequence[float], keys: Sequence[str | None], window_s: float, gap_s: float
) -> list[list[int]]:
    """First-fit-decreasing packing of clips into fixed windows (Whisper's 30 s), one key (language)
    per window. Each clip after the first in a window costs `gap_s` of silence before it. A clip
    longer than the window goes alone. Returns indices per window, in the order they are laid out."""
    bins: list[tuple[str | None, float, list[int]]] = []
    for i in sorted(range(len(durations)), key=lambda i: durations[i], reverse=True):
        need = durations[i]
        for b, (key, used, members) in enumerate(bins):
            if key == keys[i] and used + gap_s + need <= window_s:
                members.append(i)
                bins[b] = (key, used + gap_s + need, members)
                break
        else:
            bins.append((keys[i], need, [i]))
    return [members for _, _, members in bins]


def pack_consecutive(
    durations: Sequence[float], keys: Sequence[object], window_s: float, gap_s: float
) -> list[list[int]]:
    """Pack clips in their given (time) order: a window closes when the key changes (another
    recording, speaker or language) or the next clip would overflow it. This is Whisper's "cut &
    merge" within a recording (as faster-whisper's batched pipeline does), context kept in order."""
    out: list[list[int]] = []
    used = 0.0
    for i, d in enumerate(durations):
        if out and keys[out[-1][-1]] == keys[i] and used + gap_s + d <= window_s:
            out[-1].append(i)
            used += gap_s + d
        else:
            out.append([i])
            used = d
    return out
