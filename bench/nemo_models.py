"""Randomly initialised NeMo models with real architectures, saved as `.nemo` files: the one builder
of the benchmark's FastConformer (bench/throughput.py rows 5-6, at a real model's size) and of the
tests' tiny models (tests/helpers/nemo_models.py builds the set once per test session).

No model hub is reachable from CI, and real checkpoints are hundreds of MB, so the NeMo backends are
tested with models that have the real architectures (FastConformer CTC/RNNT/TDT/hybrid, frame
MarbleNet, AmberNet/TitaNet-style speaker-label models, Sortformer, Canary) at toy sizes, and the
benchmark measures the compute of a FastConformer of a real size. Their weights are random: outputs
are garbage text and random probabilities, but shapes, time bases, batching and the loader
(`restore_from` of a `.nemo`) are exactly what a real checkpoint goes through.

Everything here imports NeMo lazily (~20 s), so importing this module is free; it imports nothing
from the rest of bench/ (the tests import it as `bench.nemo_models`, the benchmark as `nemo_models`).

    .venv/bin/python bench/nemo_models.py OUT_DIR                   # the tests' set (`build_all`)
    .venv/bin/python bench/nemo_models.py OUT_DIR --size large      # the benchmark's ASR + LID
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
LID_LABELS = ["de", "en", "es", "fr", "pt"]


@dataclass(frozen=True)
class EncoderSize:
    """A FastConformer encoder's shape (and the mel features it reads)."""

    d_model: int
    n_layers: int
    n_heads: int = 2
    conv_channels: int = 16  # subsampling_conv_channels
    features: int = 40
    ff_expansion: int = 2


#: FastConformer sizes. "toy" is the tests' (built in seconds); the others are the benchmark's
#: `--nemo-size`: "large" is the shape of stt_en_fastconformer_ctc_large (~115M parameters),
#: "medium"/"small" follow NeMo's smaller configs.
NEMO_SIZES: dict[str, EncoderSize] = {
    "toy": EncoderSize(32, 2),
    "tiny": EncoderSize(32, 2, 2, 16, features=80, ff_expansion=4),
    "small": EncoderSize(176, 16, 4, 176, features=80, ff_expansion=4),
    "medium": EncoderSize(256, 16, 4, 256, features=80, ff_expansion=4),
    "large": EncoderSize(512, 17, 8, 256, features=80, ff_expansion=4),
}
TOY = NEMO_SIZES["toy"]

# A few punctuated, cased lines so the tokenizer of the "_pc" test model holds punctuation.
_PC_TEXT = [
    "Hello, world. How are you today?",
    "And so, my fellow Americans: ask not what your country can do for you!",
    "The quick brown fox jumps over the lazy dog.",
]


