"""Duration bucketing: pooled segments -> sub-batches under a padded-audio-seconds budget.

Padding is the largest waste in batch speech inference. The segment stage pools the segments of all
recordings in a Ray batch, sorts them by duration and packs neighbours together, so a batch's
longest item (which sets everyone's padded length) is close to its shortest. The cost of a batch is
the backend's own cost model (`AsrBackend.padded_seconds`): longest x count for FastConformer, a
fixed 30 s window per item for Whisper. With bucketing off, items are packed in arrival order under
the same budget: that is the baseline `bench/throughput.py` compares against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

CostFn = Callable[[Sequence[float]], float]


@dataclass
class BatchStats:
    audio_s: float = 0.0
    padded_s: float = 0.0
    calls: int = 0

    def add(self, durations: Sequence[float], cost: CostFn) -> None:
        self.audio_s += float(sum(durations))
        self.padded_s += float(cost(durations))
        self.calls += 1

    @property
    def padding_ratio(self) -> float:
        """Share of model compute spent on padding: 1 - audio / padded."""
        return 0.0 if self.padded_s <= 0 else max(0.0, 1.0 - self.audio_s / self.padded_s)


def plan_batches(
    durations: Sequence[float], cost: CostFn, max_padded_s: float, max_items: int, sort: bool = True
) -> list[list[int]]:
    """Indices of `durations` grouped into model calls. Every index appears exactly once; an item
    whose own cost exceeds the budget goes alone."""
    order = sorted(range(len(durations)), key=lambda i: durations[i], reverse=True) if sort else list(range(len(durations)))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        trial = current + [i]
        if current and (len(trial) > max_items or cost([durations[j] for j in trial]) > max_padded_s):
            batches.append(current)
            trial = [i]
        current = trial
    if current:
        batches.append(current)
    return batches
