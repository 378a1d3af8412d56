"""The job's fingerprint: a hash of everything that changes a transcript (the models and their
parameters, the vocabulary's terms), not of I/O or of how the work is cut.

Every output row records it, and a rerun skips a recording already committed with the same
fingerprint (`Ledger.plan`). So the payload keeps the layout it had before the config followed the
flow: the old section and field names and the `decode.sample_rate` that is no longer a key
(`pipeline.config.migration.old_shape_payload`). Same config, same hash.

The vocabulary enters as its resolved terms (a file's contents, not its path), which the caller reads
first: `job_fingerprint(cfg, vocabulary.resolve(cfg.segment_stage.vocabulary))`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Mapping, Sequence

from pipeline import __version__
from pipeline.config import JobConfig
from pipeline.config.migration import old_shape_payload
from pipeline.records import SAMPLE_RATE


def job_fingerprint(job: JobConfig, vocabulary: Mapping[str, Sequence[tuple[str, float]]]) -> str:
    """16 hex digits of sha256 over the job's transcript-changing settings.

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
        }
    blob = json.dumps(keep, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
