"""The fused-MoE family: its physics, its efficiencies (recomputed from the real H100 profiles
they come from), and how the semantic layer reads a model's experts from its config."""

import csv
import json
import statistics
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from revati.predictor.descriptor import DescriptorError, normalize
from revati.predictor.families import moe
from revati.predictor.physics import lower_bound_us
from revati.predictor.roofline import peaks
from revati.vllm_plugin.steps import moe_layout

REPO = Path(__file__).resolve().parents[2]
VIDUR_70B = REPO.parent / "shared/data/profiles/vidur/compute/h100/meta-llama/Llama-2-70b-hf/mlp.csv"
SHARED_MODELS = REPO.parent / "shared/data/models"
GPUS = ("h100-sxm", "h200", "a100-80gb-sxm", "l40s")


def _key(tokens, stage="w13", h=4096, i=7168, e=8, et=8, k=2, dtype="bf16"):
    return normalize({"op": "moe", "stage": stage, "tokens": tokens, "hidden": h,
                      "intermediate": i, "experts": e, "experts_total": et, "topk": k,
                      "dtype": dtype})[0][1]


def test_active_experts_follow_the_routing():
    # one token reads its top-k experts; many tokens read them all
    b1, _ = moe.work([_key(1)])
    ball, _ = moe.work([_key(4096)])
    per_expert = 2 * 7168 * 4096 * 2
    assert b1[0] == pytest.approx(2 * per_expert, rel=0.01)
    assert ball[0] > 8 * per_expert
    # expert parallel: half the experts, half the token-expert pairs, each expert whole
    b_ep, f_ep = moe.work([_key(4096, i=14336, e=4, et=8)])
    b_tp, f_tp = moe.work([_key(4096, i=7168)])
    assert f_ep[0] == pytest.approx(f_tp[0])


@pytest.mark.parametrize("gpu", GPUS)
def test_predictions_respect_the_physical_bound(gpu):
    p = peaks(gpu)
    keys = [_key(t, s, h, i, e, et, k, d)
            for t in (0, 1, 3, 16, 128, 1024, 8192)
            for s in moe.STAGES
            for h, i, e, et, k in ((4096, 7168, 8, 8, 2), (2048, 768, 128, 128, 8),
                                   (2048, 1408, 32, 64, 6), (5120, 8192, 16, 16, 1))
            for d in ("bf16", "fp8")]
    us = moe.analytic(p, keys)
    bound = lower_bound_us(p, "moe", keys)
    assert np.isfinite(us).all() and (us > 0).all()
    assert (us >= bound).all()
    # monotone in tokens for one layout
    one = moe.analytic(p, [_key(t) for t in range(0, 600, 7)])
    assert (np.diff(one) >= -1e-9).all()


def test_fp8_weights_halve_the_weight_stream():
    p = peaks("h100-sxm")
    bf16, fp8 = moe.analytic(p, [_key(1), _key(1, dtype="fp8")])
    assert fp8 < 0.6 * bf16


def test_descriptor_errors_name_the_field():
    with pytest.raises(DescriptorError, match="stage"):
        normalize({"op": "moe", "stage": "w3", "tokens": 1, "hidden": 1, "intermediate": 1,
                   "experts": 1, "topk": 1})
    with pytest.raises(DescriptorError, match="experts"):
        normalize({"op": "moe", "stage": "w2", "tokens": 1, "hidden": 1, "intermediate": 1,
                   "experts": 0, "topk": 1})


@pytest.mark.skipif(not VIDUR_70B.is_file(), reason="the shared profiles are not here")
def test_efficiencies_are_the_measured_ones():
    # moe.py's docstring: medians over Vidur's H100 Llama-2-70B gate-up and down projections
    h, inter, bw, peak = 8192, 28672, 3.35e12, 989e12
    mem, comp = [], []
    for r in csv.DictReader(VIDUR_70B.open()):
        tp, m = int(r["num_tensor_parallel_workers"]), int(r["num_tokens"])
        for col, n, k in (("mlp_up_proj", 2 * inter // tp, h), ("mlp_down_proj", h, inter // tp)):
            t = float(r[f"time_stats.{col}.median"]) * 1e-3
            if m <= 64 and tp <= 2:
                mem.append(n * k * 2 / bw / t)
            if m >= 2048:
                comp.append(2 * m * n * k / peak / t)
    assert len(mem) == 44 and len(comp) == 536
    assert statistics.median(mem) == pytest.approx(moe.MOE_MEMORY_EFFICIENCY, abs=0.005)
    assert statistics.median(comp) == pytest.approx(moe.MOE_COMPUTE_EFFICIENCY, abs=0.005)


def _cfg(path: Path) -> SimpleNamespace:
    c = json.loads(path.read_text())
    return SimpleNamespace(**c.get("text_config", c))


def test_moe_layout_from_the_catalog_config():
    mixtral = _cfg(REPO / "revati/models/configs/mistralai/Mixtral-8x7B-v0.1/config.json")
    assert moe_layout(mixtral, 2) == (8, 8, 2, 7168, 2)
    assert moe_layout(mixtral, 2, 1, True) == (4, 8, 2, 14336, 2)
    llama = _cfg(REPO / "revati/models/configs/meta-llama/Llama-3.1-8B/config.json")
    assert moe_layout(llama, 1) is None


@pytest.mark.skipif(not SHARED_MODELS.is_dir(), reason="the shared model configs are not here")
def test_moe_layout_of_current_moe_models():
    def layout(name, tp=1):
        raw = json.loads((SHARED_MODELS / name / "config.json").read_text())
        return moe_layout(_cfg(SHARED_MODELS / name / "config.json"), tp,
                          quantization=raw.get("quantization_config"))

    assert layout("qwen3-30b-a3b") == (128, 128, 8, 768, 2)
    assert layout("deepseek-v2-lite", 2) == (64, 64, 6, 704, 2)
    assert layout("llama-4-scout-17b-16e-instruct-fp8-dynamic") == (16, 16, 1, 8192, 1)
    assert layout("qwen3-14b") is None
