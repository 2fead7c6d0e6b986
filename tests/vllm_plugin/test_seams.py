"""The patched seams of the real vLLM 0.32 V2 model runner, driven on the CPU."""

from __future__ import annotations

import inspect
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from revati.vllm_plugin import patches, steps
from revati.vllm_plugin.tokens import request_key

LLAMA3_VOCAB = 128256
LLAMA3_EOS = [128001, 128008, 128009]


@pytest.fixture(scope="module")
def patched():
    old = os.environ.get("REVATI_ACTIVE")
    os.environ["REVATI_ACTIVE"] = "1"
    try:
        import revati.vllm_plugin as plugin

        plugin.register()
        status = patches.install_eager()
    finally:
        if old is None:
            os.environ.pop("REVATI_ACTIVE", None)
        else:
            os.environ["REVATI_ACTIVE"] = old
    return status


def test_all_seams_found(patched):
    missing = {k: v for k, v in patched.items() if v != "patched"}
    assert not missing, missing


def test_patched_attributes_are_ours(patched):
    from vllm.v1.worker.gpu.async_utils import AsyncOutput
    from vllm.v1.worker.gpu.model_runner import GPUModelRunner

    for fn in (
        GPUModelRunner.sample,
        GPUModelRunner.prepare_inputs,
        GPUModelRunner.add_requests,
        AsyncOutput.get_output,
    ):
        assert getattr(fn, patches.MARK, False), fn
        assert fn.__code__.co_filename == patches.__file__
        assert fn.__revati_original__.__module__.startswith("vllm.v1.worker.gpu")


def test_seam_contracts_match_vllm(patched):
    """The wrappers assume these signatures and this kernel logic; fail loudly on drift."""
    from vllm.v1.worker.gpu import input_batch as ib
    from vllm.v1.worker.gpu.model_runner import GPUModelRunner

    sample = inspect.signature(GPUModelRunner.sample.__revati_original__)
    assert list(sample.parameters)[:3] == ["self", "hidden_states", "input_batch"]
    prep = inspect.signature(GPUModelRunner.prepare_inputs.__revati_original__)
    assert "InputBatch" in str(prep.return_annotation)
    add = inspect.signature(GPUModelRunner.add_requests.__revati_original__)
    assert list(add.parameters)[:2] == ["self", "scheduler_output"]
    # What semantics.compute_num_sampled mirrors.
    kernel = ib._get_num_sampled_and_rejected_kernel
    src = inspect.getsource(getattr(kernel, "fn", kernel))
    assert "is_chunked_prefilling = seq_len < prefill_len" in src
    assert "num_rejected = num_logits - num_sampled" in src


class _Event:
    def __init__(self):
        self.synced = 0

    def synchronize(self):
        self.synced += 1


def _fake_runner():
    hf = SimpleNamespace(eos_token_id=128001, bos_token_id=128000, pad_token_id=None)
    model_config = SimpleNamespace(
        hf_config=hf,
        skip_tokenizer_init=True,
        try_get_generation_config=lambda: {"eos_token_id": LLAMA3_EOS},
    )
    return SimpleNamespace(model_config=model_config, vocab_size=LLAMA3_VOCAB)


class _Runner:
    """Plain object so the wrappers can keep per-runner state in __dict__."""

    def __init__(self):
        fake = _fake_runner()
        self.model_config = fake.model_config
        self.vocab_size = fake.vocab_size


def _zero_sampler_output(n, width=1):
    from vllm.v1.worker.gpu.sample.output import SamplerOutput

    # What the host would read back: kernels never ran, so zeros.
    return SamplerOutput(
        sampled_token_ids=torch.zeros((n, width), dtype=torch.int64),
        logprobs_tensors=None,
        num_nans=None,
        num_sampled=torch.zeros(n, dtype=torch.int32),
        num_rejected=torch.zeros(n, dtype=torch.int32),
    )


def _async_output(sampler_output, req_ids, logprobs_tensors=None):
    from vllm.v1.outputs import ModelRunnerOutput
    from vllm.v1.worker.gpu.async_utils import AsyncOutput

    out = AsyncOutput.__new__(AsyncOutput)  # no CUDA streams on this machine
    out.model_runner_output = ModelRunnerOutput(
        req_ids=list(req_ids), req_id_to_index={r: i for i, r in enumerate(req_ids)}
    )
    out.sampler_output = sampler_output
    out.num_sampled_tokens = sampler_output.num_sampled
    out.pending_aux_output = None
    out.copy_event = _Event()
    out._has_fault = None
    out.sampled_token_ids = sampler_output.sampled_token_ids.numpy().copy()
    out.logprobs_tensors = logprobs_tensors
    out.num_nans = None
    out.num_sampled_tokens_np = sampler_output.num_sampled.numpy().copy()
    out.sampling_mask_tensors = None
    out.prompt_logprobs_dict = {}
    out.prompt_token_id_logprobs_dict = {}
    return out


