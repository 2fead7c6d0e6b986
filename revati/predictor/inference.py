"""Model inference with range clipping: the one code path that evaluation and serving share.

Trees cannot extrapolate: past the training range they predict the edge value. So every size
column of a query is clipped into the training range, the model predicts at the clipped point,
and the result is scaled by ideal(query) / ideal(clipped) from the roofline. Above the range
that ratio is >= 1 and grows with size, so monotonicity survives the clipping; below the range
the edge value is kept (tiny ops are launch-bound). Queries that needed clipping are reported
so the Predictor can count them as extrapolations.

A residual model (log(duration / base), the GEMM default) is not clipped: its trees hold the edge
efficiency and the base of the query itself carries the size, which grows with every dimension.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from revati.predictor.families import FAMILIES
from revati.predictor.roofline import Peaks
from revati.predictor.training import FittedModel


def predict_keys(model: FittedModel, p: Peaks, keys: Sequence[tuple]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Predicts durations (us) of key tuples of one family with one fitted model.

    Returns:
        (durations, extrapolated mask).
    """
    if model.curves:
        return _with_curves(model, p, keys)
    spec = FAMILIES[model.family]
    cols = spec.columns_of(keys)
    clipped = dict(cols)
    above = np.zeros(len(keys), dtype=bool)
    head_ratio = np.ones(len(keys))
    if spec.preclip is not None:
        # a family that shrinks an op consistently first (attention: families/attention.py)
        cols, clipped, above, head_ratio = spec.preclip(model.ranges, cols)
    for c, (lo, hi) in model.ranges.items():
        if c not in clipped:
            continue  # a derived size (Family.derived_sizes), used by the family's preclip
        v = clipped[c]
        ok = ~np.isnan(v)
        above |= ok & (cols[c] > hi)
        if not model.residual:
            clipped[c] = np.where(ok, np.clip(v, lo, hi), v)
    X, _ = spec.build(p, clipped)
    logp = model.predict_log(X)
    if model.residual:
        logp = logp + np.log(spec.residual_base(p, clipped))
    us = np.exp(logp)
    if above.any() and not model.residual:
        ratio = spec.ideal(p, cols) / np.maximum(spec.ideal(p, clipped), 1e-12)
        us = np.where(above, us * np.maximum(ratio, 1.0) * head_ratio, us)
    return us, above


def _with_curves(model: FittedModel, p: Peaks, keys: Sequence[tuple]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Collectives of a measured configuration: the monotone log-log curve of that
    configuration, interpolated; below its smallest size the edge value (latency-bound), above
    its largest the edge value scaled by bytes (bandwidth-bound, counted as extrapolated).
    Other configurations go through the booster."""
    from dataclasses import replace

    from revati.predictor.families.collective import curve_key

    us = np.zeros(len(keys))
    above = np.zeros(len(keys), dtype=bool)
    groups: dict[str, list[int]] = {}
    rest: list[int] = []
    for i, (kind, nbytes, ranks, rpn, topo) in enumerate(keys):
        ck = curve_key(kind, ranks, rpn, topo)
        if nbytes and nbytes > 0 and ck in model.curves:
            groups.setdefault(ck, []).append(i)
        else:
            rest.append(i)
    for ck, idx in groups.items():
        lx, ly = model.curves[ck]
        ii = np.asarray(idx)
        x = np.log(np.array([keys[i][1] for i in idx], dtype=np.float64))
        hi = x > lx[-1]
        us[ii] = np.exp(np.where(hi, ly[-1] + x - lx[-1], np.interp(x, lx, ly)))
        above[ii] = hi
    if rest:
        r_us, r_above = predict_keys(replace(model, curves={}), p, [keys[i] for i in rest])
        us[rest], above[rest] = r_us, r_above
    return us, above
