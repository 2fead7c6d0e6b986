"""The SGLang layer's host-side functions on plain objects shaped as SGLang's (no SGLang needed):
the batch composition of a ForwardBatch, the stand-in ids, and the entry point's no-op outside
the emulator. tests/e2e/test_sglang_serve.py runs them in the real server."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest

from revati import sglang_plugin
from revati.sglang_plugin import patches
from revati.vllm_plugin import tokens


class Mode:
    def __init__(self, kind: str):
        self.kind = kind

    def is_decode(self):
        return self.kind == "decode"

    def is_extend(self):
        return self.kind == "extend"

    def is_idle(self):
        return self.kind == "idle"


def test_a_mixed_extend_batch_reports_its_prefill_and_its_context():
    runner = NS(decode_cuda_graph_runner=None)
    fb = NS(forward_mode=Mode("extend"), batch_size=2, seq_lens_cpu=np.array([600, 40]),
            extend_seq_lens_cpu=[100, 40])
    b = patches.batch_from_forward_batch(runner, fb)
    assert (b["num_reqs"], b["num_tokens"], b["num_prefill"], b["num_decode"]) == (2, 140, 2, 0)
    assert b["context_lens"] == [500, 0] and b["seq_lens"] == [600, 40] and b["num_tokens_padded"] == 140


def test_a_decode_batch_is_padded_to_the_captured_graph_size():
    runner = NS(decode_cuda_graph_runner=NS(capture_bs=[1, 2, 4, 8, 12, 16]))
    fb = NS(forward_mode=Mode("decode"), batch_size=9, seq_lens_cpu=np.arange(100, 109), extend_seq_lens_cpu=None)
    b = patches.batch_from_forward_batch(runner, fb)
    assert b["num_decode"] == 9 and b["num_tokens"] == 9 and b["num_tokens_padded"] == 12
    fb.batch_size, fb.seq_lens_cpu = 20, np.arange(20)  # larger than every graph: not padded
    assert patches.batch_from_forward_batch(runner, fb)["num_tokens_padded"] == 20


def test_an_idle_pass_reports_nothing():
    fb = NS(forward_mode=Mode("idle"), batch_size=0, seq_lens_cpu=None, extend_seq_lens_cpu=None)
    assert patches.batch_from_forward_batch(NS(), fb) is None


def test_stand_in_ids_never_hit_a_requests_eos_or_stop_ids_and_are_deterministic():
    pol = tokens.build_policy(64, eos_ids=[63])
    sched = NS(_revati_policy=pol)
    reqs = [NS(rid=f"r{i}", origin_input_ids=[1] * 5, output_ids=[2] * i, eos_token_ids={7},
               sampling_params=NS(stop_token_ids={8, 9})) for i in range(200)]
    ids = patches.draw_ids(sched, reqs)
    assert len(ids) == 200 and not set(ids.tolist()) & {7, 8, 9, 63}
    assert ids.tolist() == patches.draw_ids(sched, reqs).tolist()


def test_register_does_nothing_outside_the_emulator(monkeypatch):
    monkeypatch.delenv("REVATI_ACTIVE", raising=False)
    monkeypatch.setattr(sglang_plugin, "_registered", False)
    sglang_plugin.register()
    assert sglang_plugin._registered is False


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("sglang") is not None,
                    reason="SGLang is importable here: its seam exists")
def test_a_missing_seam_names_itself():
    with pytest.raises(patches.MissingSeamError, match=r"sglang\.srt\.managers\.scheduler\.Scheduler\.process_batch_result"):
        patches._resolve("sampled_ids")
