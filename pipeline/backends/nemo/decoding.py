"""NeMo ASR decoding settings: greedy decoding with word timestamps and confidence, and phrase
boosting trees (GPU-PB) for the job's vocabulary. Dicts in, dicts out: `NemoAsr` applies them."""

from __future__ import annotations

import importlib.util
import tempfile
from typing import Any, Sequence


def greedy_cfg(dc: dict) -> dict:
    """CTC / transducer: `greedy_batch` with word timestamps and per-token max_prob confidence,
    blank frames excluded, aggregated per word with min."""
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
    return dc


def canary_greedy_cfg(dc: dict) -> dict:
    """Canary: greedy AED decoding with per-token max_prob confidence aggregated per word (min)."""
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
    return dc


def canary_output_size(model: Any) -> int:
    """Labels Canary's output layer scores: its tokenizer's vocabulary padded (to a multiple of 8)."""
    import torch  # heavy: torch, only where a model runs

    size = int(model.tokenizer.vocab_size)
    linears = [m for m in model.log_softmax.modules() if isinstance(m, torch.nn.Linear)]
    if linears:
        size = int(linears[-1].out_features)
    return size


def boosting_tree_cfg(
    model: Any, terms: list[tuple[str, float]], multitask: bool, langs: Sequence[str], device: str
) -> tuple[dict, tempfile.TemporaryDirectory | None]:
    """BoostingTreeModelConfig fields for NeMo, plus the folder holding the tree file (keep it alive
    while the decoder uses it). Uniform weights: NeMo builds the tree from `key_phrases_list`. Mixed
    weights: the tree is built here with NeMo's own ContextGraph and GPUBoostingTreeModel (per-phrase
    token scores = weight x context_score) and handed to the decoder as `model_path`, which NeMo
    loads instead of building its own. `langs`: Canary's prompt languages (its tokenizer is an
    aggregate one: terms are tokenized with English's, or the first language's)."""
    base = {
        "context_score": 1.0,
        "depth_scaling": 2.0 if not multitask else 1.0,  # NeMo's defaults per model family
        "use_triton": device.startswith("cuda") and importlib.util.find_spec("triton") is not None,
    }
    if len({w for _, w in terms}) <= 1:
        scale = terms[0][1]
        return {**base, "key_phrases_list": [t for t, _ in terms], "context_score": base["context_score"] * scale}, None

    # heavy: NeMo takes ~20 s to import
    from nemo.collections.asr.parts.context_biasing.boosting_graph_batched import GPUBoostingTreeModel
    from nemo.collections.asr.parts.context_biasing.context_graph_universal import ContextGraph

    tok = model.tokenizer
    if multitask:
        lang = "en" if "en" in langs or not langs else langs[0]
        token_ids = [tok.text_to_ids(t, lang) for t, _ in terms]
    else:
        token_ids = [tok.text_to_ids(t) for t, _ in terms]
    graph = ContextGraph(context_score=base["context_score"], depth_scaling=base["depth_scaling"])
    graph.build(
        token_ids=token_ids, phrases=[t for t, _ in terms], scores=[base["context_score"] * w for _, w in terms]
    )
    tree = GPUBoostingTreeModel.from_context_graph(
        context_graph=graph, vocab_size=tok.vocab_size, final_eos_score=1.0, use_triton=base["use_triton"]
    )
    folder = tempfile.TemporaryDirectory(prefix="scriptorium-btree-")
    path = f"{folder.name}/boosting_tree.nemo"
    tree.save_to(path)
    return {**base, "model_path": path}, folder
