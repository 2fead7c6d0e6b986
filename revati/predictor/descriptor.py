"""The op descriptor: what the shim sends to be predicted (documented in docs/predictor.md).

A descriptor is a map with "op" plus fields. `normalize` validates one and returns its parts,
each a (family, key) pair where key is the family's NamedTuple key (its feature columns of
the profile schema, in order). A mixed prefill+decode attention call yields two parts whose
durations are added; every other op yields one.

Each op's fields, and the rules that combine them, live in its family module
(families/<name>.py, registry families.OPS); this module dispatches by "op".
"""

from __future__ import annotations

from typing import Any

from revati.predictor.families import OPS
from revati.predictor.families.base import DescriptorError, Part, Slow, get_many

DESCRIPTOR_VERSION = 1

__all__ = ["DESCRIPTOR_VERSION", "DescriptorError", "normalize", "normalize_batch"]


def normalize(op: Any) -> list[Part]:
    """Validates one descriptor and returns its (family, key) parts.

    Raises:
        DescriptorError: naming the offending field.
    """
    if not isinstance(op, dict):
        raise DescriptorError(f"an op descriptor must be a map, got {type(op).__name__}")
    kind = op.get("op")
    try:
        o = OPS.get(kind)
    except TypeError:  # an unhashable "op"
        o = None
    if o is not None:
        return o.parse(op)
    if kind is None:
        raise DescriptorError("missing field 'op'")
    raise DescriptorError(f"field 'op' must be one of {list(OPS)}, got {kind!r}")


def _indexed(op: Any, i: int) -> list[Part]:
    try:
        return normalize(op)
    except DescriptorError as e:
        raise DescriptorError(f"ops[{i}]: {e}") from None


def normalize_batch(ops: list) -> list[list[Part]]:
    """normalize() of every op of a batch, validated and converted a field at a time.

    Ops are grouped by kind and each field is read and checked for the whole group at once
    (types by set(map(type, ...)), ranges by min()); the keys are the ones normalize() gives,
    bit for bit. NOTE: whenever the fast path cannot vouch for a value (a float where an
    integer is expected, an upper-case dtype, a missing field, per-sequence lists ...), the
    group, or on an error the whole batch, is redone op by op, so errors and their messages
    are exactly normalize()'s, for the first bad op.

    Raises:
        DescriptorError: "ops[i]: ..." for the first malformed op.
    """
    n = len(ops)
    try:
        if set(map(type, ops)) != {dict}:
            raise Slow
        kinds = get_many(ops, "op", None)
        groups: dict[Any, list[int]] = {}
        if len(set(kinds)) == 1:
            groups[kinds[0]] = list(range(n))
        else:
            for i, k in enumerate(kinds):
                g = groups.get(k)
                if g is None:
                    groups[k] = [i]
                else:
                    g.append(i)
    except (Slow, TypeError):
        return [_indexed(op, i) for i, op in enumerate(ops)]
    out: list = [None] * n
    try:
        for kind, idx in groups.items():
            sub = ops if len(idx) == n else [ops[i] for i in idx]
            o = OPS.get(kind)
            try:
                if o is None:
                    raise Slow
                res = o.parse_batch(sub)
            except (Slow, TypeError):
                res = [normalize(op) for op in sub]
            for i, r in zip(idx, res):
                out[i] = r
    except DescriptorError:
        return [_indexed(op, i) for i, op in enumerate(ops)]
    return out
