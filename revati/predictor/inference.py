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

from revati.predictor.features import ATTENTION_FAMILIES, SPECS, columns_from_keys, derived_sizes
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
        if c not in clipped:
            continue  # a derived size (features.derived_sizes), used by _attention_preclip
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
    """Attention queries beyond the measured key lengths or head counts, shrunk consistently
    into an op the model has seen, whose roofline ratio to the query then carries the rest.

    * KV heads or a head dim outside the data's (f = value / the value clipped into its
      range; f > 1 above, f < 1 below): folded into the keys. The op with f times the keys
      (kv_len_sum, kv_len_max, attn_pairs) and 1/f the query and KV heads (or 1/f the head
      dim) moves the same K/V bytes, does the same FLOPs and has the same query heads per KV
      head (GQA packing); only its Q/O bytes change. NOTE: this replaced clipping the heads
      and scaling by sqrt(heads ratio x KV-heads ratio), which under-predicted memory-bound
      decode by up to 2.3x (A100's data has 4 KV heads, so a 32/32 decode, 8x the bytes, was
      served at 2.8x: Llama-2-7B, 128 x 700 keys on H100 through the A100 proxy, 233 us
      against a 438 us bound) and over-predicted MQA (1 KV head served as 4); and clipping
      the head dim, which served a head dim 64 decode as head dim 128 (every H100 and A100 row
      has 128): 16/16/64 heads at 32 x 1000 keys 99.5 us on H100, against 55.0 us for 8/8/128,
      which moves the same bytes.
    * More query heads than the data has: clipped; the roofline ratio carries them.
    * K/V elements read or (query, key) products computed beyond the data's largest (a
      combination of in-range columns, features.derived_sizes): the keys shrink by the same
      factor as for too long sequences, below.
    * A batch above the range loses whole sequences (batch, tokens, keys and pairs by one
      factor), and the keys of every sequence are scaled by one factor f <= 1 (kv_len_max,
      kv_len_sum, attn_pairs, and new tokens beyond the keys), so the clipped op is a real,
      smaller op. (Clipping kv_len_max or batch_size alone would leave kv_len_sum, and the
      roofline ratio, unchanged, so a longer context or a bigger batch would not cost more.)

    Returns:
        (cols, the pre-clipped cols, above mask, an extra factor (ones)). The caller scales
        the clipped op's time by max(1, ideal(cols) / ideal(clipped)); every step above only
        lowers the roofline time, so that ratio is >= 1, and a clipped prediction at or
        above its own bound is served at or above the query's.
    """
    r = model.ranges
    clipped = dict(cols)
    above = np.zeros(len(cols["kv_len_max"]), dtype=bool)
    fk = np.ones(len(above))
    fd = np.ones(len(above))
    if "num_kv_heads" in r:
        lo, hi = r["num_kv_heads"]
        fk = cols["num_kv_heads"] / np.clip(cols["num_kv_heads"], lo, hi)
    if "head_dim" in r:
        lo, hi = r["head_dim"]
        fd = cols["head_dim"] / np.clip(cols["head_dim"], lo, hi)
    fold = fk * fd
    above |= fold != 1.0
    for c in ("kv_len_sum", "kv_len_max", "attn_pairs"):
        clipped[c] = cols[c] * fold
    clipped["num_heads"] = cols["num_heads"] / fk
    clipped["num_kv_heads"] = cols["num_kv_heads"] / fk
    clipped["head_dim"] = cols["head_dim"] / fd
    if "num_heads" in r:
        hi = r["num_heads"][1]
        above |= clipped["num_heads"] > hi
        clipped["num_heads"] = np.minimum(clipped["num_heads"], hi)
    if "batch_size" in r:  # drop whole sequences: batch, tokens, keys and pairs by one factor
        g = np.minimum(1.0, r["batch_size"][1] / np.maximum(clipped["batch_size"], 1))
        above |= g < 1.0
        for c in ("batch_size", "num_tokens", "kv_len_sum", "attn_pairs"):
            clipped[c] = clipped[c] * g
    kvm, kvs = clipped["kv_len_max"], clipped["kv_len_sum"]
    f = np.ones_like(kvm)
    if "kv_len_max" in r:
        f = np.minimum(f, r["kv_len_max"][1] / np.maximum(kvm, 1e-9))
    if "kv_len_sum" in r:
        f = np.minimum(f, r["kv_len_sum"][1] / np.maximum(kvs, 1e-9))
    # the same factor shrinks the K/V read and the (query, key) products
    for name, v in derived_sizes(clipped).items():
        if name in r:
            f = np.minimum(f, r[name][1] / np.maximum(v, 1e-9))
    above |= f < 1.0
    b = np.maximum(clipped["batch_size"], 1)
    q = clipped["num_tokens"]
    clipped["kv_len_max"] = kvm * f
    clipped["kv_len_sum"] = kvs * f
    clipped["num_tokens"] = np.maximum(np.minimum(q, clipped["kv_len_sum"]), np.minimum(b, q))
    # NOTE: the causal pairs of the op as shrunk, not the pairs times the factors: a fresh
    # prefill whose keys (and so tokens) shrink by f has f^2 the pairs, and pairs x f made the
    # clipped op's roofline time too big, so the ratio that scales it back was too small
    # (A100, 16384 fresh tokens: served at 0.66x its FLOPs bound). The batch's own departure
    # from an even split is kept. (A decode step's pairs are its keys: the same either way.)
    b0 = np.maximum(cols["batch_size"], 1)
    even0 = _even_pairs(b0, cols["num_tokens"], cols["kv_len_sum"])
    even1 = _even_pairs(b, clipped["num_tokens"], clipped["kv_len_sum"])
    changed = (fold != 1.0) | (f < 1.0) | (b != b0)
    clipped["attn_pairs"] = np.where(changed, cols["attn_pairs"] * even1 /
                                     np.maximum(even0, 1e-9), cols["attn_pairs"])
    return cols, clipped, above, np.ones_like(kvm)


def _even_pairs(b: np.ndarray, q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Causal (query, key) pairs of b equal sequences holding q new tokens and s keys."""
    qm, km = q / b, s / b
    return b * qm * (km - (qm - 1.0) / 2.0)


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
