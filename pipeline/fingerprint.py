"""The job's fingerprint: a hash of everything that changes a transcript (the models and their
parameters, the vocabulary's terms), not of I/O or of how the work is cut.

Every output row records it, and a rerun skips a recording already committed with the same
fingerprint (`Ledger.plan`). So the payload keeps the layout it had before the config followed the
flow: the old section and field names and the `decode.sample_rate` that is no longer a key
(`pipeline.config.migration.old_shape_payload`). Same config, same hash.

The vocabulary enters as its resolved terms (a file's contents, not its path), which the caller reads
first: `job_fingerprint(cfg, vocabulary.resolve(cfg.segment_stage.vocabulary))`.

A run records the payload beside the output (`_scriptorium/fingerprints/<hash>.json`, pipeline/plan.py),
so a later plan can say which settings a changed fingerprint changed (`settings_diff`), from what to what.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Sequence

from pipeline import __version__
from pipeline.config import JobConfig
from pipeline.config.migration import new_key, old_shape_payload
from pipeline.records import SAMPLE_RATE


def fingerprint_payload(job: JobConfig, vocabulary: Mapping[str, Sequence[tuple[str, float]]]) -> dict[str, Any]:
    """What `job_fingerprint` hashes: the job's transcript-changing settings, JSON-ready.

    `vocabulary`: the job's resolved terms, {language or "*": [(term, weight)]}
    (`pipeline.vocabulary.resolve(job.segment_stage.vocabulary)`); empty when the job has none."""
    keep = old_shape_payload(job, SAMPLE_RATE)
    keep["pipeline_version"] = __version__
    if vocabulary:  # no vocabulary: the fingerprint is what it was before vocabularies existed
        v = job.segment_stage.vocabulary
        keep["vocabulary"] = {
            "terms": {lang: [[t, w] for t, w in terms] for lang, terms in sorted(vocabulary.items())},
            "boost": v.boost,  # the knobs that change decoding with the terms
            "max_prompt_tokens": v.max_prompt_tokens,
            "max_word_loss": v.max_word_loss,  # the guard: which decoding a window keeps
            "near_miss": v.near_miss,
        }
    return json.loads(json.dumps(keep))  # tuples as lists: what a recorded payload reads back as


def payload_hash(payload: Mapping[str, Any]) -> str:
    """16 hex digits of sha256 over a payload (`fingerprint_payload`)."""
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def job_fingerprint(job: JobConfig, vocabulary: Mapping[str, Sequence[tuple[str, float]]]) -> str:
    """16 hex digits of sha256 over the job's transcript-changing settings (`fingerprint_payload`)."""
    return payload_hash(fingerprint_payload(job, vocabulary))


#: A setting a payload does not hold: it was at its default, or did not exist yet.
UNSET = "(none)"


def settings_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key as the config spells it now, old value, new value) of every setting two payloads
    hold differently, sorted by key: `[("segment_stage.asr.beam_size", 1, 5)]`. A key one side lacks
    shows as `UNSET` there."""
    a, b = dict(_flat(old, ())), dict(_flat(new, ()))
    out = []
    for key in a.keys() | b.keys():
        name = "pipeline version" if key == "pipeline_version" else new_key(key)
        x, y = a.get(key, _default(name)), b.get(key, _default(name))
        if x != y:
            out.append((name, x, y))
    return sorted(out, key=lambda d: d[0])


def _default(dotted: str) -> Any:
    """The default of a config key (a payload leaves out fields added later while at their default);
    `UNSET` for what is not a plain field (the vocabulary's terms)."""
    model: Any = JobConfig
    for part in dotted.split("."):
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return UNSET
        model = field.annotation
    default = field.get_default(call_default_factory=True)
    return json.loads(json.dumps(default)) if default is not None or not field.is_required() else UNSET


def _flat(node: Mapping[str, Any], prefix: tuple[str, ...]):
    for key, value in node.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value:
            yield from _flat(value, path)
        else:
            yield ".".join(path), value
