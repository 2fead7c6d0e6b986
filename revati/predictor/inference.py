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

from revati.predictor.features import ATTENTION_FAMILIES, SPECS, columns_from_keys
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
    spec = SPECS[model.family]
    cols = columns_from_keys(spec, keys)
    clipped = dict(cols)
    above = np.zeros(len(keys), dtype=bool)
    head_ratio = np.ones(len(keys))
    if model.family in ATTENTION_FAMILIES:
        cols, clipped, above, head_ratio = _attention_preclip(model, cols)
    for c, (lo, hi) in model.ranges.items():
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


def _attention_preclip(model: FittedModel, cols: dict[str, np.ndarray]):
    """Attention queries beyond the measured key lengths or head counts, shrunk consistently.

    Clipping kv_len_max (or batch_size) alone would leave kv_len_sum (and the roofline ratio)
    unchanged, so a longer context or a bigger batch would not cost more. Instead a batch above
    the range loses whole sequences (batch, tokens, keys, pairs scaled by one factor), and the
    keys of every sequence are scaled by one factor f <= 1 (kv_len_max, kv_len_sum, attn_pairs, and new tokens beyond the keys) so the
    clipped op is a real, smaller op, and the roofline ratio carries the growth. Head counts
    above the range are clipped and scaled by sqrt(heads ratio x kv-heads ratio), a factor that
    does not depend on the sizes, so monotonicity in tokens and keys is kept.

    Returns:
        (cols with heads set to the clipped heads, the pre-clipped cols, above mask, head ratio)
    """
    r = model.ranges
    clipped = dict(cols)
    above = np.zeros(len(cols["kv_len_max"]), dtype=bool)
    if "batch_size" in r:  # drop whole sequences: batch, tokens, keys and pairs by one factor
        g = np.minimum(1.0, r["batch_size"][1] / np.maximum(cols["batch_size"], 1))
        above |= g < 1.0
        for c in ("batch_size", "num_tokens", "kv_len_sum", "attn_pairs"):
            clipped[c] = cols[c] * g
    kvm, kvs = clipped["kv_len_max"], clipped["kv_len_sum"]
    f = np.ones_like(kvm)
    if "kv_len_max" in r:
        f = np.minimum(f, r["kv_len_max"][1] / np.maximum(kvm, 1e-9))
    if "kv_len_sum" in r:
        f = np.minimum(f, r["kv_len_sum"][1] / np.maximum(kvs, 1e-9))
    above |= f < 1.0
    b = np.maximum(clipped["batch_size"], 1)
    clipped["kv_len_max"] = kvm * f
    clipped["kv_len_sum"] = kvs * f
    clipped["attn_pairs"] = clipped["attn_pairs"] * f
    q = clipped["num_tokens"]
    clipped["num_tokens"] = np.maximum(np.minimum(q, clipped["kv_len_sum"]), np.minimum(b, q))
    head_ratio = np.ones_like(kvm)
    sized = dict(cols)
    for c in ("num_heads", "num_kv_heads"):
        if c in r:
            hi = r[c][1]
            over = cols[c] > hi
            above |= over
            head_ratio = head_ratio * np.where(over, np.sqrt(cols[c] / hi), 1.0)
            clipped[c] = np.where(over, hi, cols[c])
            sized[c] = clipped[c]
    return sized, clipped, above, head_ratio


def _with_curves(model: FittedModel, p: Peaks, keys: Sequence[tuple]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Collectives of a measured configuration: the monotone log-log curve of that
    configuration, interpolated; below its smallest size the edge value (latency-bound), above
    its largest the edge value scaled by bytes (bandwidth-bound, counted as extrapolated).
    Other configurations go through the booster."""
    from dataclasses import replace

    from revati.predictor.training import curve_key

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