def _training_text(cased: bool, corpus: Path = CORPUS) -> list[str]:
    lines = []
    for line in (corpus / "references.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("text"):
            lines.append(rec["text"] if cased else rec["text"].lower())
    if cased:
        lines += _PC_TEXT
    else:
        lines = ["".join(c for c in s if c.isalpha() or c in " '") for s in lines]
    return lines


def build_tokenizer(out_dir: Path, vocab_size: int = 64, cased: bool = False, corpus: Path = CORPUS) -> Path:
    """A SentencePiece BPE tokenizer trained on the corpus references; returns its folder."""
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    out_dir.mkdir(parents=True, exist_ok=True)
    text = out_dir / "text.txt"
    text.write_text("\n".join(_training_text(cased, corpus)) + "\n")
    create_spt_model(
        str(text),
        vocab_size=vocab_size,
        sample_size=-1,
        do_lower_case=not cased,
        tokenizer_type="bpe",
        output_dir=str(out_dir),
    )
    return out_dir


def _preprocessor(features: int = 40, normalize: str = "per_feature") -> dict[str, Any]:
    return {
        "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
        "sample_rate": 16000,
        "normalize": normalize,
        "window_size": 0.025,
        "window_stride": 0.01,
        "window": "hann",
        "features": features,
        "n_fft": 512,
        "frame_splicing": 1,
        "dither": 0.0,
        "pad_to": 0,
    }


def _conformer(size: EncoderSize = TOY) -> dict[str, Any]:
    return {
        "_target_": "nemo.collections.asr.modules.ConformerEncoder",
        "feat_in": size.features,
        "feat_out": -1,
        "n_layers": size.n_layers,
        "d_model": size.d_model,
        "subsampling": "dw_striding",
        "subsampling_factor": 8,
        "subsampling_conv_channels": size.conv_channels,
        "causal_downsampling": False,
        "ff_expansion_factor": size.ff_expansion,
        "self_attention_model": "rel_pos",
        "n_heads": size.n_heads,
        "att_context_size": [-1, -1],
        "xscaling": True,
        "untie_biases": True,
        "pos_emb_max_len": 5000,
        "conv_kernel_size": 9,
        "conv_norm_type": "batch_norm",
        "dropout": 0.0,
        "dropout_pre_encoder": 0.0,
        "dropout_emb": 0.0,
        "dropout_att": 0.0,
    }


def _ds_stub() -> dict[str, Any]:
    return {"manifest_filepath": None, "sample_rate": 16000, "batch_size": 1, "defer_setup": True}


def build_asr(kind: str, tokenizer_dir: Path, path: Path, size: EncoderSize = TOY) -> Path:
    """kind: ctc | rnnt | tdt | hybrid_tdt_ctc. Saves and returns `path`."""
    asr_model(kind, tokenizer_dir, size).save_to(str(path))
    return path


def asr_model(kind: str, tokenizer_dir: Path, size: EncoderSize = TOY):
    """The model `build_asr` saves (kind: ctc | rnnt | tdt | hybrid_tdt_ctc), FastConformer of `size`."""
    from nemo.collections.asr.models import EncDecCTCModelBPE, EncDecHybridRNNTCTCBPEModel, EncDecRNNTBPEModel
    from omegaconf import OmegaConf

    d_model = size.d_model
    cfg: dict[str, Any] = {
        "sample_rate": 16000,
        "tokenizer": {"dir": str(tokenizer_dir), "type": "bpe"},
        "preprocessor": _preprocessor(features=size.features),
        "encoder": _conformer(size),
        "train_ds": _ds_stub(),
        "validation_ds": _ds_stub(),
        "optim": None,
    }
    if kind == "ctc":
        cfg["decoder"] = {
            "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
            "feat_in": d_model,
            "num_classes": -1,
            "vocabulary": [],
        }
        cfg["decoding"] = {"strategy": "greedy_batch"}
        cls = EncDecCTCModelBPE
    else:
        tdt = kind in ("tdt", "hybrid_tdt_ctc")
        durations = [0, 1, 2, 3, 4]
        cfg["model_defaults"] = {"enc_hidden": d_model, "pred_hidden": 32, "joint_hidden": 32}
        cfg["decoder"] = {
            "_target_": "nemo.collections.asr.modules.RNNTDecoder",
            "normalization_mode": None,
            "random_state_sampling": False,
            "blank_as_pad": True,
            "prednet": {"pred_hidden": 32, "pred_rnn_layers": 1, "t_max": None, "dropout": 0.0},
        }
        cfg["joint"] = {
            "_target_": "nemo.collections.asr.modules.RNNTJoint",
            "log_softmax": None,
            "preserve_memory": False,
            "fuse_loss_wer": False,
            "jointnet": {"joint_hidden": 32, "activation": "relu", "dropout": 0.0},
        }
        cfg["decoding"] = {"strategy": "greedy_batch", "greedy": {"max_symbols": 2}}
        cfg["loss"] = {"loss_name": "default"}
        if tdt:
            cfg["joint"]["num_extra_outputs"] = len(durations)
            cfg["decoding"]["model_type"] = "tdt"
            cfg["decoding"]["durations"] = durations
            cfg["loss"] = {"loss_name": "tdt", "tdt_kwargs": {"durations": durations, "sigma": 0.02, "omega": 0.1}}
        cls = EncDecRNNTBPEModel
        if kind.startswith("hybrid"):
            cfg["aux_ctc"] = {
                "ctc_loss_weight": 0.3,
                "use_cer": False,
                "ctc_reduction": "mean_batch",
                "decoder": {
                    "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
                    "feat_in": None,
                    "num_classes": -1,
                    "vocabulary": [],
                },
                "decoding": {"strategy": "greedy"},
            }
            cls = EncDecHybridRNNTCTCBPEModel
    return cls(cfg=OmegaConf.create(cfg))


def build_vad(path: Path) -> Path:
    """Frame-level MarbleNet (EncDecFrameClassificationModel), 20 ms frames, labels ['0', '1']."""
    from nemo.collections.asr.models import EncDecFrameClassificationModel
    from omegaconf import OmegaConf

    def block(filters: int, kernel: int, stride: int = 1, residual: bool = False) -> dict[str, Any]:
        return {
            "filters": filters,
            "repeat": 1,
            "kernel": [kernel],
            "stride": [stride],
            "dilation": [1],
            "dropout": 0.0,
            "residual": residual,
            "separable": True,
        }

    cfg = {
        "sample_rate": 16000,
        "labels": ["0", "1"],
        "train_ds": {**_ds_stub(), "labels": ["0", "1"]},
        "preprocessor": {**_preprocessor(features=40, normalize="None"), "pad_to": 2},
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConvASREncoder",
            "feat_in": 40,
            "activation": "relu",
            "conv_mask": True,
            "jasper": [block(32, 11, stride=2), block(32, 13, residual=True), block(32, 1)],
        },
        "decoder": {
            "_target_": "nemo.collections.common.parts.MultiLayerPerceptron",
            "hidden_size": 32,
            "num_classes": -1,
            "num_layers": 1,
            "activation": "relu",
            "log_softmax": False,
        },
        "optim": None,
    }
    model = EncDecFrameClassificationModel(cfg=OmegaConf.create(cfg))
    model.save_to(str(path))
    return path


