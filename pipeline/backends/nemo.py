"""NeMo backends: FastConformer ASR (CTC, RNNT, TDT, hybrid; Canary), frame MarbleNet VAD,
AmberNet language ID, and Sortformer or TitaNet+clustering diarization. The production path on GPUs.

Every model is loaded through `pipeline.models.load_nemo_model`: a pretrained name, a local `.nemo`,
or `s3://.../x.nemo` fetched once per node and verified against its sha256. Inference is batched and
in memory: clips are padded into one tensor and run through preprocessor -> encoder -> decoder by hand
(no temp files, no DataLoader, no `transcribe()`, which leaves modules in train mode). All times are
seconds; the time base of each method is stated in its docstring.

torch and nemo are imported inside constructors and methods: `import pipeline.backends.nemo` is cheap,
and a job that never uses NeMo never pays its ~20 s import.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from pipeline.records import SAMPLE_RATE
from pipeline.clustering import cluster_for
from pipeline.config import AsrConfig, DiarizationConfig, LidConfig, ModelsConfig, VadConfig, VocabularyConfig
from pipeline.records import AsrResult, Span, Word

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_VAD_MODEL = "vad_multilingual_frame_marblenet"
DEFAULT_LID_MODEL = "langid_ambernet"
DEFAULT_DIAR_MODEL = "diar_sortformer_4spk-v1"

_PUNCTUATION = set(".,?!;:¿¡")


# --------------------------------------------------------------------------------------------------
# Shared helpers (pure where possible, so they are testable without a model)


def _pad_batch(clips: Sequence[np.ndarray], device: str, min_samples: int = 0) -> tuple[Any, Any]:
    """Right-pad clips into a (B, N) float32 tensor plus their lengths in samples."""
    import torch

    lens = [max(len(c), min_samples) for c in clips]
    x = torch.zeros(len(clips), max(lens), dtype=torch.float32)
    for i, c in enumerate(clips):
        x[i, : len(c)] = torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32))
    return x.to(device), torch.tensor(lens, dtype=torch.long, device=device)


def split_on_oom(fn: Callable[[list[T]], list[R]], items: list[T]) -> list[R]:
    """Run `fn` on `items`; if the GPU runs out of memory, split the batch in halves and retry each,
    recursively. A single item that still does not fit raises the OutOfMemoryError."""
    import torch

    try:
        return fn(items)
    except torch.cuda.OutOfMemoryError:
        if len(items) <= 1:
            raise
        torch.cuda.empty_cache()
        mid = len(items) // 2
        log.warning("CUDA OOM on a batch of %d; retrying as %d + %d", len(items), mid, len(items) - mid)
        return split_on_oom(fn, items[:mid]) + split_on_oom(fn, items[mid:])


def _file_or_default(ref: str | None, default: str) -> str:
    return ref if ref else default


def _model_id(ref: str, sha256: str | None) -> str:
    return f"nemo:{ref}" + (f"@sha256:{sha256.strip().lower()[:12]}" if sha256 else "")


def probs_to_regions(
    probs: np.ndarray,
    frame_s: float,
    onset: float,
    offset: float,
    min_speech_s: float,
    min_silence_s: float,
    pad_s: float,
    duration: float,
) -> list[Span]:
    """Frame speech probabilities -> speech regions, in seconds of the same timeline as frame 0.

    Hysteresis: speech starts at the first frame with p >= `onset` and ends at the first frame with
    p < `offset` (offset <= onset). Then, in order: pauses shorter than `min_silence_s` are bridged,
    regions shorter than `min_speech_s` are dropped, each region is padded by `pad_s` on both sides
    (clamped to [0, duration]) and regions that now touch are merged. Sorted, non-overlapping."""
    offset = min(offset, onset)
    raw: list[list[float]] = []
    start: int | None = None
    for i, p in enumerate(np.asarray(probs, dtype=np.float64)):
        if start is None and p >= onset:
            start = i
        elif start is not None and p < offset:
            raw.append([start * frame_s, i * frame_s])
            start = None
    if start is not None:
        raw.append([start * frame_s, len(probs) * frame_s])
    merged: list[list[float]] = []
    for s, e in raw:
        if merged and s - merged[-1][1] < min_silence_s:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    out: list[list[float]] = []
    for s, e in merged:
        if e - s < min_speech_s:
            continue
        s, e = max(0.0, s - pad_s), min(duration, e + pad_s)
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [Span(float(s), float(e)) for s, e in out]


def exclusive_turns(
    probs: np.ndarray, frame_s: float, regions: Sequence[Span], min_turn_s: float = 0.3
) -> list[Span]:
    """Per-frame speaker probabilities (T, S) -> non-overlapping speaker turns covering `regions`.

    Each frame inside a region goes to its most probable speaker (exclusive diarization: overlapped
    speech goes to the dominant speaker, so every word lands in exactly one turn). Runs shorter than
    `min_turn_s` are absorbed by the previous run (or the next, at a region start). Turn boundaries are
    frame boundaries, except at region edges, which are kept exactly. Speakers are renamed "spk0",
    "spk1", ... in order of first appearance."""
    probs = np.asarray(probs, dtype=np.float64)
    turns: list[tuple[float, float, int]] = []
    n_frames = probs.shape[0]
    for region in regions:
        lo = min(int(math.floor(region.start / frame_s)), max(n_frames - 1, 0))
        hi = max(min(int(math.ceil(region.end / frame_s)), n_frames), lo + 1)
        labels = _frame_labels(probs[lo:hi]) if n_frames else np.zeros(1, dtype=int)
        runs: list[list[int]] = []  # [first_frame, end_frame, speaker]
        for j, spk in enumerate(labels):
            if runs and runs[-1][2] == spk:
                runs[-1][1] = lo + j + 1
            else:
                runs.append([lo + j, lo + j + 1, int(spk)])
        min_frames = max(1, int(round(min_turn_s / frame_s)))
        smoothed: list[list[int]] = []
        for run in runs:
            if smoothed and (smoothed[-1][2] == run[2] or run[1] - run[0] < min_frames):
                smoothed[-1][1] = run[1]  # same speaker, or too short to be a turn: absorbed
            else:
                smoothed.append(list(run))
        if len(smoothed) > 1 and smoothed[0][1] - smoothed[0][0] < min_frames:
            smoothed[1][0] = smoothed[0][0]  # a too-short first run goes to the next speaker
            smoothed.pop(0)
        for k, (a, b, spk) in enumerate(smoothed):
            s = region.start if k == 0 else max(region.start, a * frame_s)
            e = region.end if k == len(smoothed) - 1 else min(region.end, b * frame_s)
            if e > s:
                turns.append((s, e, spk))
    names: dict[int, str] = {}
    out = []
    for s, e, spk in turns:
        name = names.setdefault(spk, f"spk{len(names)}")
        if out and out[-1].speaker == name and abs(out[-1].end - s) < 1e-9:
            out[-1] = Span(out[-1].start, e, name)
        else:
            out.append(Span(float(s), float(e), name))
    return out


def _frame_labels(probs: np.ndarray, active: float = 0.5) -> np.ndarray:
    """Most probable speaker per frame; frames where nobody is active (a pause inside a VAD region)
    take the speaker of the nearest active frame."""
    labels = probs.argmax(axis=1)
    is_active = probs.max(axis=1) >= active
    if is_active.all() or not is_active.any():
        return labels
    idx = np.where(is_active)[0]
    pos = np.searchsorted(idx, np.arange(len(labels)))
    left = idx[np.clip(pos - 1, 0, len(idx) - 1)]
    right = idx[np.clip(pos, 0, len(idx) - 1)]
    frames = np.arange(len(labels))
    nearest = np.where(np.abs(frames - left) <= np.abs(right - frames), left, right)
    return labels[nearest]


def _frame_seconds_of(model: Any, default: float) -> float:
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


# --------------------------------------------------------------------------------------------------
# VAD


class NemoVad:
    """Frame-level MarbleNet VAD (`EncDecFrameClassificationModel`): speech probability every 20 ms.

    Long recordings are cut into `window_s` windows (with `context_s` of extra audio on each side,
    discarded after the forward so window edges see real context), processed `batch_windows` at a
    time: memory stays bounded whatever the recording length."""

    window_s = 60.0
    context_s = 1.0
    batch_windows = 8

    def __init__(self, cfg: VadConfig, models: ModelsConfig, use_gpu: bool):
        from nemo.collections.asr.models import EncDecFrameClassificationModel

        from pipeline.models import load_nemo_model, pick_device

        self.cfg = cfg
        self._ref = _file_or_default(cfg.model, DEFAULT_VAD_MODEL)
        self._device = pick_device(use_gpu)
        self._model = load_nemo_model(EncDecFrameClassificationModel, self._ref, cfg.sha256, models, self._device)
        labels = [str(x) for x in (self._model.cfg.get("labels") or ["0", "1"])]
        self._speech_index = next(
            (i for i, lab in enumerate(labels) if lab.lower() in ("1", "speech")), len(labels) - 1
        )
        self.frame_s = _frame_seconds_of(self._model, 0.02)

    def model_id(self) -> str:
        return _model_id(self._ref, self.cfg.sha256)

    def speech_probs(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability per frame of `frame_s` seconds, frame 0 at sample 0."""
        n = len(audio)
        total = int(math.ceil(n / SAMPLE_RATE / self.frame_s))
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        win = int(self.window_s * SAMPLE_RATE)
        ctx = int(self.context_s * SAMPLE_RATE)
        starts = list(range(0, n, win))
        jobs = [(s, max(0, s - ctx), min(n, s + win + ctx)) for s in starts]
        probs = np.zeros(total, dtype=np.float32)
        for b in range(0, len(jobs), self.batch_windows):
            chunk = jobs[b : b + self.batch_windows]
            clips = [audio[lo:hi] for _, lo, hi in chunk]
            outs = split_on_oom(self._forward, clips)
            for (s, lo, _hi), p in zip(chunk, outs):
                first = int(round((s - lo) / SAMPLE_RATE / self.frame_s))
                keep = int(math.ceil(min(win, n - s) / SAMPLE_RATE / self.frame_s))
                f0 = int(round(s / SAMPLE_RATE / self.frame_s))
                seg = p[first : first + keep]
                probs[f0 : f0 + len(seg)] = seg[: max(0, total - f0)]
        return probs

    def _forward(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        from pipeline.models import inference_context

        x, lens = _pad_batch(clips, self._device, min_samples=SAMPLE_RATE // 10)
        with inference_context(self._device):
            logits = self._model(input_signal=x, input_signal_length=lens)
            p = torch.softmax(logits.float(), dim=-1)[..., self._speech_index].cpu().numpy()
        out = []
        for i, c in enumerate(clips):
            frames = int(math.ceil(len(c) / SAMPLE_RATE / self.frame_s))
            out.append(p[i, :frames])
        return out

    def speech_regions(self, audio: np.ndarray) -> list[Span]:
        """Speech regions of one recording, seconds of its timeline, sorted and non-overlapping."""
        probs = self.speech_probs(audio)
        neg = self.cfg.neg_threshold if self.cfg.neg_threshold is not None else max(0.01, self.cfg.threshold - 0.15)
        return probs_to_regions(
            probs,
            self.frame_s,
            onset=self.cfg.threshold,
            offset=neg,
            min_speech_s=self.cfg.min_speech_s,
            min_silence_s=self.cfg.min_silence_s,
            pad_s=self.cfg.pad_s,
            duration=len(audio) / SAMPLE_RATE,
        )


# --------------------------------------------------------------------------------------------------
# Language ID


class NemoLid:
    """AmberNet-style spoken language ID (`EncDecSpeakerLabelModel` with language labels).

    One batched forward per call (padded; the encoder masks padding and the attentive pooling uses the
    lengths). Only the first `max_clip_s` seconds of each clip are used: language is stable within an
    utterance and this bounds the cost of long clips."""

    max_clip_s = 20.0

    def __init__(self, cfg: LidConfig, models: ModelsConfig, use_gpu: bool):
        from nemo.collections.asr.models import EncDecSpeakerLabelModel

        from pipeline.models import load_nemo_model, pick_device

        self.cfg = cfg
        self._ref = _file_or_default(cfg.model, DEFAULT_LID_MODEL)
        self._device = pick_device(use_gpu)
        self._model = load_nemo_model(EncDecSpeakerLabelModel, self._ref, cfg.sha256, models, self._device)
        mcfg = self._model.cfg
        labels = (mcfg.get("train_ds") or {}).get("labels") or mcfg.get("labels")
        if not labels:
            raise ValueError(f"LID model {self._ref!r} stores no labels (cfg.train_ds.labels / cfg.labels)")
        self._labels = [str(x) for x in labels]

    def labels(self) -> list[str]:
        return list(self._labels)

    def model_id(self) -> str:
        return _model_id(self._ref, self.cfg.sha256)

    def identify(self, clips: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """(language, probability) per clip, in order."""
        if not clips:
            return []
        limit = int(self.max_clip_s * SAMPLE_RATE)
        return split_on_oom(self._forward, [c[:limit] for c in clips])

    def _forward(self, clips: list[np.ndarray]) -> list[tuple[str, float]]:
        import torch

        from pipeline.models import inference_context

        x, lens = _pad_batch(clips, self._device, min_samples=SAMPLE_RATE // 4)
        with inference_context(self._device):
            logits, _emb = self._model(input_signal=x, input_signal_length=lens)
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        best = probs.argmax(axis=1)
        return [(self._labels[int(k)], float(probs[i, k])) for i, k in enumerate(best)]


# --------------------------------------------------------------------------------------------------
# ASR


@dataclass
class _Kind:
    multitask: bool  # Canary (AED): prompt-driven, decoded through transcribe()
    ctc: bool  # decode with a CTC head (pure CTC models)


class NemoAsr:
    """FastConformer ASR: CTC, RNNT, TDT, hybrid TDT/RNNT+CTC (decoded with the transducer head),
    and Canary multitask models.

    Word timestamps come from NeMo's greedy decoders (`compute_timestamps`): encoder-frame offsets x
    (feature hop x subsampling) seconds, relative to the clip start, clamped to [0, clip duration] and
    made monotonic. Per-word confidence is NeMo's frame/token confidence with the `max_prob` measure
    (the probability of the emitted token, linearly rescaled so a uniform distribution is 0 and
    certainty is 1), blank frames excluded, aggregated per word with `min` over the word's tokens;
    the utterance confidence is the mean word confidence (0.0 for an empty transcript).
    `avg_logprob` is left None: NeMo's path scores are not per-token log-probabilities comparable to
    Whisper's."""

    min_clip_s = 0.1

    def __init__(self, cfg: AsrConfig, models: ModelsConfig, use_gpu: bool):
        from nemo.collections.asr.models import ASRModel

        from pipeline.models import load_nemo_model, pick_device

        self.cfg = cfg
        self._device = pick_device(use_gpu)
        if not use_gpu and cfg.cpu_threads > 0:
            import torch

            # Inside a Ray actor torch defaults to the actor's CPU share (often 1 thread).
            torch.set_num_threads(cfg.cpu_threads)
        self._model = load_nemo_model(ASRModel, cfg.model, cfg.sha256, models, self._device)
        self._kind = self._detect_kind()
        if self._kind.multitask:
            self._configure_multitask_decoding()
        else:
            self._configure_decoding()
        self.native_punctuation = tokenizer_has_punctuation(self._model.tokenizer)
        self.frame_s = _frame_seconds_of(self._model, 0.08)

    # -- setup -----------------------------------------------------------------------------------
    def _detect_kind(self) -> _Kind:
        from nemo.collections.asr.models import EncDecMultiTaskModel

        m = self._model
        if isinstance(m, EncDecMultiTaskModel):
            return _Kind(multitask=True, ctc=False)
        is_transducer = hasattr(m, "joint")
        return _Kind(multitask=False, ctc=not is_transducer)

    def _configure_decoding(self) -> None:
        from omegaconf import OmegaConf

        dc = OmegaConf.to_container(self._model.cfg.decoding, resolve=True)
        dc["strategy"] = "greedy_batch"
        dc["compute_timestamps"] = True
        dc["preserve_alignments"] = False
        dc["confidence_cfg"] = {
            "preserve_frame_confidence": False,
            "preserve_token_confidence": True,
            "preserve_word_confidence": False,
            "exclude_blank": True,
            "aggregation": "min",
            "tdt_include_duration": False,
            "method_cfg": {"name": "max_prob"},
        }
        self._decoding_dc = dc
        self._apply_decoding(dc)

    def _apply_decoding(self, dc: dict) -> None:
        from omegaconf import OmegaConf

        kwargs = {"decoder_type": "rnnt"} if hasattr(self._model, "cur_decoder") else {}
        self._model.change_decoding_strategy(OmegaConf.create(dc), verbose=False, **kwargs)
        self._model.eval()

    def _configure_multitask_decoding(self) -> None:
        """Canary: greedy AED decoding with per-token max_prob confidence aggregated per word (min)."""
        from omegaconf import OmegaConf

        dc = OmegaConf.to_container(self._model.cfg.decoding, resolve=True)
        dc["strategy"] = "greedy"
        greedy = dc.setdefault("greedy", {}) or {}
        if greedy.get("max_generation_delta", -1) in (-1, None):
            # bound the output by the encoder length + delta (a hallucination guard), as beam search does
            greedy["max_generation_delta"] = (dc.get("beam") or {}).get("max_generation_delta", 50)
        dc["greedy"] = greedy
        dc["confidence_cfg"] = {
            "preserve_frame_confidence": True,
            "preserve_token_confidence": True,
            "preserve_word_confidence": True,
            "exclude_blank": False,
            "aggregation": "min",
            "method_cfg": {"name": "max_prob"},
        }
        self._decoding_dc = dc
        self._model.change_decoding_strategy(OmegaConf.create(dc))
        self._model.eval()
        langs = getattr(self._model.tokenizer, "langs", None) or []
        self._canary_langs = {str(x) for x in langs if x != "spl_tokens"}

    # -- word boosting ---------------------------------------------------------------------------
    def set_vocabulary(self, vocabulary: VocabularyConfig) -> list[str]:
        """Bias decoding towards the job's terms with NeMo's own phrase boosting (GPU-PB): a boosting
        tree (`BoostingTreeModelConfig`, built by NeMo from `key_phrases_list` with the model's
        tokenizer) fused into the decoder with weight `boosting_tree_alpha` = `vocabulary.boost`.

        * CTC: `greedy_batch` (`GreedyBatchedCTCInfer`, decoding.greedy.boosting_tree).
        * RNNT / TDT / hybrid (transducer head): `greedy_batch` label-looping decoders
          (`GreedyBatchedRNNTInfer` / `GreedyBatchedTDTInfer`, decoding.greedy.boosting_tree).
        * Canary (AED): NeMo fuses the tree only into beam search (`TransformerAEDBeamInfer`,
          decoding.beam.boosting_tree), so decoding switches to beam (beam_size = asr.beam_size).
        Terms of every language go into one tree (the decoder is built once per model). For a model
        without casing the terms are lower-cased, as the model writes them; a term's weight scales
        its per-token context score. Returns warnings for the run summary: a model type NeMo cannot
        bias (e.g. multi-blank RNNT) keeps its plain decoding and says so."""
        from pipeline.vocabulary import all_terms

        terms = all_terms(vocabulary)
        if not terms:
            return []
        if not self.native_punctuation:
            terms = [(t.lower(), w) for t, w in terms]
        if self._kind.multitask and self._output_vocab_size() != int(self._model.tokenizer.vocab_size):
            # NeMo 3.0 sizes the tree by the tokenizer, Canary's beam search scores the output layer
            # (the vocabulary padded to a multiple of 8): the shapes differ and decoding would crash.
            return [
                f"vocabulary ignored: NeMo 3.0 cannot boost phrases for Canary model {self.cfg.model!r} "
                f"(tokenizer vocabulary {self._model.tokenizer.vocab_size} != output layer "
                f"{self._output_vocab_size()})"
            ]
        tree = self._boosting_tree_cfg(terms)
        dc = copy.deepcopy(self._decoding_dc)
        try:
            if self._kind.multitask:
                from omegaconf import OmegaConf

                dc["strategy"] = "beam"
                beam = dict(dc.get("beam") or {})
                beam.update(beam_size=max(1, self.cfg.beam_size), return_best_hypothesis=True,
                            boosting_tree=tree, boosting_tree_alpha=vocabulary.boost)
                beam.setdefault("max_generation_delta", (dc.get("greedy") or {}).get("max_generation_delta", 50))
                dc["beam"] = beam
                self._model.change_decoding_strategy(OmegaConf.create(dc))
                self._model.eval()
            else:
                greedy = dict(dc.get("greedy") or {})
                greedy.update(boosting_tree=tree, boosting_tree_alpha=vocabulary.boost)
                dc["greedy"] = greedy
                self._apply_decoding(dc)
        except NotImplementedError as exc:
            log.warning("vocabulary: NeMo cannot bias %s: %s", self.cfg.model, exc)
            if self._kind.multitask:
                self._configure_multitask_decoding()
            else:
                self._apply_decoding(self._decoding_dc)
            return [
                f"vocabulary ignored: NeMo 3.0 has no phrase boosting for ASR model {self.cfg.model!r} "
                f"({type(self._model).__name__}: {str(exc).strip()[:160]})"
            ]
        self.vocabulary_terms = [t for t, _ in terms]
        log.info("vocabulary: %d terms boosted in %s (alpha %.2f)", len(terms), self.cfg.model, vocabulary.boost)
        return []

    def _boosting_tree_cfg(self, terms: list[tuple[str, float]]) -> dict:
        """BoostingTreeModelConfig fields for NeMo. Uniform weights: NeMo builds the tree from
        `key_phrases_list`. Mixed weights: the tree is built here with NeMo's own ContextGraph and
        GPUBoostingTreeModel (per-phrase token scores = weight x context_score) and handed to the
        decoder as `model_path`, which NeMo loads instead of building its own."""
        import importlib.util

        base = {
            "context_score": 1.0,
            "depth_scaling": 2.0 if not self._kind.multitask else 1.0,  # NeMo's defaults per model family
            "use_triton": self._device.startswith("cuda") and importlib.util.find_spec("triton") is not None,
        }
        if len({w for _, w in terms}) <= 1:
            scale = terms[0][1]
            return {**base, "key_phrases_list": [t for t, _ in terms], "context_score": base["context_score"] * scale}
        import tempfile

        from nemo.collections.asr.parts.context_biasing.boosting_graph_batched import GPUBoostingTreeModel
        from nemo.collections.asr.parts.context_biasing.context_graph_universal import ContextGraph

        tok = self._model.tokenizer
        if self._kind.multitask:  # an aggregate tokenizer: one language's sub-tokenizer (English if it has one)
            langs = sorted(self._canary_langs)
            lang = "en" if "en" in langs or not langs else langs[0]
            token_ids = [tok.text_to_ids(t, lang) for t, _ in terms]
        else:
            token_ids = [tok.text_to_ids(t) for t, _ in terms]
        graph = ContextGraph(context_score=base["context_score"], depth_scaling=base["depth_scaling"])
        graph.build(token_ids=token_ids, phrases=[t for t, _ in terms],
                    scores=[base["context_score"] * w for _, w in terms])
        tree = GPUBoostingTreeModel.from_context_graph(
            context_graph=graph, vocab_size=tok.vocab_size, final_eos_score=1.0, use_triton=base["use_triton"]
        )
        self._tree_dir = tempfile.TemporaryDirectory(prefix="scriptorium-btree-")
        path = f"{self._tree_dir.name}/boosting_tree.nemo"
        tree.save_to(path)
        return {**base, "model_path": path}

    def _output_vocab_size(self) -> int:
        """Labels the decoder scores (blank excluded): the tokenizer's, or Canary's padded output layer."""
        import torch

        size = int(self._model.tokenizer.vocab_size)
        if self._kind.multitask:
            linears = [m for m in self._model.log_softmax.modules() if isinstance(m, torch.nn.Linear)]
            if linears:
                size = int(linears[-1].out_features)
        return size

    # -- interface -------------------------------------------------------------------------------
    def model_id(self) -> str:
        return _model_id(self.cfg.model, self.cfg.sha256)

    def padded_seconds(self, durations: Sequence[float]) -> float:
        """FastConformer cost: every clip is padded to the longest of the call."""
        return max(durations) * len(durations) if durations else 0.0

    def transcribe(self, clips: Sequence[np.ndarray], languages: Sequence[str | None]) -> list[AsrResult]:
        """One result per clip, in order; word times in seconds relative to the clip start.

        `languages` steers Canary (source language of the prompt); other NeMo models ignore it and
        echo it in `AsrResult.language` (they do not report a detected language)."""
        if len(languages) != len(clips):
            raise ValueError(f"{len(clips)} clips but {len(languages)} languages")
        results: list[AsrResult | None] = [None] * len(clips)
        todo = []
        for i, c in enumerate(clips):
            if len(c) < self.min_clip_s * SAMPLE_RATE:
                results[i] = AsrResult(text="", words=[], confidence=0.0, language=languages[i])
            else:
                todo.append(i)
        if self._kind.multitask:
            by_lang: dict[str | None, list[int]] = {}
            for i in todo:
                by_lang.setdefault(languages[i], []).append(i)
            for lang, idx in by_lang.items():
                outs = split_on_oom(lambda cs, lang=lang: self._canary(cs, lang), [clips[i] for i in idx])
                for i, r in zip(idx, outs):
                    results[i] = r
        elif todo:
            outs = split_on_oom(self._forward, [clips[i] for i in todo])
            for i, r in zip(todo, outs):
                r.language = languages[i]
                results[i] = r
        return [r for r in results if r is not None]

    # -- FastConformer CTC / transducer ----------------------------------------------------------
    def _forward(self, clips: list[np.ndarray]) -> list[AsrResult]:
        from pipeline.models import inference_context

        m = self._model
        x, lens = _pad_batch(clips, self._device)
        with inference_context(self._device):
            feats, feat_lens = m.preprocessor(input_signal=x, length=lens)
            enc, enc_lens = m.encoder(audio_signal=feats, length=feat_lens)
            if self._kind.ctc:
                log_probs = m.decoder(encoder_output=enc)
                hyps = m.decoding.ctc_decoder_predictions_tensor(log_probs, enc_lens, return_hypotheses=True)
            else:
                hyps = m.decoding.rnnt_decoder_predictions_tensor(
                    encoder_output=enc, encoded_lengths=enc_lens, return_hypotheses=True
                )
        if isinstance(hyps, tuple):  # older NeMo returned (best, all)
            hyps = hyps[0]
        return [self._to_result(h, len(c) / SAMPLE_RATE) for h, c in zip(hyps, clips)]

    def _to_result(self, hyp: Any, duration: float) -> AsrResult:
        ts = hyp.timestamp if isinstance(getattr(hyp, "timestamp", None), dict) else {}
        raw_words = ts.get("word") or []
        tokens = ts.get("char") or ts.get("token") or []
        token_conf = list(hyp.token_confidence or []) if getattr(hyp, "token_confidence", None) is not None else []
        word_conf = _word_confidences(raw_words, tokens, token_conf)
        words = _clamp_words(
            [
                (str(w["word"]).strip(), float(w["start_offset"]) * self.frame_s, float(w["end_offset"]) * self.frame_s, c)
                for w, c in zip(raw_words, word_conf)
            ],
            duration,
        )
        text = (hyp.text or "").strip() if isinstance(hyp.text, str) else ""
        conf = float(np.mean([w.confidence for w in words])) if words else 0.0
        return AsrResult(text=text, words=words, confidence=conf)

    # -- Canary (AED multitask) ------------------------------------------------------------------
    def _canary(self, clips: list[np.ndarray], language: str | None) -> list[AsrResult]:
        """Canary through NeMo's own transcribe() (its prompt formatting and Lhotse dataloader), one
        language per call; source = target = the language (transcription, not translation), with
        punctuation. A language the model has no tokenizer for (or None) is transcribed with the
        "en" prompt (or the model's first language); the result still reports the language it was given.

        Word timestamps exist only where the model provides them (canary-1b-v2's auxiliary CTC
        aligner, or a timestamp-prompted model); otherwise `words` is empty and only the
        utterance confidence (mean word confidence) is set."""
        fallback = "en" if "en" in self._canary_langs or not self._canary_langs else sorted(self._canary_langs)[0]
        prompt_lang = language if language in self._canary_langs else fallback
        if language is not None and prompt_lang != language:
            log.warning("Canary model has no %r prompt; transcribing with %r", language, prompt_lang)
        hyps = self._model.transcribe(
            [np.asarray(c, dtype=np.float32) for c in clips],
            batch_size=len(clips),
            num_workers=0,  # no dataloader worker processes inside an actor
            return_hypotheses=True,
            verbose=False,
            timestamps=True,
            task="asr",
            source_lang=prompt_lang,
            target_lang=prompt_lang,
            pnc="yes",
        )
        self._model.eval()  # transcribe() may leave modules in train mode
        out = []
        for h, c in zip(hyps, clips):
            duration = len(c) / SAMPLE_RATE
            text = (h.text or "").strip()
            word_conf = [float(x) for x in (getattr(h, "word_confidence", None) or [])]
            conf = float(np.mean(word_conf)) if word_conf else 0.0
            ts = h.timestamp if isinstance(getattr(h, "timestamp", None), dict) else {}
            raw = ts.get("word") or []
            if len(word_conf) != len(raw):
                word_conf = [conf] * len(raw)
            items = []
            for w, wc in zip(raw, word_conf):
                start = float(w["start"]) if "start" in w else float(w["start_offset"]) * self.frame_s
                end = float(w["end"]) if "end" in w else float(w["end_offset"]) * self.frame_s
                items.append((str(w["word"]).strip(), start, end, wc))
            out.append(AsrResult(text=text, words=_clamp_words(items, duration), confidence=conf, language=language))
        return out


def tokenizer_has_punctuation(tokenizer: Any) -> bool:
    """True if the model's vocabulary can write punctuation or upper case (a `_pc`-style model)."""
    vocab = getattr(tokenizer, "vocab", None)
    if vocab is None:
        try:
            vocab = tokenizer.ids_to_tokens(list(range(tokenizer.vocab_size)))
        except Exception:  # noqa: BLE001
            return False
    for piece in vocab:
        piece = str(piece)
        if piece.startswith("<") and piece.endswith(">"):
            continue  # special tokens (<unk>, <|en|>, ...)
        if any(ch in _PUNCTUATION or ch.isupper() for ch in piece):
            return True
    return False


def _word_confidences(words: list[dict], tokens: list[dict], token_conf: list[float]) -> list[float]:
    """min of the token confidences of each word; a token belongs to the last word starting at or
    before its start offset. Words with no scored token get the mean over all tokens."""
    if not words:
        return []
    if not token_conf or len(token_conf) != len(tokens):
        fallback = float(np.mean(token_conf)) if token_conf else 0.0
        return [fallback] * len(words)
    starts = [float(w["start_offset"]) for w in words]
    per_word: list[list[float]] = [[] for _ in words]
    j = 0
    for tok, c in zip(tokens, token_conf):
        t0 = float(tok["start_offset"])
        while j + 1 < len(words) and starts[j + 1] <= t0 and len(per_word[j]) > 0:
            j += 1
        per_word[j].append(float(c))
    overall = float(np.mean(token_conf))
    return [float(min(cs)) if cs else overall for cs in per_word]


def _clamp_words(items: list[tuple[str, float, float, float]], duration: float) -> list[Word]:
    """Words with times clamped to [0, duration], starts non-decreasing, end >= start, confidence in [0, 1]."""
    out: list[Word] = []
    prev_start = 0.0
    for text, s, e, c in items:
        if not text:
            continue
        s = min(max(s, prev_start, 0.0), duration)
        e = min(max(e, s), duration)
        out.append(Word(word=text, start=float(s), end=float(e), confidence=float(min(1.0, max(0.0, c)))))
        prev_start = s
    return out


# --------------------------------------------------------------------------------------------------
# Diarization


class NemoDiarizer:
    """Speaker diarization of one recording, restricted to its VAD regions.

    * Sortformer (`SortformerEncLabelModel`, e.g. diar_sortformer_4spk-v1): one forward gives per-frame
      speaker activity (80 ms frames, up to 4 speakers). Recordings longer than `sortformer_chunk_s` are
      processed in overlapping chunks whose speakers are matched on the overlap (Hungarian assignment on
      co-activity), so memory stays bounded and labels stay consistent; streaming Sortformer models
      take the whole recording.
    * TitaNet-style speaker-embedding model (`EncDecSpeakerLabelModel`): embeddings of `window_s`
      windows every `hop_s` inside the speech regions, agglomerative clustering (cosine, average link,
      `cluster_threshold`, at most `max_speakers`), each instant assigned to the nearest window centre.

    Both produce exclusive turns (no overlap; overlapped speech goes to the dominant speaker) that
    exactly cover `regions`, labelled "spk0", "spk1", ... in order of appearance."""

    sortformer_chunk_s = 600.0
    sortformer_overlap_s = 60.0
    embed_batch = 64

    def __init__(self, cfg: DiarizationConfig, models: ModelsConfig, use_gpu: bool):
        from nemo.collections.asr.models import EncDecSpeakerLabelModel, SortformerEncLabelModel

        from pipeline.models import is_file_ref, load_nemo_model, pick_device

        self.cfg = cfg
        self._ref = _file_or_default(cfg.model, DEFAULT_DIAR_MODEL)
        self._device = pick_device(use_gpu)
        cls = None  # a .nemo names its own class
        if not is_file_ref(self._ref):
            cls = SortformerEncLabelModel if "sortformer" in self._ref.lower() else EncDecSpeakerLabelModel
        self._model = load_nemo_model(cls, self._ref, cfg.sha256, models, self._device)
        if isinstance(self._model, SortformerEncLabelModel):
            self.mode = "sortformer"
            self.frame_s = _frame_seconds_of(self._model, 0.08)
        elif isinstance(self._model, EncDecSpeakerLabelModel):
            self.mode = "embedding"
        else:
            raise TypeError(
                f"diarization model {self._ref!r} is a {type(self._model).__name__}; expected a Sortformer "
                "(SortformerEncLabelModel) or a speaker-embedding model (EncDecSpeakerLabelModel)"
            )

    def model_id(self) -> str:
        return _model_id(self._ref, self.cfg.sha256)

    def speaker_turns(self, audio: np.ndarray, regions: Sequence[Span]) -> list[Span]:
        """Speaker turns, seconds of the recording's timeline, covering exactly the speech in `regions`."""
        duration = len(audio) / SAMPLE_RATE
        regions = [Span(max(0.0, r.start), min(duration, r.end)) for r in regions]
        regions = [r for r in sorted(regions, key=lambda r: r.start) if r.end > r.start]
        if not regions:
            return []
        if self.mode == "sortformer":
            probs = self.sortformer_probs(audio)
            return exclusive_turns(probs, self.frame_s, regions)
        return self._embedding_turns(audio, regions)

    # -- Sortformer ------------------------------------------------------------------------------
    def sortformer_probs(self, audio: np.ndarray) -> np.ndarray:
        """Speaker activity (T, S) in [0, 1] at `frame_s`, frame 0 at sample 0; columns are global
        speakers (consistent across chunks)."""
        n = len(audio)
        chunk = int(self.sortformer_chunk_s * SAMPLE_RATE)
        if n <= chunk or getattr(self._model, "streaming_mode", False):
            return self._sortformer_forward(audio)
        hop = chunk - int(self.sortformer_overlap_s * SAMPLE_RATE)
        total = int(math.ceil(n / SAMPLE_RATE / self.frame_s))
        glob: np.ndarray | None = None
        written = 0  # global frames filled so far
        for s in range(0, n, hop):
            p = self._sortformer_forward(audio[s : s + chunk])
            f0 = int(round(s / SAMPLE_RATE / self.frame_s))
            if glob is None:
                glob = np.zeros((total, p.shape[1]), dtype=np.float32)
                glob[f0 : f0 + len(p)] = p[: total - f0]
            else:
                glob = _stitch(glob, p, f0, overlap=max(0, written - f0))
            written = min(total, f0 + len(p))
            if s + chunk >= n:
                break
        assert glob is not None
        return glob

    def _sortformer_forward(self, clip: np.ndarray) -> np.ndarray:
        from pipeline.models import inference_context

        x, lens = _pad_batch([clip], self._device, min_samples=SAMPLE_RATE)
        with inference_context(self._device):
            preds = self._model(audio_signal=x, audio_signal_length=lens)
        frames = int(math.ceil(len(clip) / SAMPLE_RATE / self.frame_s))
        return preds[0, :frames].float().cpu().numpy()

    # -- embeddings + clustering -----------------------------------------------------------------
    def _embedding_turns(self, audio: np.ndarray, regions: Sequence[Span]) -> list[Span]:
        windows: list[tuple[float, float]] = []
        for r in regions:
            if r.duration <= self.cfg.embedding_window_s:
                windows.append((r.start, r.end))
                continue
            t = r.start
            while True:
                end = min(t + self.cfg.embedding_window_s, r.end)
                windows.append((end - self.cfg.embedding_window_s, end))
                if end >= r.end:
                    break
                t += self.cfg.embedding_hop_s
        clips = [audio[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)] for a, b in windows]
        embs = np.concatenate(
            [split_on_oom(self._embed, clips[i : i + self.embed_batch]) for i in range(0, len(clips), self.embed_batch)]
        )
        labels = cluster_for(self.cfg, embs, self.cfg.embedding_hop_s)
        centres = np.array([(a + b) / 2 for a, b in windows])
        frame_s = 0.01
        n_frames = int(math.ceil(len(audio) / SAMPLE_RATE / frame_s))
        n_spk = int(labels.max()) + 1
        probs = np.zeros((n_frames, n_spk), dtype=np.float32)
        for r in regions:
            lo, hi = int(r.start / frame_s), min(n_frames, int(math.ceil(r.end / frame_s)))
            inside = np.where((centres >= r.start - 1e-6) & (centres <= r.end + 1e-6))[0]
            cand = inside if len(inside) else np.arange(len(centres))
            t = (np.arange(lo, hi) + 0.5) * frame_s
            nearest = cand[np.abs(t[:, None] - centres[cand][None, :]).argmin(axis=1)]
            probs[np.arange(lo, hi), labels[nearest]] = 1.0
        return exclusive_turns(probs, frame_s, regions, min_turn_s=min(0.3, self.cfg.embedding_hop_s))

    def _embed(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        from pipeline.models import inference_context

        x, lens = _pad_batch(clips, self._device, min_samples=SAMPLE_RATE // 4)
        with inference_context(self._device):
            _logits, emb = self._model(input_signal=x, input_signal_length=lens)
        return list(emb.float().cpu().numpy())


def _stitch(glob: np.ndarray, p: np.ndarray, f0: int, overlap: int) -> np.ndarray:
    """Merge chunk activities `p` (starting at global frame f0) into `glob`, matching the chunk's
    speakers to global ones by co-activity on the overlap; unmatched speakers become new columns."""
    from scipy.optimize import linear_sum_assignment

    total = glob.shape[0]
    p = p[: total - f0]
    overlap = min(overlap, len(p))
    mapping: dict[int, int] = {}
    if overlap > 0:
        a, b = glob[f0 : f0 + overlap], p[:overlap]
        sim = np.minimum(a[:, :, None], b[:, None, :]).sum(axis=0)  # (G, S)
        rows, cols = linear_sum_assignment(-sim)
        for g, s in zip(rows, cols):
            if sim[g, s] > 1.0:  # at least one frame's worth of shared activity
                mapping[int(s)] = int(g)
    for s in range(p.shape[1]):
        if s not in mapping:
            if p[:, s].max() < 0.5:
                continue  # a silent slot of this chunk
            glob = np.concatenate([glob, np.zeros((total, 1), dtype=glob.dtype)], axis=1)
            mapping[s] = glob.shape[1] - 1
    for s, g in mapping.items():
        seg = glob[f0 : f0 + len(p), g]
        new = p[:, s].copy()
        new[:overlap] = (seg[:overlap] + new[:overlap]) / 2
        glob[f0 : f0 + len(p), g] = new
    return glob
