"""The family registry: every family has a key, a field table, features (or an analytic
model), physics and a grid; descriptors round-trip through keys; both descriptor paths read
the one field table."""

import numpy as np
import pytest

from revati.predictor import grids
from revati.predictor.descriptor import DescriptorError, normalize, normalize_batch
from revati.predictor.families import FAMILIES, LEARNED, OPS, get
from revati.predictor.families.base import CHOICE, DTYPE, INT, INT_LIST, NUMBER, column_type
from revati.predictor.families.gemm import M_BUCKETS
from revati.predictor.roofline import peaks
from revati.predictor.schema import FAMILY_COLUMNS, FLOAT_COLUMNS, INT_COLUMNS

# Descriptors whose parts cover every family (several forms of each op).
SAMPLES = [
    {"op": "gemm", "m": 7, "n": 4096, "k": 1024},
    {"op": "gemm", "m": 0, "n": 3, "k": 5, "dtype": "float8_e4m3fn", "batch": 4},
    {"op": "attention", "phase": "decode", "batch_size": 8, "kv_len_sum": 8000,
     "num_heads": 32, "num_kv_heads": 8, "head_dim": 128},
    {"op": "attention", "phase": "prefill", "batch_size": 2, "num_tokens": 100,
     "kv_len_max": 900, "num_heads": 16, "head_dim": 64, "kv_cache_dtype": "fp8"},
    {"op": "attention", "query_lens": [5, 1, 1], "seq_lens": [100, 200, 7], "num_heads": 8,
     "head_dim": 128},
    {"op": "attention", "phase": "prefill", "seq_lens": [4, 9], "query_lens": [1, 1],
     "num_heads": 8, "head_dim": 128},
    {"op": "attention", "phase": "decode", "context_lens": [3, 70], "num_heads": 4,
     "num_kv_heads": 1, "head_dim": 256, "dtype": "fp16"},
    {"op": "collective", "kind": "all_reduce", "bytes": 1 << 20, "ranks": 16},
    {"op": "collective", "kind": "send_recv", "bytes": 0, "ranks": 2, "ranks_per_node": 1,
     "topology": "pcie"},
    {"op": "memcpy", "bytes": 4096, "direction": "h2d"},
    {"op": "memcpy", "bytes": 0, "direction": "d2d"},
    {"op": "moe", "stage": "w13", "tokens": 38, "hidden": 4096, "intermediate": 7168,
     "experts": 8, "topk": 2},
    {"op": "moe", "stage": "w2", "tokens": 0, "hidden": 2048, "intermediate": 768,
     "experts": 64, "experts_total": 128, "topk": 8, "dtype": "fp8"},
    {"op": "mla", "batch_size": 32, "kv_len_sum": 32000, "num_heads": 16, "kv_lora_rank": 512},
] + [d for kind in ("norm", "activation", "rotary", "elementwise", "embedding") for d in (
    {"op": kind, "tokens": 33, "hidden": 4096},
    {"op": kind, "bytes": 12345, "dtype": "fp32"},
    {"op": kind, "bytes": 800, "tokens": 10, "hidden": 40, "dtype": "fp8"},
)]


def _parts():
    return [p for d in SAMPLES for p in normalize(d)]


def test_the_samples_cover_every_family():
    assert {f for f, _ in _parts()} == set(FAMILIES)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_is_complete(name):
    fam = get(name)
    # a key: a NamedTuple whose fields are the schema's columns, each with a type
    assert fam.key._fields == FAMILY_COLUMNS[name] == fam.columns
    for c in fam.columns:
        t = column_type(fam.key, c)
        assert t in ("int", "float", "str"), (name, c, t)
        assert (t == "int") == (c in INT_COLUMNS) and (t == "float") == (c in FLOAT_COLUMNS)
    # a field table: the op that yields this family reads at least the key's fields by name
    ops = [o for o in OPS.values() if name in o.families]
    assert len(ops) == 1, name
    names = {f.name for f in ops[0].fields}
    assert len(names) == len(ops[0].fields)  # no field twice
    assert set(fam.columns) <= names
    keys = [k for f, k in _parts() if f == name]
    assert keys and all(isinstance(k, fam.key) for k in keys)
    p = peaks("h100-sxm")
    # physics: a bound for every key, never negative
    bound = _bound(name, p, keys)
    assert bound.shape == (len(keys),) and (bound >= 0).all()
    assert fam.fallback(p, dict(zip(fam.columns, keys[-1]))) > 0
    if name in ("memcpy", "moe", "mla"):  # served by an analytic model
        assert not fam.learned and fam.analytic is not None and fam.grid is None
        assert (fam.analytic(p, keys) > 0).all()
        return
    # features: one column per monotone constraint, named
    assert name in LEARNED
    cols = fam.columns_of(keys)
    X, fnames = fam.build(p, cols)
    assert X.shape == (len(keys), len(fam.monotone)) == (len(keys), len(fnames))
    assert set(fam.size_columns) <= set(fam.columns)
    assert fam.held_out_by and set(fam.held_out_by) <= set(fam.columns)  # evaluate.py
    assert (fam.ideal(p, cols) >= 0).all() and (fam.residual_base(p, cols) >= 0).all()
    # a grid: GEMM's m buckets (the Predictor's), the others a GridSpec over fixed axes
    if name == "gemm":
        assert fam.grid is None and (np.diff(M_BUCKETS) > 0).all()
        return
    assert isinstance(fam.grid, grids.GridSpec)
    fg = grids.FamilyGrids(_fake_model, None, "test", specs={name: fam.grid})
    # (one key: a decode grid is 430k model points)
    live = [k for k in keys if fam.bytes_flops([k])[0][0] > 0][:1]
    us, hit, ext, _ = fg.lookup_family(name, live)
    assert hit.all() and (us > 0).all()
    if name != "attention_prefill":
        assert fg.grids and all(len(g.axes) >= 1 and all((np.diff(a) > 0).all() for a in g.axes)
                                for g in fg.grids.values())