def build_speaker_label(path: Path, labels: list[str], emb_size: int = 32, filters: int = 32) -> Path:
    """A TitaNet/AmberNet-shaped EncDecSpeakerLabelModel (conv encoder of `filters`, `filters`,
    2 x `filters` channels + attentive pooling decoder).

    With language labels it is a language-ID model (AmberNet); with speaker ids, a speaker-embedding
    model (TitaNet): the architecture is the same."""
    from nemo.collections.asr.models import EncDecSpeakerLabelModel
    from omegaconf import OmegaConf

    def block(filters: int, kernel: int, residual: bool) -> dict[str, Any]:
        return {
            "filters": filters,
            "repeat": 1,
            "kernel": [kernel],
            "stride": [1],
            "dilation": [1],
            "dropout": 0.0,
            "residual": residual,
            "separable": True,
            "se": True,
            "se_context_size": -1,
        }

    cfg = {
        "sample_rate": 16000,
        "labels": labels,
        "train_ds": {**_ds_stub(), "labels": labels},
        "preprocessor": _preprocessor(features=40),
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConvASREncoder",
            "feat_in": 40,
            "activation": "relu",
            "conv_mask": True,
            "jasper": [block(filters, 3, False), block(filters, 7, True), block(2 * filters, 1, False)],
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.SpeakerDecoder",
            "feat_in": 2 * filters,
            "num_classes": len(labels),
            "pool_mode": "attention",
            "emb_sizes": emb_size,
        },
        "loss": {"_target_": "nemo.collections.asr.losses.angularloss.AngularSoftmaxLoss", "scale": 30, "margin": 0.2},
        "optim": None,
    }
    model = EncDecSpeakerLabelModel(cfg=OmegaConf.create(cfg))
    model.save_to(str(path))
    return path


