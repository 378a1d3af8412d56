"""The records that travel between stages (pipeline/records.py): the audio column."""

from __future__ import annotations

import numpy as np


def test_audio_column_shares_float32_buffers_and_reads_back_in_place():
    import pyarrow as pa

    from pipeline.records import audio_column, samples_at

    a, b = np.arange(10, dtype="<f4"), np.arange(1000, dtype="<f4")
    col = audio_column([a, None, b])
    for c in (col, pa.table({"audio": col}).combine_chunks().column("audio")):
        assert np.array_equal(samples_at(c, 0), a) and samples_at(c, 1) is None
        assert np.array_equal(samples_at(c, 2), b)
