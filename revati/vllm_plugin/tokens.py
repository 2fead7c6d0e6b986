"""Deterministic stand-in for the tokens a GPU sampler would have drawn.

Kernels never execute under the emulator, so the sampled token ids that vLLM copies back
to the host are zeros or stale device memory. This module draws replacements:

* deterministically, from ``REVATI_SEED`` (default 0), a stable hash of the request id and
  the token's position in the sequence, so the same request at the same position always
  gets the same token (across TP ranks and across runs with equal request ids);
* only from an *allowed* set that excludes EOS, BOS, PAD, every special/added token and
  every per-request stop token id. We never emit EOS: a real model would stop at some EOS
  that the emulator cannot know, so the output length is always ``max_tokens`` (what
  ``vllm bench serve --ignore-eos`` expects; the load generator sets the output length
  with ``max_tokens``).
* When a tokenizer is available the allowed set is further narrowed to "plain word"
  tokens (letters only, optionally with a leading space marker). Such tokens decode to
  complete UTF-8 text on their own (the incremental detokenizer never holds back a
  partial byte sequence, so every step streams a non-empty delta, as a real model
  mostly would) and cannot complete a punctuation/newline stop string.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from revati import envs

_U64 = np.uint64
_MASK64 = (1 << 64) - 1

# A word token: optional leading-space marker (byte-level BPE "Ġ", sentencepiece "▁"),
# then ASCII letters only.
_PLAIN_TOKEN_RE = re.compile(r"^[\u0120\u2581 ]?[A-Za-z]{2,}$")
# Below this many plain tokens we do not trust the filter and use all non-special ids.
_MIN_PLAIN_TOKENS = 256


def seed_from_env() -> int:
    raw = envs.get("REVATI_SEED", "0").strip() or "0"
    try:
        return int(raw, 0) & _MASK64
    except ValueError:
        # A non-numeric seed still has to be deterministic.
        return zlib.crc32(raw.encode()) & _MASK64


def request_key(req_id: str) -> int:
    """A stable 64-bit key for a request id (Python's hash() is salted per process)."""
    b = req_id.encode("utf-8", "surrogatepass")
    return (zlib.crc32(b) << 32) | zlib.adler32(b)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # uint64 arithmetic wraps modulo 2**64 in numpy (no overflow error for arrays).
    with np.errstate(over="ignore"):
        x = x + _U64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def mix(seed: int, keys: np.ndarray, positions: np.ndarray, salt: int = 0) -> np.ndarray:
    """Vectorised 64-bit hash of (seed, key, position, salt)."""
    keys = np.asarray(keys, dtype=np.uint64)
    positions = np.asarray(positions, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = _splitmix64(np.full(keys.shape, seed & _MASK64, dtype=np.uint64) ^ _U64(salt & _MASK64))
        x = _splitmix64(x ^ keys)
        x = _splitmix64(x ^ positions)
    return x


def unit_uniform(seed: int, keys: np.ndarray, positions: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic uniforms in [0, 1)."""
    return (mix(seed, keys, positions, salt) >> _U64(11)).astype(np.float64) / float(1 << 53)


def _as_id_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (int, np.integer)):
        return [int(value)]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [int(v) for v in value if isinstance(v, (int, np.integer))]
    return []


@dataclass
class TokenPolicy:
    """The ids we may emit, and the ids we must never emit."""

    allowed: np.ndarray  # int64, sorted, non-empty
    banned: frozenset[int]
    vocab_size: int
    source: str  # how the allowed set was built (for logs)

    def draw(
        self,
        seed: int,
        keys: np.ndarray,
        positions: np.ndarray,
        extra_banned: Sequence[frozenset[int] | None] | None = None,
    ) -> np.ndarray:
        """One token per (key, position). ``extra_banned[i]`` bans ids for row i only."""
        keys = np.asarray(keys, dtype=np.uint64)
        positions = np.asarray(positions, dtype=np.int64)
        n = len(self.allowed)
        idx = (mix(seed, keys, positions) % _U64(n)).astype(np.int64)
        out = self.allowed[idx]
        if extra_banned is not None:
            for i, ban in enumerate(extra_banned):
                if not ban or int(out[i]) not in ban:
                    continue
                # Re-draw with a salt until we leave the per-request stop set.
                for salt in range(1, 64):
                    j = int(mix(seed, keys[i : i + 1], positions[i : i + 1], salt)[0] % _U64(n))
                    if int(self.allowed[j]) not in ban:
                        out[i] = self.allowed[j]
                        break
                else:  # pragma: no cover - needs a ban set covering ~all allowed ids
                    for cand in self.allowed:
                        if int(cand) not in ban:
                            out[i] = cand
                            break
        return out


def build_policy(
    vocab_size: int,
    *,
    tokenizer=None,
    eos_ids: Iterable[int] = (),
    special_ids: Iterable[int] = (),
) -> TokenPolicy:
    """Build the allowed set for a model with ``vocab_size`` logits.

    ``tokenizer`` is any Hugging Face-like tokenizer (``all_special_ids``,
    ``added_tokens_decoder``, ``convert_ids_to_tokens``, ``__len__``); optional.
    ``eos_ids`` / ``special_ids`` come from hf_config / generation_config.
    """
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    banned: set[int] = set(int(i) for i in eos_ids) | set(int(i) for i in special_ids)
    upper = vocab_size
    plain: np.ndarray | None = None
    source = "vocab"
    if tokenizer is not None:
        source = "tokenizer-nonspecial"
        try:
            tok_len = len(tokenizer)
            if tok_len > 0:
                # Ids past the tokenizer (padded embedding rows) cannot be detokenised.
                upper = min(upper, int(tok_len))
        except Exception:
            pass
        for attr in ("all_special_ids",):
            banned.update(_as_id_list(list(getattr(tokenizer, attr, None) or [])))
        for attr in ("eos_token_id", "bos_token_id", "pad_token_id", "unk_token_id"):
            banned.update(_as_id_list(getattr(tokenizer, attr, None)))
        added = getattr(tokenizer, "added_tokens_decoder", None)
        if isinstance(added, dict):
            banned.update(int(k) for k in added.keys())
        convert = getattr(tokenizer, "convert_ids_to_tokens", None)
        if callable(convert):
            try:
                pieces = convert(list(range(upper)))
                ok = [
                    i
                    for i, p in enumerate(pieces)
                    if isinstance(p, str) and _PLAIN_TOKEN_RE.match(p) and i not in banned
                ]
                if len(ok) >= _MIN_PLAIN_TOKENS:
                    plain = np.asarray(ok, dtype=np.int64)
                    source = "tokenizer-plain-words"
            except Exception:
                pass
    if plain is not None:
        allowed = plain
    else:
        lo, hi = 0, upper
        known = sorted(i for i in banned if 0 <= i < upper)
        if tokenizer is None and known:
            # Without a tokenizer, reserved special-token blocks are unknown. Families put
            # them either at the top (Llama 3: 128000.., Qwen2: 151643..) or at the bottom
            # (Llama 2: 0..2). Stay on the side of the known specials that has more room.
            below, above = known[0], upper - known[-1] - 1
            if below >= above:
                hi = known[0]
            else:
                lo = known[-1] + 1
            source = "vocab-heuristic"
            # Skip the 256 byte-fallback/control ids at the bottom when there is room.
            if lo == 0 and hi > 4096:
                lo = 256
        allowed = np.arange(lo, hi, dtype=np.int64)
        if banned:
            allowed = allowed[~np.isin(allowed, np.fromiter(banned, dtype=np.int64))]
    if len(allowed) == 0:
        raise ValueError(
            f"no token id left to emit (vocab_size={vocab_size}, banned={len(banned)})"
        )
    return TokenPolicy(
        allowed=np.sort(allowed), banned=frozenset(banned), vocab_size=vocab_size, source=source
    )


def policy_from_model_config(model_config, vocab_size: int, logger=None) -> TokenPolicy:
    """Build the policy from a vLLM ModelConfig (best effort, never raises for lookups)."""
    eos: set[int] = set()
    special: set[int] = set()
    hf = getattr(model_config, "hf_config", None)
    hf_text = hf.get_text_config() if hf is not None and hasattr(hf, "get_text_config") else hf
    for cfg in (hf, hf_text):
        if cfg is None:
            continue
        eos.update(_as_id_list(getattr(cfg, "eos_token_id", None)))
        for attr in ("bos_token_id", "pad_token_id", "decoder_start_token_id"):
            special.update(_as_id_list(getattr(cfg, attr, None)))
    try:
        gen = model_config.try_get_generation_config() or {}
        eos.update(_as_id_list(gen.get("eos_token_id")))
        for attr in ("bos_token_id", "pad_token_id"):
            special.update(_as_id_list(gen.get(attr)))
    except Exception as e:  # offline, gated, ...
        if logger:
            logger.debug("revati: no generation_config (%s)", e)
    tokenizer = None
    if not getattr(model_config, "skip_tokenizer_init", False):
        try:
            from vllm.tokenizers.registry import cached_tokenizer_from_config

            tokenizer = cached_tokenizer_from_config(model_config)
        except Exception as e:
            if logger:
                logger.warning(
                    "revati: could not load the tokenizer in the worker (%s); drawing "
                    "tokens from the vocabulary minus known special ids", e
                )
    return build_policy(vocab_size, tokenizer=tokenizer, eos_ids=eos, special_ids=special)
