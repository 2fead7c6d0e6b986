"""Each importer on the real shared files: row counts, shapes and unit conversion."""

import pytest

from revati.predictor.importers.inference_sim_attention_importer import (
    import_inference_sim_attention, warmup_rows)
from revati.predictor.importers.llmservingsim_layers_importer import import_llmservingsim_layers
from revati.predictor.importers.vidur_attention_importer import import_vidur_attention
from revati.predictor.importers.vidur_compute_importer import import_vidur_compute
from revati.predictor.importers.vidur_network_importer import import_vidur_network


def test_vidur_compute(shared_data):
    path = shared_data / "vidur/compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv"
    rows = import_vidur_compute(path, shared_data)
    # 1044 data rows x (4 GEMMs + 2 norms + rope + act + add + emb)
    assert len(rows) == 1044 * 10
    first = [r for r in rows if r["op"] == "attn_pre_proj"][0]
    # Llama-2-7b, TP1, 4096 tokens: QKV is 4096 x 4096 -> 3 * 4096; 0.584 ms -> 584 us.
    assert (first["m"], first["k"], first["n"]) == (4096, 4096, 12288)
    assert first["dur_us_median"] == pytest.approx(584.0)
    assert first["gpu"] == "h100-sxm" and first["source"] == "vidur"
    up = [r for r in rows if r["op"] == "mlp_up_proj"][0]
    assert up["n"] == 2 * 11008 and up["dur_us_median"] == pytest.approx(987.0)
    tp4 = [r for r in rows if r["op"] == "mlp_down_proj" and r["source_path"].endswith("mlp.csv")
           and r["k"] == 11008 // 4]
    assert tp4, "TP4 rows shard the down projection's k"
    fams = {r["family"] for r in rows}
    assert fams == {"gemm", "norm", "rotary", "activation", "elementwise", "embedding"}


def test_vidur_attention_legacy(shared_data):
    rows = import_vidur_attention(shared_data / "vidur/compute-legacy/a100/attention.csv",
                                  shared_data)
    assert len(rows) == 14658
    pre = [r for r in rows if r["family"] == "attention_prefill"]
    dec = [r for r in rows if r["family"] == "attention_decode"]
    assert len(pre) == 4418 and len(dec) == 10240
    r = pre[0]  # chunk 64, no cached context, 64 q heads / 8 kv heads at TP2, 0.015 ms
    assert (r["num_tokens"], r["kv_len_max"], r["num_heads"], r["num_kv_heads"], r["head_dim"]) \
        == (64, 64, 32, 4, 128)
    assert r["attn_pairs"] == pytest.approx(64 * (64 - 63 / 2))
    assert r["dur_us_median"] == pytest.approx(15.0)
    d = dec[-1]  # batch 128 at 4032 cached tokens, 0.667 ms
    assert (d["batch_size"], d["kv_len_max"], d["kv_len_sum"]) == (128, 4033, 128 * 4033)
    assert d["dur_us_median"] == pytest.approx(667.0)


def test_vidur_network(shared_data):
    rows = import_vidur_network(shared_data / "vidur/network/h100_dgx/all_reduce.csv", shared_data)
    assert len(rows) == 2982
    r = rows[0]
    assert (r["kind"], r["bytes"], r["ranks"], r["ranks_per_node"], r["topology"]) == \
        ("all_reduce", 2048, 8, 8, "nvswitch")
    assert r["dur_us_median"] == pytest.approx(37.0)
    sr = import_vidur_network(shared_data / "vidur/network/a100_dgx/send_recv.csv", shared_data)
    assert len(sr) == 1988 and {r["ranks_per_node"] for r in sr} == {1, 2}


def test_llmservingsim(shared_data):
    path = shared_data / "llmservingsim/H100/meta-llama/Llama-3.1-8B/tp1/layers.csv"
    rows = import_llmservingsim_layers(path, shared_data)
    assert len(rows) == 30720
    q = [r for r in rows if r["op"] == "q_proj"][0]
    # 16078 ns -> 16.078 us, m=1, 4096 -> 4096
    assert (q["m"], q["n"], q["k"]) == (1, 4096, 4096)
    assert q["dur_us_median"] == pytest.approx(16.078)
    lm = [r for r in rows if r["op"] == "lm_head"][0]
    assert lm["n"] == 128256
    att = import_vidur_attention(
        shared_data / "llmservingsim/H100/meta-llama/Llama-3.1-70B/tp4/attention.csv", shared_data)
    assert len(att) == 21320 and att[0]["gpu"] == "h100-sxm"
    assert att[0]["num_heads"] == 16 and att[0]["num_kv_heads"] == 2
    assert att[0]["dur_us_median"] == pytest.approx(5.312)


def test_llmservingsim_attention_counts_total_keys(shared_data):
    # LLMServingSim's kv_cache_size is the total number of keys of the call (new tokens
    # included, summed over the batch); see vidur_attention_importer.py for the evidence.
    att = import_vidur_attention(
        shared_data / "llmservingsim/H100/meta-llama/Llama-3.1-70B/tp4/attention.csv", shared_data)
    pre = [r for r in att if r["family"] == "attention_prefill"]
    assert min(r["kv_len_max"] - r["num_tokens"] for r in pre) == 0  # chunk 32 at size 32
    dec = [r for r in att if r["family"] == "attention_decode"]
    assert all(r["kv_len_sum"] >= r["batch_size"] for r in dec)
    one = [r for r in dec if r["batch_size"] == 1 and r["kv_len_sum"] == 65536][0]
    four = [r for r in dec if r["batch_size"] == 4 and r["kv_len_sum"] == 65536][0]
    assert four["kv_len_max"] == 16384  # 65536 keys over 4 sequences
    # a quarter of the keys per sequence, a quarter of the time (1747 us vs 433 us)
    assert four["dur_us_median"] == pytest.approx(one["dur_us_median"] / 4, rel=0.05)


def test_inference_sim_attention(shared_data):
    base = shared_data / "inference-sim-bench/mha"
    dec = import_inference_sim_attention(base / "decode/h100/32-32-128-tp1.csv", shared_data)
    assert len(dec) == 52  # 53 rows less the warm-up first one (1 x 256 keys, 37.0 us)
    r = [x for x in dec if x["batch_size"] == 16 and x["kv_len_max"] == 1024][0]
    assert (r["num_heads"], r["num_kv_heads"], r["head_dim"], r["kv_len_sum"]) == \
        (32, 32, 128, 16 * 1024)
    assert r["dur_us_median"] == pytest.approx(93.12) and r["gpu"] == "h100-sxm"
    assert r["source"] == "inference-sim" and r["attn_pairs"] == 16 * 1024
    assert min(x["dur_us_median"] for x in dec) == pytest.approx(21.919)
    # TP 4 of 28 query / 4 KV heads: 7 / 1 per GPU (MQA)
    tp4 = import_inference_sim_attention(base / "decode/h100/28-4-128-tp4.csv", shared_data)
    assert {(x["num_heads"], x["num_kv_heads"]) for x in tp4} == {(7, 1)}
    pre = import_inference_sim_attention(base / "prefill/h100/32-32-128.csv", shared_data)
    assert len(pre) == 5
    p = [x for x in pre if x["num_tokens"] == 4096][0]
    assert (p["batch_size"], p["kv_len_max"], p["attn_pairs"]) == (1, 4096, 4096 * 4097 / 2)
    assert p["dur_us_median"] == pytest.approx(217.109)


def test_inference_sim_first_decode_rows_are_warm_ups(shared_data):
    # the evidence for dropping each decode file's first row: in 17 of the 18 files it is
    # more than 1.3x a bigger shape of the same file, and nothing else is
    from revati.predictor.importers.common import read_csv

    files = sorted((shared_data / "inference-sim-bench/mha/decode/h100").glob("*.csv"))
    assert len(files) == 18
    found = 0
    for f in files:
        raw = read_csv(f)
        bad = warmup_rows([(int(r["batch_size"]), int(r["kv_len"]), float(r["latency_us"]))
                           for r in raw])
        assert bad <= {0}, (f.name, bad)
        found += len(bad)
    assert found == 17
