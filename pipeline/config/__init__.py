"""Typed job configuration: pydantic models mirrored by the YAML files in `conf/`.

Config is data. Every knob lives here with its default and unit; stages receive their own options
object and never read files or environment variables. `load_config(path, overrides)` is what the CLI
calls: YAML, then `dotted.key=value` overrides, then validation. Keys of the older flat layout (in
the file or an override) move to their places (`MOVED_KEYS`, one warning line each; one key given at
both places is a `ConfigError`); `JobConfig.model_validate` moves them too. Unknown keys and bad values raise
`ConfigError` with the key's dotted path and the valid choices.

The sections follow the data: `input` -> `pooling` (windows of recordings) -> `decode` ->
`recording_stage` (vad, diarization, segmentation) -> `segment_stage` (batching, packing, lid, asr,
vocabulary, punctuation, itn, quality) -> `output`; `models`, `ray` and `progress` serve them all.

One module per reason to change; every name is importable from `pipeline.config`:

    base.py       `Model` (strict: unknown keys are errors), `Resources` of a stage, `ConfigError`
    io.py         `input`, `output` and how to reach object storage (`StorageOptions`)
    recording.py  `recording_stage`: vad, diarization, segmentation
    segment.py    `segment_stage`: batching, packing, lid, asr, vocabulary, punctuation, itn, quality
    job.py        `JobConfig`; `pooling`, `decode`, `models`, `ray`, `progress`
    migration.py  the old flat layout: `MOVED_KEYS`, `migrate`, the old-shaped fingerprint payload
    loading.py    `load_config`: YAML, overrides, validation errors worded for the user
"""

from __future__ import annotations

import logging

from pipeline.config.base import ConfigError, Model, Resources
from pipeline.config.io import InputConfig, OutputConfig, StorageOptions
from pipeline.config.job import DecodeConfig, JobConfig, ModelsConfig, PoolingConfig, ProgressConfig, RayConfig
from pipeline.config.loading import apply_job_override, apply_override, load_config, read_mapping
from pipeline.config.migration import MOVED_KEYS, migrate
from pipeline.config.recording import DiarizationConfig, RecordingStageConfig, SegmentationConfig, VadConfig
from pipeline.config.segment import (
    AsrConfig,
    BatchingConfig,
    ItnConfig,
    LidConfig,
    PackingConfig,
    PunctuationConfig,
    QualityConfig,
    QualityRules,
    SegmentStageConfig,
    VocabularyConfig,
)

log = logging.getLogger(__name__)

__all__ = [
    "MOVED_KEYS",
    "AsrConfig",
    "BatchingConfig",
    "ConfigError",
    "DecodeConfig",
    "DiarizationConfig",
    "InputConfig",
    "ItnConfig",
    "JobConfig",
    "LidConfig",
    "Model",
    "ModelsConfig",
    "OutputConfig",
    "PackingConfig",
    "PoolingConfig",
    "ProgressConfig",
    "PunctuationConfig",
    "QualityConfig",
    "QualityRules",
    "RayConfig",
    "RecordingStageConfig",
    "Resources",
    "SegmentStageConfig",
    "SegmentationConfig",
    "StorageOptions",
    "VadConfig",
    "VocabularyConfig",
    "apply_job_override",
    "apply_override",
    "load_config",
    "migrate",
    "read_mapping",
]
