"""What every layer's wrappers share (patches.py: the V2 runner; v1_runner.py: the V1 runner):
the patched mark, the once-only warnings on vLLM's logger, the stand-in token policy of a runner."""

from __future__ import annotations

import logging
from typing import Any, Callable

from revati.vllm_plugin import tokens

# A child of vLLM's logger, so it shares vLLM's handlers and format.
logger = logging.getLogger("vllm.revati")

MARK = "__revati_patched__"
_warned: set[str] = set()


def _warn_once(key: str, msg: str, *args: Any, exc: bool = False) -> None:
    if key in _warned:
        return
    _warned.add(key)
    (logger.exception if exc else logger.warning)(msg, *args)


def _mark(fn: Callable, orig: Callable) -> Callable:
    setattr(fn, MARK, True)
    fn.__revati_original__ = orig  # type: ignore[attr-defined]
    return fn


def runner_policy(runner) -> tokens.TokenPolicy:
    policy = runner.__dict__.get("_revati_policy")
    if policy is None:
        vocab = int(getattr(runner, "vocab_size", 0) or runner.model_config.get_vocab_size())
        policy = tokens.policy_from_model_config(runner.model_config, vocab, logger)
        runner.__dict__["_revati_policy"] = policy
        logger.info(
            "revati: sampling stand-in tokens from %d ids (%s) of vocab %d; %d ids banned "
            "(EOS/special/stop); seed %d",
            len(policy.allowed), policy.source, vocab, len(policy.banned), tokens.seed_from_env(),
        )
    return policy