def test_sample_and_get_output_give_the_engine_real_tokens(patched, input_batch_factory):
    from vllm.v1.worker.gpu.async_utils import AsyncOutput

    req_ids = ["cmpl-a-0", "cmpl-b-0", "cmpl-c-0", "cmpl-d-0"]
    # decode | partial prefill chunk | last prefill chunk | prefix-cache hit + rest
    batch = input_batch_factory(
        req_ids,
        num_computed=[100, 0, 1536, 96],
        num_scheduled=[1, 512, 464, 4],
        prefill_len=[10, 2000, 2000, 100],
    )
    so = _zero_sampler_output(4)
    runner = _Runner()
    sample = patches._wrap_sample(lambda self, h, ib, g: (so, so.num_sampled, so.num_rejected))
    result = sample(runner, None, batch, None)
    assert result[0] is so

    # Without the layer the engine would see no token at all (it spins forever).
    bare = AsyncOutput.get_output.__revati_original__(_async_output(so, req_ids))
    assert bare.sampled_token_ids == [[], [], [], []]

    ao = _async_output(so, req_ids)
    out = ao.get_output()
    assert ao.copy_event.synced >= 1
    toks = out.sampled_token_ids
    assert [len(t) for t in toks] == [1, 0, 1, 1]
    flat = [t for row in toks for t in row]
    assert all(0 < t < 128000 for t in flat), flat
    assert not set(flat) & set(LLAMA3_EOS)
    # Deterministic: the same step again gives the same tokens.
    again = _async_output(so, req_ids).get_output().sampled_token_ids
    assert again == toks


def test_stop_token_ids_of_a_request_are_never_sampled(patched, input_batch_factory):
    runner = _Runner()
    add = patches._wrap_add_requests(lambda self, so: None)
    # Ban *every* id this request would otherwise get for positions 0..299.
    n = 300
    batch = input_batch_factory(["r"] * n, list(range(10, 10 + n)), [1] * n, [5] * n)
    free = patches._wrap_sample(lambda s, h, ib, g: (_zero_sampler_output(n),) * 3)
    so_free = free(runner, None, batch, None)[0]
    banned = {int(t) for t in so_free._revati_override.tokens[:, 0]}
    sp = SimpleNamespace(stop_token_ids=sorted(banned), all_stop_token_ids=set())
    add(runner, SimpleNamespace(finished_req_ids=set(), scheduled_new_reqs=[SimpleNamespace(req_id="r", sampling_params=sp)]))
    so = free(runner, None, batch, None)[0]
    assert not {int(t) for t in so._revati_override.tokens[:, 0]} & banned
    # Finished requests are forgotten.
    add(runner, SimpleNamespace(finished_req_ids={"r"}, scheduled_new_reqs=[]))
    assert "r" not in runner._revati_stop_ids


def test_spec_decode_shapes(patched, input_batch_factory, monkeypatch):
    monkeypatch.setenv("REVATI_SPEC_ACCEPTANCE", "1.0")
    req_ids = ["s0", "s1"]
    batch = input_batch_factory(
        req_ids, num_computed=[40, 0], num_scheduled=[4, 64], prefill_len=[20, 200], num_logits=[4, 1]
    )
    so = _zero_sampler_output(2, width=4)
    runner = _Runner()
    patches._wrap_sample(lambda s, h, ib, g: (so, so.num_sampled, so.num_rejected))(runner, None, batch, None)
    out = _async_output(so, req_ids).get_output()
    assert [len(t) for t in out.sampled_token_ids] == [4, 0]
    assert so._revati_override.num_rejected.tolist() == [0, 0]


def test_logprobs_are_filled(patched, input_batch_factory):
    from vllm.v1.outputs import LogprobsTensors

    req_ids = ["l0", "l1"]
    batch = input_batch_factory(req_ids, [10, 20], [1, 1], [5, 5])
    so = _zero_sampler_output(2)
    patches._wrap_sample(lambda s, h, ib, g: (so, so.num_sampled, so.num_rejected))(_Runner(), None, batch, None)
    lp = LogprobsTensors(
        logprob_token_ids=torch.zeros((2, 6), dtype=torch.int32),
        logprobs=torch.zeros((2, 6), dtype=torch.float32),
        selected_token_ranks=torch.zeros(2, dtype=torch.int32),
    )
    out = _async_output(so, req_ids, logprobs_tensors=lp).get_output()
    ids = out.logprobs.logprob_token_ids
    assert [row[0] for row in ids.tolist()] == [t[0] for t in out.sampled_token_ids]
    assert (out.logprobs.logprobs < 0).all()
    assert not np.isin(ids, LLAMA3_EOS).any()


def test_prepare_inputs_reports_batch_composition(patched, input_batch_factory, tmp_path, monkeypatch):
    log = tmp_path / "steps.jsonl"
    monkeypatch.setenv("REVATI_STEP_LOG", str(log))
    steps._reset_for_tests()
    batch = input_batch_factory(
        ["d0", "d1", "p0"], num_computed=[100, 7, 32], num_scheduled=[1, 1, 480], prefill_len=[50, 5, 1000]
    )
    prep = patches._wrap_prepare_inputs(lambda self, *a, **k: batch)
    assert prep(object(), "sched", "state") is batch
    rec = json.loads(log.read_text().splitlines()[-1])
    assert rec["num_reqs"] == 3 and rec["num_tokens"] == 482
    assert rec["num_prefill"] == 1 and rec["num_decode"] == 2
    assert rec["query_lens"] == [1, 1, 480]
    assert rec["seq_lens"] == [101, 8, 512]
    assert rec["context_lens"] == [100, 7, 32]
    assert steps.STEP_RING[-1] == rec
