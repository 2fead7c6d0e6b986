"""The V1 model runner's layer (vLLM 0.15; revati/vllm_plugin/v1_runner.py) on stand-ins of the
runner's host state, the layer of each version range, and the failure on a missing seam.
tests/e2e/test_engine_versions.py runs it in a real vLLM 0.15.1."""

from __future__ import annotations

import types
from types import SimpleNamespace

import numpy as np
import pytest

from revati import engines
from revati.engines.vllm import VllmAdapter
from revati.vllm_plugin import patches, tokens, v1_runner

LLAMA3_VOCAB = 128256


class Runner:
    """The V1 GPUModelRunner's host state that the layer reads."""

    def __init__(self, req_ids, computed, prompt, no_spec, stops=None):
        self._revati_policy = tokens.build_policy(LLAMA3_VOCAB, eos_ids=[128001, 128009], special_ids=[128000])
        self.input_batch = SimpleNamespace(
            req_ids=list(req_ids), num_reqs=len(req_ids), num_computed_tokens_cpu=np.array(computed),
            num_prompt_tokens=np.array(prompt), num_tokens_no_spec=np.array(no_spec))
        self.requests = {r: SimpleNamespace(sampling_params=SimpleNamespace(
            stop_token_ids=(stops or {}).get(r), all_stop_token_ids=None)) for r in req_ids}


def test_batch_composition_from_the_v1_host_state():
    r = Runner(req_ids=["a", "b", "c"], computed=[100, 7, 32], prompt=[50, 5, 512], no_spec=[101, 8, 32])
    sched = SimpleNamespace(scheduled_spec_decode_tokens={})
    b = v1_runner.batch_from_v1(r, sched, np.array([1, 1, 480], dtype=np.int32))
    assert b["query_lens"] == [1, 1, 480] and b["context_lens"] == [100, 7, 32] and b["seq_lens"] == [101, 8, 512]
    assert (b["num_prefill"], b["num_decode"], b["num_tokens"]) == (1, 2, 482)


def test_tokens_are_drawn_per_request_and_position_and_never_a_stop_id():
    r = Runner(req_ids=["a", "b"], computed=[10, 3], prompt=[5, 3], no_spec=[11, 4], stops={"b": [1000]})
    got = v1_runner.draw_tokens(r, 2)
    assert got.shape == (2, 1)
    keys = np.array([tokens.request_key("a"), tokens.request_key("b")], dtype=np.uint64)
    assert got[0, 0] == r._revati_policy.draw(tokens.seed_from_env(), keys, np.array([11, 4]))[0]
    assert int(got[0, 0]) not in (128001, 128009, 128000)
    assert (v1_runner.draw_tokens(r, 2) == got).all()  # deterministic


def test_the_sync_path_returns_the_drawn_tokens_once():
    r = Runner(req_ids=["a"], computed=[10], prompt=[5], no_spec=[11])
    wrapped = v1_runner.wrap_to_list(lambda self, t: [[0]])
    r.__dict__["_revati_tokens"] = np.array([[4242]])
    assert wrapped(r, None) == [[4242]]
    assert wrapped(r, None) == [[0]]  # consumed: a later call reads what the copy gave


def test_the_layer_of_each_version_and_an_unknown_one():
    assert VllmAdapter.semantic_layer("0.15.1") == "v1" and VllmAdapter.semantic_layer("0.32.0") == "v2"
    assert VllmAdapter.semantic_layer("0.33.0") == "v2" and VllmAdapter.semantic_layer("0.29.0") == "v2"
    for v in engines.supported()["vllm"]:
        assert VllmAdapter.semantic_layer(v) == engines.get("vllm", v).build().layer
    with pytest.raises(engines.UnknownEngineError, match=r"no seams for vllm 0\.25\.0 .*\[0\.15\.0, 0\.16\.0\): v1"):
        VllmAdapter.semantic_layer("0.25.0")
    with pytest.raises(engines.UnknownEngineError, match=r"no seams for vllm 0\.30\.0 .*\[0\.29\.0, 0\.30\.0\): v2"):
        VllmAdapter.semantic_layer("0.30.0")  # 0.30 and 0.31 are unchecked, between two v2 ranges


def test_a_missing_required_seam_stops_with_its_name():
    mod = types.ModuleType("fake_vllm_runner")
    mod.GPUModelRunner = type("GPUModelRunner", (), {})
    seam = patches.Seam("fake_vllm_runner", "GPUModelRunner._bookkeeping_sync", lambda f: f)
    with pytest.raises(patches.MissingSeamError, match=r"fake_vllm_runner\.GPUModelRunner\._bookkeeping_sync is missing"):
        patches.patch_seam(seam, mod)
    optional = patches.Seam("fake_vllm_runner", "GPUModelRunner.execute_model", lambda f: f, required=False)
    assert patches.patch_seam(optional, mod) is False
