"""What the NeMo backends share: loading a model once, batching clips into tensors, OOM splitting.

`NemoBackend` is the one loading preamble: the model reference (the config's `model`, else the
backend's default pretrained name) goes through `pipeline.models.load_nemo_model`, which fetches a
`.nemo` once per node, verifies it against the config's sha256 before NeMo unpickles it, and returns
the model in eval mode on the picked device. `model_id()` is the same for every backend.

torch and nemo are imported inside functions only: importing this module stays cheap.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from pipeline.config import ModelsConfig
from pipeline.models import inference_context, is_file_ref, load_nemo_model, pick_device
from pipeline.records import SAMPLE_RATE

__all__ = [
    "NemoBackend",
    "frame_seconds_of",
    "frames_in",
    "inference_context",
    "is_file_ref",
    "pad_batch",
    "split_on_oom",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class NemoBackend:
    """Base of every NeMo backend: `cfg` (a stage config with `model` and `sha256`), the model
    reference `ref`, the device and the loaded `_model`.

    Subclasses say which NeMo class restores their model (`_model_class`, importing nemo there) and
    may name a `default_model` used when the config gives none."""

    #: Pretrained name loaded when the config's `model` is empty.
    default_model: str = ""

    def __init__(self, cfg: Any, models: ModelsConfig, use_gpu: bool):
        self.cfg = cfg
        self._ref: str = cfg.model or self.default_model
        self._device = pick_device(use_gpu)
        self._model = load_nemo_model(self._model_class(), self._ref, cfg.sha256, models, self._device)

    def _model_class(self) -> Any:
        """The NeMo class to restore with; None restores whatever class the `.nemo` names."""
        return None

    def model_id(self) -> str:
        """`nemo:<reference>`, plus `@sha256:<first 12 hex>` when the config pins the file's digest."""
        sha256 = self.cfg.sha256
        return f"nemo:{self._ref}" + (f"@sha256:{sha256.strip().lower()[:12]}" if sha256 else "")

    def _inputs(self, clips: Sequence[np.ndarray], min_samples: int = 0) -> tuple[Any, Any]:
        """`clips` as one padded (B, N) tensor plus lengths, on this backend's device."""
        return pad_batch(clips, self._device, min_samples)

    def _inference(self) -> Any:
        return inference_context(self._device)


def pad_batch(clips: Sequence[np.ndarray], device: str, min_samples: int = 0) -> tuple[Any, Any]:
    """Right-pad clips into a (B, N) float32 tensor plus their lengths in samples (each at least
    `min_samples`: padding that short clips need to fill the model's receptive field)."""
    import torch  # heavy: torch, only where a model runs

    lens = [max(len(c), min_samples) for c in clips]
    x = torch.zeros(len(clips), max(lens), dtype=torch.float32)
    for i, c in enumerate(clips):
        x[i, : len(c)] = torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32))
    return x.to(device), torch.tensor(lens, dtype=torch.long, device=device)


def split_on_oom(fn: Callable[[list[T]], list[R]], items: list[T]) -> list[R]:
    """Run `fn` on `items`; if the GPU runs out of memory, split the batch in halves and retry each,
    recursively. A single item that still does not fit raises the OutOfMemoryError."""
    import torch  # heavy: torch, only where a model runs

    try:
        return fn(items)
    except torch.cuda.OutOfMemoryError:
        if len(items) <= 1:
            raise
        torch.cuda.empty_cache()
        mid = len(items) // 2
        log.warning("CUDA OOM on a batch of %d; retrying as %d + %d", len(items), mid, len(items) - mid)
        return split_on_oom(fn, items[:mid]) + split_on_oom(fn, items[mid:])


def frame_seconds_of(model: Any, default: float) -> float:
    """Seconds per output frame of a NeMo model: feature hop x encoder subsampling."""
    try:
        stride = float(model.cfg.preprocessor.window_stride)
    except Exception:  # noqa: BLE001
        return default
    factor = getattr(model.encoder, "subsampling_factor", None)
    if factor is None:  # ConvASREncoder (MarbleNet, TitaNet): product of the block strides
        factor = 1
        for block in model.cfg.encoder.get("jasper", []):
            factor *= int(np.prod(block.get("stride", [1])))
    return stride * int(factor)


def frames_in(samples: int, frame_s: float) -> int:
    """Output frames of `frame_s` seconds that cover `samples` samples (the last one partial)."""
    return int(math.ceil(samples / SAMPLE_RATE / frame_s))
