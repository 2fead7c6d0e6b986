"""What an op family is made of, and the descriptor field readers every family shares.

A family (families/<name>.py) owns:
  * its key: a NamedTuple whose fields are the family's feature columns of the profile
    schema, in order, and whose annotations are their types (str columns are categorical);
  * its descriptor field table (`Field`s): the one declaration that both descriptor paths
    read, normalize() one op at a time (`read`) and normalize_batch() a field at a time over
    a group of ops (`read_many`);
  * its features, ideal time, monotone constraints and size columns (what training.py and
    inference.py fit and clip with), its physical lower bound (what physics.py guards with),
    its roofline fallback, and its grid (a grids.GridSpec): see `Family`.

NOTE: the keys are tuples (NamedTuple subclasses), so a key equals, and hashes as, the plain
tuple of its values: the exact-key cache and the grid memo are unchanged by the names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Callable, Sequence

import numpy as np

from revati.predictor.roofline import DTYPE_BYTES, Peaks

DTYPE_ALIASES = {
    "bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "half": "fp16",
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "tf32": "tf32", "fp8": "fp8",
    "fp8_e4m3": "fp8", "e4m3": "fp8", "float8_e4m3fn": "fp8", "fp8_e5m2": "fp8", "e5m2": "fp8",
    "int8": "int8", "auto": "auto",
}
REQUIRED = ...  # the default of a field that must be given
# The largest integer a count field (tokens, heads, dims, lengths, batch) may hold, and a bytes
# field: far above any one op, and low enough that the products the families form (keys x
# sequences, m x n x k) stay within int64 and float64 (the sidecar's fuzz found the overflow).
COUNT_MAX = 2 ** 31 - 1
BYTES_MAX = 2 ** 50
# A (family, key) pair: what a descriptor normalises to.
Part = tuple[str, tuple]


class DescriptorError(ValueError):
    """A descriptor is malformed; the message names the field."""


class Slow(Exception):
    """The batch fast path cannot vouch for a value: redo the batch op by op."""


# ---- the field table ----

INT = "int"          # an integer (a whole float is accepted one op at a time) >= minimum
DTYPE = "dtype"      # a dtype name, DTYPE_ALIASES (case-insensitive one op at a time)
CHOICE = "choice"    # one of `choices`, exactly
INT_LIST = "int_list"  # a non-empty list of non-negative integers (absent: None)
NUMBER = "number"    # a finite or infinite number >= 0 (not a bool), as a float


@dataclass(frozen=True, slots=True)
class From:
    """A default taken from a field read before: its value, capped at `upto` if given."""

    name: str
    upto: int | None = None


@dataclass(frozen=True, slots=True)
class Field:
    """One descriptor field.

    Attributes:
        name: the descriptor's key.
        kind: INT, DTYPE, CHOICE, INT_LIST or NUMBER.
        default: a value, REQUIRED, None (optional: an absent integer reads as None), or
            From(another field); a family's own rules may pass another default where it
            depends on more than one field.
        minimum: INT only.
        maximum: INT (COUNT_MAX, or BYTES_MAX for sizes in bytes) and NUMBER.
        choices: CHOICE only.
        doc: what docs/predictor.md says of it.
    """

    name: str
    kind: str
    default: Any = REQUIRED
    minimum: int = 0
    choices: tuple[str, ...] = ()
    doc: str = ""
    maximum: int = COUNT_MAX


def _int(op: dict, name: str, default: Any, minimum: int, maximum: int = COUNT_MAX) -> int:
    v = op.get(name, default)
    if type(v) is int and minimum <= v <= maximum:  # NOTE: the hot path (bool is not int by type)
        return v
    if v is ...:
        raise DescriptorError(f"{op.get('op')}: missing field {name!r}")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (
            isinstance(v, float) and (not math.isfinite(v) or v != int(v))):
        raise DescriptorError(f"{op.get('op')}: field {name!r} must be an integer, got {v!r}")
    v = int(v)
    if v < minimum:
        raise DescriptorError(f"{op.get('op')}: field {name!r} must be >= {minimum}, got {v}")
    if v > maximum:
        raise DescriptorError(f"{op.get('op')}: field {name!r} must be <= {maximum}, got {v}")
    return v


def _choice(op: dict, name: str, choices: tuple[str, ...] | dict, default: Any) -> str:
    v = op.get(name, default)
    if isinstance(choices, dict) and type(v) is str:
        c = choices.get(v)
        if c is not None:  # the hot path: an exact (lower-case) name
            return c
    if v is ...:
        raise DescriptorError(f"{op.get('op')}: missing field {name!r}")
    if isinstance(choices, dict):
        if not isinstance(v, str) or v.lower() not in choices:
            raise DescriptorError(f"{op.get('op')}: field {name!r} must be one of "
                                  f"{sorted(set(choices))}, got {v!r}")
        return choices[v.lower()]
    if v not in choices:
        raise DescriptorError(f"{op.get('op')}: field {name!r} must be one of {list(choices)}, "
                              f"got {v!r}")
    return v


def _int_list(op: dict, name: str) -> list[int] | None:
    v = op.get(name)
    if v is None:
        return None
    kind = op.get("op")
    if not isinstance(v, (list, tuple)) or not v:
        raise DescriptorError(f"{kind}: field {name!r} must be a non-empty list of integers")
    out = []
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int) or x < 0 or x > COUNT_MAX:
            raise DescriptorError(f"{kind}: field {name!r} must hold integers in [0, {COUNT_MAX}], "
                                  f"got {x!r}")
        out.append(x)
    return out


def _number(op: dict, name: str, maximum: float) -> float:
    v = op[name]
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= maximum:
        raise DescriptorError(f"{op.get('op')}: field {name!r} must be a number in [0, {maximum}]")
    return float(v)


_UNSET = object()


def read(op: dict, f: Field, done: dict[str, Any] | None = None, default: Any = _UNSET) -> Any:
    """One field of one op, validated (the normalize() path).

    Args:
        op: the descriptor.
        f: the field.
        done: fields read before (for a From default).
        default: overrides f.default.
    Raises:
        DescriptorError: naming the field.
    """
    d = f.default if default is _UNSET else default
    if d.__class__ is From:
        d = done[d.name] if d.upto is None else min(done[d.name], d.upto)
    if f.kind == INT:
        v = op.get(f.name, d)
        if type(v) is int and f.minimum <= v <= f.maximum:  # NOTE: the hot path (bool is not int by type)
            return v
        if v is None and d is None:
            return None  # an optional integer, absent or null
        return _int(op, f.name, d, f.minimum, f.maximum)
    if f.kind == DTYPE:
        return _choice(op, f.name, DTYPE_ALIASES, d)
    if f.kind == CHOICE:
        return _choice(op, f.name, f.choices, d)
    if f.kind == INT_LIST:
        return _int_list(op, f.name)
    return _number(op, f.name, f.maximum)


def read_fields(op: dict, fields: Sequence[Field]) -> dict[str, Any]:
    """Every field of a table, in order, from one op."""
    done: dict[str, Any] = {}
    for f in fields:
        done[f.name] = read(op, f, done)
    return done


# ---- the batch path: a field at a time over a group of ops ----

def get_many(sub: list[dict], name: str, default: Any = ...) -> list:
    # NOTE: map(dict.get, ...) runs the loop in C: ~25 ns an op against ~65 for a
    # comprehension; a missing required field reads as Ellipsis, which no check accepts
    n = len(sub)
    return list(map(dict.get, sub, repeat(name, n), repeat(default, n)))


def has_many(sub: list[dict], name: str) -> list[bool]:
    return list(map(dict.__contains__, sub, repeat(name, len(sub))))


def _ints(vals: list, minimum: int, maximum: int) -> list[int]:
    if set(map(type, vals)) != {int} or min(vals) < minimum or max(vals) > maximum:
        raise Slow
    return vals


def read_many(sub: list[dict], f: Field, done: dict[str, list] | None = None,
              defaults: list | None = None) -> list:
    """One field of every op of a group (the normalize_batch() path): the values normalize()
    gives, bit for bit.

    Args:
        sub: the ops (dicts).
        f: the field.
        done: the columns read before (for a From default).
        defaults: per-op defaults overriding f.default.
    Raises:
        Slow: whenever a value is not one the fast path can vouch for (the caller redoes the
            group op by op, which raises the error, if any).
    """
    d = f.default
    if defaults is None and isinstance(d, From):
        col = done[d.name]
        defaults = col if d.upto is None else [v if v < d.upto else d.upto for v in col]
    if defaults is not None:
        vals = list(map(dict.get, sub, repeat(f.name, len(sub)), defaults))
    else:
        vals = get_many(sub, f.name, d)
    if f.kind == INT:
        return _ints(vals, f.minimum, f.maximum)
    if f.kind == DTYPE:
        vals = list(map(DTYPE_ALIASES.get, vals))
        if None in vals:
            raise Slow
        return vals
    if f.kind == CHOICE:
        if not set(vals) <= frozenset(f.choices):
            raise Slow
        return vals
    if f.kind == NUMBER:
        # NOTE: a nan passes normalize() (nan < 0 is false) but not min(): op by op
        types = set(map(type, vals))
        if not types <= {int, float} or (float in types and any(v != v for v in vals)) or \
                min(vals) < 0 or max(vals) > f.maximum:
            raise Slow
        return list(map(float, vals))
    raise Slow  # lists: op by op


def read_columns(sub: list[dict], fields: Sequence[Field]) -> dict[str, list]:
    """Every field of a table, in order, over a group of ops."""
    done: dict[str, list] = {}
    for f in fields:
        done[f.name] = read_many(sub, f, done)
    return done


def make_keys(key: type, columns: Sequence[list]) -> list[tuple]:
    """Key tuples from value columns (in the key's field order).

    NOTE: tuple.__new__ through map, not key._make: one C call an op, not a Python one."""
    return list(map(tuple.__new__, repeat(key, len(columns[0])), zip(*columns)))


# ---- numpy columns of keys ----

def key_columns(key: type) -> tuple[str, ...]:
    return tuple(key._fields)


def column_type(key: type, name: str) -> str:
    """"int", "float" or "str": the annotation of a key field ("int | None" is int)."""
    t = key.__annotations__[name]
    # NOTE: NamedTuple keeps a string annotation as a ForwardRef
    t = getattr(t, "__forward_arg__", None) or getattr(t, "__name__", None) or str(t)
    return t.split("|")[0].strip()


def string_columns(key: type) -> tuple[str, ...]:
    """The categorical columns: those annotated str."""
    return tuple(c for c in key._fields if column_type(key, c) == "str")


def columns_of(key: type, keys: Sequence[tuple]) -> dict[str, np.ndarray]:
    """Keys (tuples in the key's field order) as numpy columns: object arrays for str
    columns, float64 (None -> nan) for the rest."""
    out: dict[str, np.ndarray] = {}
    strs = string_columns(key)
    for i, name in enumerate(key._fields):
        vals = [k[i] for k in keys]
        if name in strs:
            out[name] = np.asarray(vals, dtype=object)
        else:
            out[name] = np.asarray([np.nan if v is None else v for v in vals], dtype=np.float64)
    return out


# ---- the family ----

Features = Callable[[Peaks, dict[str, np.ndarray]], tuple[np.ndarray, list[str]]]
Ideal = Callable[[Peaks, dict[str, np.ndarray]], np.ndarray]


def median_us(row: dict) -> float:
    """The median of a profile row's repeated runs, us (what most families predict)."""
    return row["dur_us_median"]


@dataclass(frozen=True, eq=False)
class Family:
    """One op family: everything that differs between families, in one place.

    Attributes:
        name: the family (profile file name, model name, stats key).
        key: its NamedTuple key class (the feature columns, in order, with their types).
        describe: key -> a descriptor dict that normalises back to (name, key).
        bytes_flops: keys -> (bytes moved, FLOPs) arrays (physics.py).
        lower_bound: (peaks, keys, bytes, flops) -> the physical lower bound, us.
        fallback: (peaks, {column: value}) -> the roofline estimate, us (no model at all).
        features: (peaks, columns) -> (X, feature names); None: no learned model (memcpy).
        monotone: the LightGBM monotone constraint of each feature (part of the config hash).
        size_columns: columns whose training range is kept (queries outside it are clipped).
        ideal: (peaks, columns) -> the roofline ideal time, us.
        base: what a residual model's target is relative to (default: ideal).
        derived_sizes: columns -> more sizes whose ranges are kept (attention).
        preclip: (training ranges, columns) -> what inference.predict_keys clips with
            instead of clipping each column alone (attention).
        analytic: (peaks, keys) -> us: the family is served by this model, not a learned
            one (memcpy).
        bytes_only: also train on copies without the per-token columns (tokens, hidden).
        proxy_shift: a proxy GPU's time moves by the ideal-time difference, not its ratio.
        grid: the family's bucketed grid (grids.py), None: the model path only.
        grid_keys: training keys -> the shapes whose grids a fitted model records (gemm).
        curves: training rows -> per-configuration measured curves (collective).
        held_out_by: the columns whose values evaluate.py holds out whole (a held-out
            group is a shape the model never saw).
        also_held_out_by: further hold-out views, reported as "<family>/<cols>".
        measured: the statistic of a profile row's repeated runs that the family predicts
            (what it is trained, fitted and scored on): the median, or for collectives the
            undisturbed run (families/collective.undisturbed_us).
    """

    name: str
    key: type
    describe: Callable[[tuple], dict]
    bytes_flops: Callable[[Sequence[tuple]], tuple[np.ndarray, np.ndarray]]
    lower_bound: Callable[[Peaks, Sequence[tuple], np.ndarray, np.ndarray], np.ndarray]
    fallback: Callable[[Peaks, dict], float]
    features: Features | None = None
    monotone: list[int] = field(default_factory=list)
    size_columns: tuple[str, ...] = ()
    ideal: Ideal | None = None
    base: Ideal | None = None
    derived_sizes: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    preclip: Callable | None = None
    analytic: Callable[[Peaks, Sequence[tuple]], np.ndarray] | None = None
    bytes_only: bool = False
    proxy_shift: bool = False
    grid: Any = None
    grid_keys: Callable[[Sequence[tuple]], list[list[Any]]] | None = None
    curves: Callable[[Sequence[dict]], dict[str, list[list[float]]]] | None = None
    held_out_by: tuple[str, ...] = ()
    also_held_out_by: tuple[tuple[str, ...], ...] = ()
    measured: Callable[[dict], float] = median_us

    @property
    def columns(self) -> tuple[str, ...]:
        return key_columns(self.key)

    @property
    def string_columns(self) -> tuple[str, ...]:
        return string_columns(self.key)

    @property
    def learned(self) -> bool:
        return self.features is not None

    def build(self, p: Peaks, c: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
        """The feature matrix and names of columns `c`."""
        return self.features(p, c)

    def residual_base(self, p: Peaks, c: dict[str, np.ndarray]) -> np.ndarray:
        return (self.base or self.ideal)(p, c)

    def columns_of(self, keys: Sequence[tuple]) -> dict[str, np.ndarray]:
        return columns_of(self.key, keys)

    def key_of_row(self, row: dict) -> tuple:
        """The key of a profile row (what the descriptor normaliser gives for that op)."""
        return tuple.__new__(self.key, (row[c] for c in self.key._fields))


@dataclass(frozen=True, eq=False)
class Op:
    """A descriptor "op" and how it is read: its field table and its two paths.

    Attributes:
        op: the descriptor's "op".
        fields: the field table.
        parse: one op -> its parts (raises DescriptorError).
        parse_batch: a group of ops of this kind -> their parts (raises Slow where it cannot
            vouch for a value).
        families: the families its parts belong to.
    """

    op: str
    fields: tuple[Field, ...]
    parse: Callable[[dict], list[Part]]
    parse_batch: Callable[[list[dict]], list[list[Part]]]
    families: tuple[str, ...]


def simple_op(op: str, family: str, key: type, fields: tuple[Field, ...]) -> Op:
    """The Op of a family whose key is its fields, in the key's order (gemm, collective,
    memcpy): both paths read the table and build the key, nothing else."""
    names = tuple(f.name for f in fields)
    if set(names) != set(key._fields):
        raise ValueError(f"{op}: fields {names} are not the key's {key._fields}")
    order = [names.index(c) for c in key._fields]

    def parse(d: dict) -> list[Part]:
        done = read_fields(d, fields)
        return [(family, tuple.__new__(key, [done[c] for c in key._fields]))]

    def parse_batch(sub: list[dict]) -> list[list[Part]]:
        cols = read_columns(sub, fields)
        vals = list(cols.values())
        return [[(family, k)] for k in make_keys(key, [vals[i] for i in order])]

    return Op(op, fields, parse, parse_batch, (family,))


# ---- helpers of the feature builders ----

def log2(x: np.ndarray) -> np.ndarray:
    return np.log2(np.maximum(x, 1e-9))


def dtype_arrays(p: Peaks, dtypes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(bytes per element, peak TFLOP/s) of each dtype on GPU p."""
    ebytes = np.array([DTYPE_BYTES.get(d, 2) for d in dtypes], dtype=np.float64)
    tflops = np.array([p.tflops.get(d) or p.tflops["bf16"] for d in dtypes], dtype=np.float64)
    return ebytes, tflops


def elt(dtypes: Sequence[str]) -> np.ndarray:
    """Bytes per element of each dtype (2 for one the table lacks)."""
    return np.array([DTYPE_BYTES.get(d, 2) for d in dtypes], dtype=np.float64)


def rate(p: Peaks, dtypes: Sequence[str]) -> np.ndarray:
    """Peak dense FLOP per microsecond of each dtype."""
    return np.array([(p.tflops.get(d) or p.tflops["bf16"]) * 1e6 for d in dtypes],
                    dtype=np.float64)


def floats(col: Sequence) -> np.ndarray:
    """A key column as float64, None -> 0."""
    return np.array([0.0 if v is None else v for v in col], dtype=np.float64)