def build_sortformer(path: Path, num_spks: int = 4) -> Path:
    """A 2-layer FastConformer + 2-layer Transformer Sortformer diarizer (SortformerEncLabelModel)."""
    from nemo.collections.asr.models import SortformerEncLabelModel
    from omegaconf import OmegaConf

    fc_d, tf_d = TOY.d_model, 32
    ds = {
        **_ds_stub(),
        "num_spks": num_spks,
        "session_len_sec": 90,
        "soft_label_thres": 0.5,
        "soft_targets": False,
        "labels": None,
        "window_stride": 0.01,
        "subsampling_factor": 8,
    }
    cfg = {
        "sample_rate": 16000,
        "pil_weight": 0.5,
        "ats_weight": 0.5,
        "max_num_of_spks": num_spks,
        "session_len_sec": 90,
        "model_defaults": {"fc_d_model": fc_d, "tf_d_model": tf_d},
        "train_ds": ds,
        "validation_ds": ds,
        "test_ds": ds,
        "preprocessor": _preprocessor(features=40),
        "sortformer_modules": {
            "_target_": "nemo.collections.asr.modules.sortformer_modules.SortformerModules",
            "num_spks": num_spks,
            "dropout_rate": 0.0,
            "fc_d_model": fc_d,
            "tf_d_model": tf_d,
        },
        "encoder": _conformer(TOY),
        "transformer_encoder": {
            "_target_": "nemo.collections.asr.modules.transformer.transformer_encoders.TransformerEncoder",
            "num_layers": 2,
            "hidden_size": tf_d,
            "inner_size": 64,
            "num_attention_heads": 2,
            "attn_score_dropout": 0.0,
            "attn_layer_dropout": 0.0,
            "ffn_dropout": 0.0,
            "hidden_act": "relu",
            "pre_ln": False,
            "pre_ln_final_layer_norm": True,
        },
        "loss": {"_target_": "nemo.collections.asr.losses.bce_loss.BCELoss", "weight": None, "reduction": "mean"},
        "optim": None,
    }
    model = SortformerEncLabelModel(cfg=OmegaConf.create(cfg))
    model.save_to(str(path))
    return path


def build_canary(path: Path, tokenizer_dir: Path, special_dir: Path) -> Path:
    """A Canary-style multitask AED model (`EncDecMultiTaskModel`, prompt format "canary"): FastConformer
    encoder + 1-layer Transformer decoder, one aggregate tokenizer with a sub-tokenizer per language."""
    from nemo.collections.asr.models import EncDecMultiTaskModel
    from nemo.collections.common.tokenizers.canary_tokenizer import CanaryTokenizer
    from omegaconf import OmegaConf

    CanaryTokenizer.build_special_tokenizer(
        ["<|translate|>", "<|transcribe|>"] + [f"<|{lang}|>" for lang in LID_LABELS], special_dir
    )
    d = TOY.d_model
    cfg = {
        "sample_rate": 16000,
        "prompt_format": "canary",
        "context_len_for_AR_decoding": 5,
        "model_defaults": {"asr_enc_hidden": d, "lm_enc_hidden": d, "lm_dec_hidden": d},
        "train_ds": {**_ds_stub(), "use_lhotse": True},
        "tokenizer": {
            "dir": None,
            "type": "agg",
            "langs": {
                "spl_tokens": {"dir": str(special_dir), "type": "bpe"},
                **{lang: {"dir": str(tokenizer_dir), "type": "bpe"} for lang in LID_LABELS},
            },
            "custom_tokenizer": {
                "_target_": "nemo.collections.common.tokenizers.canary_tokenizer.CanaryTokenizer",
                "tokenizer": None,
            },
        },
        "preprocessor": _preprocessor(),
        "encoder": {**_conformer(TOY), "xscaling": False},
        "transf_encoder": {
            "_target_": "nemo.collections.asr.modules.transformer.transformer_encoders.TransformerEncoder",
            "num_layers": 0,
            "hidden_size": d,
            "inner_size": 2 * d,
            "num_attention_heads": 2,
            "ffn_dropout": 0.0,
            "attn_score_dropout": 0.0,
            "attn_layer_dropout": 0.0,
            "mask_future": False,
            "pre_ln": True,
            "pre_ln_final_layer_norm": True,
        },
        "transf_decoder": {
            "_target_": "nemo.collections.asr.modules.transformer.get_nemo_transformer",
            "model_name": None,
            "pretrained": False,
            "encoder": None,
            "pre_ln_final_layer_norm": True,
            "config_dict": {
                "max_sequence_length": 256,
                "num_token_types": 0,
                "embedding_dropout": 0.0,
                "learn_positional_encodings": False,
                "hidden_size": d,
                "inner_size": 2 * d,
                "num_layers": 1,
                "num_attention_heads": 2,
                "ffn_dropout": 0.0,
                "attn_score_dropout": 0.0,
                "attn_layer_dropout": 0.0,
                "hidden_act": "relu",
                "pre_ln": True,
                "vocab_size": None,
            },
        },
        "head": {
            "_target_": "nemo.collections.asr.parts.submodules.token_classifier.TokenClassifier",
            "num_layers": 1,
            "activation": "relu",
            "log_softmax": True,
            "hidden_size": d,
            "num_classes": None,
            "dropout": 0.0,
            "use_transformer_init": True,
        },
        "decoding": {
            "strategy": "beam",
            "return_best_hypothesis": True,
            "beam": {"beam_size": 1, "len_pen": 0.0, "max_generation_delta": 8},
        },
        "loss": {
            "_target_": "nemo.collections.common.losses.smoothed_cross_entropy.SmoothedCrossEntropyLoss",
            "label_smoothing": 0.0,
            "pad_id": None,
        },
        "optim": None,
    }
    model = EncDecMultiTaskModel(cfg=OmegaConf.create(cfg))
    model.save_to(str(path))
    return path