def _bound(name, p, keys):
    from revati.predictor.physics import lower_bound_us

    return lower_bound_us(p, name, keys)


def _fake_model(family, keys):
    """A model of the grids' tests: the ideal time plus 1 us."""
    fam = get(family)
    us = fam.ideal(peaks("h100-sxm"), fam.columns_of(keys)) + 1.0
    return us, np.zeros(len(keys), dtype=bool), []


@pytest.mark.parametrize("i", range(len(SAMPLES)))
def test_descriptor_round_trip(i):
    # dict -> key -> dict -> key: describe() gives a descriptor that normalises back to the
    # same part, bit for bit (types included), and describes the same
    for family, key in normalize(SAMPLES[i]):
        d = get(family).describe(key)
        back = normalize(d)
        assert back == [(family, key)], (d, back)
        assert list(map(type, back[0][1])) == list(map(type, key))
        assert get(family).describe(back[0][1]) == d
        assert normalize_batch([d, d]) == [back, back]


def _bad_value(kind):
    return {INT: "x", DTYPE: "int4", CHOICE: "bogus", INT_LIST: "x", NUMBER: "x"}[kind]


@pytest.mark.parametrize("op", list(OPS))
def test_both_paths_read_the_field_table(op):
    # a bad value of any field of the table is an error naming it, on both paths
    bases = [d for d in SAMPLES if d["op"] == op]
    for f in OPS[op].fields:
        hit = False
        for base in bases:
            bad = dict(base, **{f.name: _bad_value(f.kind)})
            try:
                normalize(bad)
            except DescriptorError as e:
                assert repr(f.name) in str(e), (op, f.name, str(e))
                with pytest.raises(DescriptorError) as eb:
                    normalize_batch([base, bad])
                assert str(eb.value) == f"ops[1]: {e}"
                hit = True
                break
        assert hit, (op, f.name)


def test_batch_reads_defaults_from_the_table():
    # From defaults (num_kv_heads = num_heads, ranks_per_node = min(ranks, 8)) on both paths
    ops = [{"op": "collective", "kind": "all_gather", "bytes": 9, "ranks": r} for r in (2, 16)]
    ops += [{"op": "attention", "phase": "decode", "batch_size": 2, "kv_len_max": 5,
             "num_heads": 12, "head_dim": 64}]
    got = normalize_batch(ops)
    assert got == [normalize(o) for o in ops]
    assert [k.ranks_per_node for (_, k), in got[:2]] == [2, 8]
    assert got[2][0][1].num_kv_heads == 12


def test_batch_reads_the_shims_attention_pairs():
    # the shim's attention descriptors give attn_pairs: read on the batch path, the values
    # (and errors) op by op's; nan, inf, bools and negatives go op by op, and are errors
    base = {"op": "attention", "phase": "prefill", "batch_size": 2, "num_tokens": 64,
            "kv_len_sum": 900, "kv_len_max": 600, "num_heads": 32, "num_kv_heads": 8,
            "head_dim": 128, "dtype": "bf16"}
    for pairs in ([7000, 5000.5], [7000, None], [3, 2 ** 62]):
        ops = [dict(base, attn_pairs=p) if p is not None else dict(base) for p in pairs]
        got, want = normalize_batch(ops), [normalize(o) for o in ops]
        assert repr(got) == repr(want)  # nan != nan: compare the reprs
        assert all(type(k.attn_pairs) is float for (_, k), in got)
    for bad in (True, -1, "x", float("nan"), float("inf"), 2 ** 62 + 1e6):
        with pytest.raises(DescriptorError, match="ops\\[1\\]: attention: field 'attn_pairs'"):
            normalize_batch([base, dict(base, attn_pairs=bad)])


def test_counts_and_sizes_have_a_ceiling_on_both_paths():
    """Integers beyond COUNT_MAX (counts) or BYTES_MAX (sizes) are errors naming the field, op by
    op and in a batch: their products would overflow int64/float64 further on (found by
    benchmarks/fuzz_protocols.py)."""
    from revati.predictor.families.base import BYTES_MAX, COUNT_MAX

    gemm = {"op": "gemm", "m": 16, "n": 4096, "k": 4096}
    copy = {"op": "memcpy", "bytes": BYTES_MAX, "direction": "h2d"}
    assert normalize_batch([gemm, copy]) == [normalize(gemm), normalize(copy)]
    for op, field, value in ((gemm, "m", COUNT_MAX + 1), (copy, "bytes", BYTES_MAX + 1),
                             ({"op": "attention", "phase": "decode", "num_heads": 8, "head_dim": 64,
                               "seq_lens": [5]}, "seq_lens", [5, COUNT_MAX + 1])):
        bad = dict(op, **{field: value})
        with pytest.raises(DescriptorError, match=f"field '{field}'"):
            normalize(bad)
        with pytest.raises(DescriptorError, match=f"ops\\[1\\]: .*field '{field}'"):
            normalize_batch([gemm, bad])
