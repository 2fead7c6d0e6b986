"""What a real GPU would have computed for the values the host reads back.

Computed on the host from the ``InputBatch``'s CPU arrays, per sampling step:

* ``num_sampled[i]`` — vLLM's ``get_num_sampled_and_rejected`` Triton kernel: 0 while
  the request is still chunk-prefilling (``seq_len < prefill_len``), otherwise the
  number of accepted tokens: 1 without spec decode, ``accepted + 1`` with it.
* ``num_rejected[i]`` — ``num_logits - num_sampled``, 0 while chunk-prefilling.
* ``tokens[i, :]`` — the sampled ids (see :mod:`tokens`).

With speculative decoding the number of accepted drafts depends on the real model and
drafter. We draw it per request and step: each draft is accepted with probability
``REVATI_SPEC_ACCEPTANCE`` (default 0.7) until the first rejection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from revati import envs

from revati.vllm_plugin.tokens import TokenPolicy, request_key, unit_uniform

_ACCEPT_SALT = 0x5A17


def spec_acceptance_from_env() -> float:
    try:
        p = float(envs.get("REVATI_SPEC_ACCEPTANCE", "0.7"))
    except ValueError:
        p = 0.7
    return min(max(p, 0.0), 1.0)


@dataclass
class SampleOverride:
    tokens: np.ndarray  # int64 [num_reqs, width]
    num_sampled: np.ndarray  # int32 [num_reqs]
    num_rejected: np.ndarray  # int32 [num_reqs]
    num_reqs: int
    policy: TokenPolicy | None = None


def compute_num_sampled(
    num_computed: np.ndarray,
    num_scheduled: np.ndarray,
    prefill_len: np.ndarray,
    num_logits: np.ndarray,
    accepted_drafts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Host mirror of ``_get_num_sampled_and_rejected_kernel``."""
    seq_len = num_computed.astype(np.int64) + num_scheduled.astype(np.int64)
    chunked = seq_len < prefill_len.astype(np.int64)
    if accepted_drafts is None:
        sampled = np.ones(len(seq_len), dtype=np.int64)
    else:
        sampled = np.minimum(accepted_drafts.astype(np.int64) + 1, num_logits.astype(np.int64))
    sampled = np.where(chunked, 0, sampled)
    rejected = np.where(chunked, 0, num_logits.astype(np.int64) - sampled)
    return sampled.astype(np.int32), rejected.astype(np.int32)


def draw_accepted(
    seed: int, keys: np.ndarray, positions: np.ndarray, num_drafts: np.ndarray, p: float
) -> np.ndarray:
    """Accepted-prefix length per request: i.i.d. Bernoulli(p) per draft, stop at first reject."""
    max_d = int(num_drafts.max()) if len(num_drafts) else 0
    accepted = np.zeros(len(num_drafts), dtype=np.int64)
    alive = np.ones(len(num_drafts), dtype=bool)
    for j in range(max_d):
        u = unit_uniform(seed, keys, positions + j, _ACCEPT_SALT)
        ok = alive & (j < num_drafts) & (u < p)
        accepted += ok
        alive &= ok
    return accepted


def compute_override(
    input_batch,
    width: int,
    policy: TokenPolicy,
    seed: int,
    stop_ids: dict[str, frozenset[int]] | None = None,
    spec_acceptance: float = 0.7,
) -> SampleOverride:
    n = int(input_batch.num_reqs)
    req_ids = list(input_batch.req_ids[:n])
    num_computed = np.asarray(input_batch.num_computed_tokens_np[:n], dtype=np.int64)
    num_scheduled = np.asarray(input_batch.num_scheduled_tokens[:n], dtype=np.int64)
    prefill_len = np.asarray(input_batch.prefill_len_np[:n], dtype=np.int64)
    cu = np.asarray(input_batch.cu_num_logits_np[: n + 1], dtype=np.int64)
    num_logits = cu[1:] - cu[:-1] if len(cu) == n + 1 else np.ones(n, dtype=np.int64)
    num_drafts = np.maximum(num_logits - 1, 0)

    keys = np.fromiter((request_key(r) for r in req_ids), dtype=np.uint64, count=n)
    # Position of the first token sampled this step: right after the verified prefix.
    first_pos = num_computed + num_scheduled - num_drafts

    accepted = None
    if num_drafts.any():
        accepted = draw_accepted(seed, keys, first_pos, num_drafts, spec_acceptance)
    num_sampled, num_rejected = compute_num_sampled(
        num_computed, num_scheduled, prefill_len, num_logits, accepted
    )

    width = max(int(width), 1)
    tokens = np.empty((n, width), dtype=np.int64)
    bans = None
    if stop_ids:
        bans = [stop_ids.get(r) for r in req_ids]
    for j in range(width):
        tokens[:, j] = policy.draw(seed, keys, first_pos + j, bans)
    return SampleOverride(
        tokens=tokens, num_sampled=num_sampled, num_rejected=num_rejected, num_reqs=n, policy=policy
    )
