"""Bucketing: `plan_batches` packs items under a padded-seconds budget, each once (pipeline/batching.py)."""

from __future__ import annotations

import numpy as np

from pipeline.batching import plan_batches


def _padding_ratio(batches, durs, cost) -> float:
    """Share of model compute spent on padding: 1 - audio / padded."""
    audio = sum(durs[i] for b in batches for i in b)
    return 1.0 - audio / sum(cost([durs[i] for i in b]) for b in batches)


def test_plan_batches_covers_every_item_once_and_respects_budget():
    rng = np.random.default_rng(1)
    durs = list(rng.uniform(0.5, 20, 200))
    cost = lambda d: max(d) * len(d)  # FastConformer-style
    batches = plan_batches(durs, cost, max_padded_s=120, max_items=32)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(200))
    assert all(cost([durs[i] for i in b]) <= 120 or len(b) == 1 for b in batches)
    on = _padding_ratio(batches, durs, cost)
    off = _padding_ratio(plan_batches(durs, cost, max_padded_s=120, max_items=32, sort=False), durs, cost)
    assert on < 0.1 < off
    batches = plan_batches(durs, cost, max_padded_s=120, max_items=32, max_extra_padding=0.05)
    tight = _padding_ratio(batches, durs, cost)
    assert tight <= 0.05 < on and sorted(i for b in batches for i in b) == list(range(200))
    # with Whisper's fixed 30 s window the rule never splits: batches stay full
    whisper = lambda d: 30.0 * len(d)
    assert [len(b) for b in plan_batches(durs[:32], whisper, 240, 8, max_extra_padding=0.05)] == [8, 8, 8, 8]
