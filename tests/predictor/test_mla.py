"""The MLA decode family: its physics against the MHA cache it replaces, and the latent layout
read from a model's config."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from revati.predictor.descriptor import normalize
from revati.predictor.families import mla
from revati.predictor.physics import lower_bound_us
from revati.predictor.roofline import peaks
from revati.vllm_plugin.steps import mla_layout

SHARED_MODELS = Path(__file__).resolve().parents[3] / "shared/data/models"


def _key(b, kv_each, h=16, lora=512, rope=64):
    return normalize({"op": "mla", "batch_size": b, "kv_len_sum": b * kv_each, "num_heads": h,
                      "kv_lora_rank": lora, "rope_dim": rope})[0][1]


@pytest.mark.parametrize("gpu", ("h100-sxm", "h200", "a100-80gb-sxm", "l40s"))
def test_mla_decode_respects_the_bound_and_grows_with_the_cache(gpu):
    p = peaks(gpu)
    keys = [_key(b, kv, h) for b in (1, 8, 64, 256) for kv in (16, 700, 8192, 65536) for h in (8, 16, 128)]
    us = mla.analytic(p, keys)
    assert (us >= lower_bound_us(p, "mla", keys)).all() and np.isfinite(us).all()
    grow = mla.analytic(p, [_key(32, kv) for kv in (128, 1024, 8192, 65536)])
    assert (np.diff(grow) > 0).all()


def test_the_latent_cache_is_read_once_for_all_heads():
    # 128 sequences x 4096 keys: 576 bf16 elements per key and layer (0.6 GB), not 2 x heads x
    # head_dim; at the published 3000 GB/s of FlashMLA that is ~0.2 ms, memory-bound
    nbytes, flops = mla.work([_key(128, 4096)])
    assert nbytes[0] == pytest.approx(128 * 4096 * 576 * 2, rel=0.01)
    us = mla.analytic(peaks("h100-sxm"), [_key(128, 4096)])[0]
    assert 190 < us < 220
    # many heads make it compute-bound: 128 heads at FlashMLA's published 580 TFLOPS
    many = mla.analytic(peaks("h100-sxm"), [_key(128, 4096, h=128)])[0]
    _, fl = mla.work([_key(128, 4096, h=128)])
    assert many > us and many == pytest.approx(4.0 + fl[0] / 580e6, rel=0.01)


@pytest.mark.skipif(not SHARED_MODELS.is_dir(), reason="the shared model configs are not here")
def test_mla_layout_from_configs():
    c = json.loads((SHARED_MODELS / "deepseek-v2-lite/config.json").read_text())
    assert mla_layout(SimpleNamespace(**c)) == (512, 64, 128, 128)
    q = json.loads((SHARED_MODELS / "qwen3-14b/config.json").read_text())
    assert mla_layout(SimpleNamespace(**q)) is None
