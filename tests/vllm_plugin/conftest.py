from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch


REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    # Appended, not prepended: the repo root holds a top-level ``operator/`` folder that
    # must not shadow the standard library's ``operator``.
    sys.path.append(str(REPO))


def run_python(code: str, env_update: dict | None = None, timeout: int = 600):
    """Run ``code`` in a fresh interpreter that can import revati (repo root appended to
    sys.path, cwd outside the repo), with ``env_update`` applied (None values unset)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    for k, v in (env_update or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    prelude = f"import sys; sys.path.append({str(REPO)!r})\n"
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(
            [sys.executable, "-c", prelude + code],
            env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
        )


def make_input_batch(
    req_ids,
    num_computed,
    num_scheduled,
    prefill_len,
    num_logits=None,
):
    """A real vllm 0.32 V2 ``InputBatch`` whose device fields are CPU tensors."""
    from vllm.v1.worker.gpu.input_batch import InputBatch

    n = len(req_ids)
    num_computed = np.asarray(num_computed, dtype=np.int32)
    num_scheduled = np.asarray(num_scheduled, dtype=np.int32)
    prefill_len = np.asarray(prefill_len, dtype=np.int32)
    if num_logits is None:
        num_logits = np.ones(n, dtype=np.int32)
    num_logits = np.asarray(num_logits, dtype=np.int32)
    cu = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(num_logits, out=cu[1:])
    qsl = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(num_scheduled, out=qsl[1:])
    num_tokens = int(num_scheduled.sum())
    computed_prefill = np.minimum(num_computed, prefill_len)
    is_prefilling = computed_prefill < prefill_len
    drafts = num_logits - 1
    return InputBatch(
        req_ids=list(req_ids),
        num_reqs=n,
        num_reqs_after_padding=n,
        idx_mapping=torch.arange(n),
        idx_mapping_np=np.arange(n),
        expanded_idx_mapping=torch.arange(n),
        expanded_local_pos=torch.zeros(n, dtype=torch.int32),
        num_scheduled_tokens=num_scheduled,
        num_tokens=num_tokens,
        num_tokens_after_padding=num_tokens,
        num_draft_tokens=int(drafts.sum()),
        num_draft_tokens_per_req=drafts if drafts.any() else None,
        query_start_loc=torch.from_numpy(qsl),
        query_start_loc_np=qsl,
        seq_lens=torch.zeros(n, dtype=torch.int32),  # device value: never computed
        seq_lens_cpu_upper_bound=torch.from_numpy(num_computed + num_scheduled),
        dcp_local_seq_lens=None,
        num_computed_tokens_np=num_computed,
        prefill_len_np=prefill_len,
        num_computed_prefill_tokens_np=computed_prefill,
        is_prefilling_np=is_prefilling,
        has_prefill=bool(is_prefilling.any()),
        prefill_runs_as_decode_np=None,
        decode_graph_eligible=not bool(is_prefilling.any()),
        input_ids=torch.zeros(num_tokens, dtype=torch.int32),
        positions=torch.zeros(num_tokens, dtype=torch.int64),
        is_padding=torch.zeros(num_tokens, dtype=torch.bool),
        logits_indices=torch.zeros(int(cu[-1]), dtype=torch.int64),
        cu_num_logits=torch.from_numpy(cu),
        cu_num_logits_np=cu,
        has_structured_output_reqs=False,
        prompt_lens=None,
    )


@pytest.fixture
def input_batch_factory():
    return make_input_batch
