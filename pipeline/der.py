"""Diarization scoring for `scriptorium eval` (the measure is defined in pipeline/eval.py's docstring):
reference turns from RTTM, and the diarization error rate of hypothesis turns against them."""

from __future__ import annotations

import numpy as np

COLLAR_S = 0.25
FRAME_S = 0.01


def read_rttm(text: str) -> list[tuple[float, float, str]]:
    """(start, end, speaker) of each SPEAKER line."""
    turns = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER":
            start, dur = float(f[3]), float(f[4])
            turns.append((start, start + dur, f[7]))
    return turns


def der(
    ref: list[tuple[float, float, str]],
    hyp: list[tuple[float, float, str]],
    collar: float = COLLAR_S,
    frame: float = FRAME_S,
) -> dict[str, float]:
    """Diarization error rate (see the module docstring). Returns der, missed, false_alarm, confusion
    (seconds) and scored reference speech (seconds)."""
    from scipy.optimize import linear_sum_assignment  # heavy: SciPy takes about a second to import

    end = max([e for _, e, _ in ref + hyp] + [0.0])
    n = int(np.ceil(end / frame)) + 1
    t = (np.arange(n) + 0.5) * frame  # frame centres

    def matrix(turns):
        names = sorted({s for _, _, s in turns})
        m = np.zeros((len(names), n), dtype=bool)
        for s, e, spk in turns:
            m[names.index(spk)] |= (t >= s) & (t < e)
        return names, m

    rn, R = matrix(ref)
    hn, H = matrix(hyp)
    scored = np.ones(n, dtype=bool)
    for s, e, _ in ref:
        for b in (s, e):
            scored &= ~((t > b - collar) & (t < b + collar))
    R, H = R[:, scored], H[:, scored]
    overlap = (R[:, None, :] & H[None, :, :]).sum(axis=2) if len(rn) and len(hn) else np.zeros((len(rn), len(hn)))
    rows, cols = linear_sum_assignment(-overlap) if overlap.size else ([], [])
    n_ref, n_hyp = R.sum(axis=0), H.sum(axis=0)
    correct = np.zeros(R.shape[1], dtype=int)
    for i, j in zip(rows, cols):
        correct += R[i] & H[j]
    missed = np.maximum(n_ref - n_hyp, 0).sum() * frame
    fa = np.maximum(n_hyp - n_ref, 0).sum() * frame
    conf = (np.minimum(n_ref, n_hyp) - correct).sum() * frame
    total = n_ref.sum() * frame
    return {
        "der": round(float((missed + fa + conf) / total), 6) if total else None,
        "missed_s": round(float(missed), 3),
        "false_alarm_s": round(float(fa), 3),
        "confusion_s": round(float(conf), 3),
        "scored_s": round(float(total), 3),
        "ref_speakers": len(rn),
        "hyp_speakers": len(hn),
        "speaker_count_error": len(hn) - len(rn),
    }