def build_all(out_dir: Path, kinds: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Build every tiny model under `out_dir`; returns {name: path of the .nemo}."""
    import torch

    torch.manual_seed(0)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out_dir / "tok")
    tok_pc = build_tokenizer(out_dir / "tok_pc", vocab_size=128, cased=True)
    builders = {
        "ctc": lambda p: build_asr("ctc", tok, p),
        "ctc_pc": lambda p: build_asr("ctc", tok_pc, p),
        "rnnt": lambda p: build_asr("rnnt", tok, p),
        "tdt": lambda p: build_asr("tdt", tok_pc, p),
        "hybrid_tdt_ctc": lambda p: build_asr("hybrid_tdt_ctc", tok, p),
        "vad": build_vad,
        "lid": lambda p: build_speaker_label(p, LID_LABELS),
        "speaker": lambda p: build_speaker_label(p, [f"spk{i}" for i in range(8)]),
        "sortformer": build_sortformer,
        "canary": lambda p: build_canary(p, tok_pc, out_dir / "canary_special"),
    }
    out = {}
    for name, fn in builders.items():
        if kinds is None or name in kinds:
            out[name] = fn(out_dir / f"{name}.nemo")
    return out


def build_benchmark_models(out_dir: Path, size: str, corpus: Path = CORPUS) -> dict[str, Any]:
    """The benchmark's NeMo rows: FastConformer CTC (BPE, 128 tokens) of `NEMO_SIZES[size]` as
    `asr.nemo` and an AmberNet-style LID (64/64/128 channels) as `lid.nemo`, random weights; writes and
    returns {"size", "asr_params"} (also as models.json)."""
    import torch

    torch.manual_seed(0)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out_dir / "tok", vocab_size=128, corpus=corpus)
    asr = asr_model("ctc", tok, NEMO_SIZES[size])
    asr.save_to(str(out_dir / "asr.nemo"))
    build_speaker_label(out_dir / "lid.nemo", LID_LABELS, emb_size=64, filters=64)
    info = {"size": size, "asr_params": sum(p.numel() for p in asr.parameters())}
    (out_dir / "models.json").write_text(json.dumps(info))
    return info


if __name__ == "__main__":
    import argparse
    import time

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument(
        "--size",
        choices=sorted(NEMO_SIZES),
        help="the benchmark's two models of this size (default: the tests' whole set)",
    )
    ap.add_argument("--corpus", type=Path, default=CORPUS, help="references.jsonl for the tokenizer")
    a = ap.parse_args()
    t = time.time()
    built = build_benchmark_models(a.out_dir, a.size, a.corpus) if a.size else build_all(a.out_dir)
    print(built, f"{time.time() - t:.1f}s")
