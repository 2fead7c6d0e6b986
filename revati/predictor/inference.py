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

from revati.predictor.features import SPECS, columns_from_keys
from revati.predictor.roofline import Peaks
from revati.predictor.training import FittedModel


def predict_keys(model: FittedModel, p: Peaks, keys: Sequence[tuple]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Predicts durations (us) of key tuples of one family with one fitted model.

    Returns:
        (durations, extrapolated mask).
    """
    spec = SPECS[model.family]
    cols = columns_from_keys(spec, keys)
    clipped = dict(cols)
    above = np.zeros(len(keys), dtype=bool)
    for c, (lo, hi) in model.ranges.items():
        v = cols[c]
        ok = ~np.isnan(v)
        above |= ok & (v > hi)
        if not model.residual:
            clipped[c] = np.where(ok, np.clip(v, lo, hi), v)
    X, _ = spec.build(p, clipped)
    logp = model.predict_log(X)
    if model.residual:
        logp = logp + np.log(spec.residual_base(p, clipped))
    us = np.exp(logp)
    if above.any() and not model.residual:
        ratio = spec.ideal(p, cols) / np.maximum(spec.ideal(p, clipped), 1e-12)
        us = np.where(above, us * np.maximum(ratio, 1.0), us)
    if model.curves:
        us, above = _from_curves(model, keys, us, above)
    return us, above


def _from_curves(model: FittedModel, keys: Sequence[tuple], us: np.ndarray,
                 above: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collectives of a measured configuration: the monotone log-log curve of that
    configuration, interpolated; below its smallest size the edge value (latency-bound), above
    its largest the edge value scaled by bytes (bandwidth-bound, counted as extrapolated)."""
    from revati.predictor.training import curve_key

    us, above = us.copy(), above.copy()
    for i, (kind, nbytes, ranks, rpn, topo) in enumerate(keys):
        c = model.curves.get(curve_key(kind, ranks, rpn, topo))
        if c is None or not nbytes or nbytes <= 0:
            continue
        lx, ly = c
        x = np.log(nbytes)
        if x > lx[-1]:
            us[i] = np.exp(ly[-1] + x - lx[-1])
            above[i] = True
        else:
            us[i] = np.exp(np.interp(x, lx, ly))
            above[i] = False
    return us, above
