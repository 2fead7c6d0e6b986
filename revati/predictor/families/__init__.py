"""The op families, one module each, and the registry that every stage dispatches through.

  gemm.py        gemm
  attention.py   attention_prefill, attention_decode (one descriptor op, "attention")
  small.py       norm, activation, rotary, elementwise, embedding
  collective.py  collective
  memcpy.py      memcpy
  moe.py         moe (the fused expert GEMMs of a MoE layer)
  mla.py         mla (multi-head latent attention, decode)

FAMILIES maps a family name to its `Family` (key, features, physics, grid ...); OPS maps a
descriptor "op" to its `Op` (field table and the two validation paths). See base.py.
"""

from __future__ import annotations

from revati.predictor.families import attention, collective, gemm, memcpy, mla, moe, small
from revati.predictor.families.base import DescriptorError, Family, Field, Op

# NOTE: the order is the profile schema's (schema.FAMILY_COLUMNS)
FAMILIES: dict[str, Family] = {f.name: f for f in (
    gemm.FAMILY, attention.FAMILY_PREFILL, attention.FAMILY_DECODE, *small.FAMILY_OBJECTS,
    collective.FAMILY, memcpy.FAMILY, moe.FAMILY, mla.FAMILY)}
OPS: dict[str, Op] = {o.op: o for o in (gemm.OP, attention.OP, collective.OP, memcpy.OP,
                                        moe.OP, mla.OP, *small.OPS)}
LEARNED: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.learned)


def get(name: str) -> Family:
    """The family called `name`.

    Raises:
        KeyError: naming the known families.
    """
    f = FAMILIES.get(name)
    if f is None:
        raise KeyError(f"unknown op family {name!r}; known: {', '.join(FAMILIES)}")
    return f


__all__ = ["FAMILIES", "LEARNED", "OPS", "DescriptorError", "Family", "Field", "Op", "get"]
