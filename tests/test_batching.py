"""Bucketing: `plan_batches` packs items under a padded-seconds budget, each once (pipeline/batching.py)."""

from __future__ import annotations

import numpy as np

from pipeline.batching import plan_batches, small_pools


def _padding_ratio(batches, durs, cost) -> float:
    """Share of model compute spent on padding: 1 - audio / padded."""
    audio = sum(durs[i] for b in batches for i in b)
    return 1.0 - audio / sum(cost([durs[i] for i in b]) for b in batches)


def test_plan_batches_covers_every_item_once_and_respects_budget():
    rng = np.random.default_rng(1)
    durs = list(rng.uniform(0.5, 20, 200))

    def cost(d):  # FastConformer-style
        return max(d) * len(d)

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
    def whisper(d):
        return 30.0 * len(d)

    assert [len(b) for b in plan_batches(durs[:32], whisper, 240, 8, max_extra_padding=0.05)] == [8, 8, 8, 8]


def test_pools_under_two_calls_are_named_unless_the_input_is_one_pool():
    """The runner warns with the median pool when windows hold less than two calls' audio."""
    assert small_pools([139.0, 140.0, 90.0], call_s=480) == 139.0  # local.yaml's 16 files of short clips, NeMo calls
    assert small_pools([300.0, 300.0, 120.0], call_s=30) is None  # Whisper's 30 s calls: ten to a pool
    assert small_pools([100.0], call_s=480) is None  # the whole input is one pool: nothing more to gather
