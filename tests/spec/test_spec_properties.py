"""Specs at the edges of the schema (issue 15, part 4): a shipped example with one field replaced
by an edge value, removed, or joined by an unknown one. Every spec the schema accepts must go
through the manifest builders and the local plan without an exception (a SpecError or
WorkloadError that names what is wrong is an answer, not a crash); every spec it rejects must
have a message that names the field."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from revati.operator import manifests as mf
from revati.run import loadgen
from revati.run.plan import DeploymentPlan
from revati.spec import SpecError, spec_from_dict

REPO = Path(__file__).resolve().parents[2]
BASES = [yaml.safe_load((REPO / p).read_text()) for p in ("examples/default.yaml", "examples/llama-70b-tp4-decode.yaml")]


def _paths(node, prefix=()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


PATHS = [(b, p) for b in range(len(BASES)) for p in _paths(BASES[b]) if p[0] in ("spec", "metadata")]

edge_values = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, -1, 1, 2, 3, 7, 2 ** 31, 2 ** 63, -(2 ** 63), 10 ** 30]),
    st.integers(-5, 100_000),
    st.sampled_from([0.0, -0.5, 0.5, 1e-12, 1e308, math.inf, -math.inf, math.nan]),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from(["", " ", "auto", "x" * 300, "h100-sxm", "a100-80gb", "meta-llama/Llama-3.1-70B",
                     "vllm", "sglang", "0.0.1", "random", "poisson", "constant", "../etc/passwd", "Ä"]),
    st.text(max_size=12),
    st.lists(st.integers(-2, 5), max_size=3),
    st.dictionaries(st.sampled_from(["a", "type", "p99", "inputLen"]), st.integers(-2, 5), max_size=2),
)
mutations = st.tuples(st.sampled_from(PATHS), st.one_of(
    edge_values.map(lambda v: ("set", v)), st.just(("del", None)),
    st.sampled_from(["typo", "tensorParalelSize", "requestrate"]).map(lambda k: ("add", k))))


def _apply(base: dict, path: tuple, op: str, value) -> tuple[dict, tuple]:
    """The mutated spec, and the path of the field it touched."""
    data = copy.deepcopy(base)
    parent = data
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if op == "set":
        parent[last] = value
        return data, path
    if op == "del":
        if isinstance(parent, list):
            parent.pop(last)
        else:
            parent.pop(last)
        return data, path
    node = parent[last]
    if isinstance(node, dict):
        node[value] = 1
        return data, path + (value,)
    parent[last] = value  # a leaf: replaced by a string
    return data, path


def _dotted(path: tuple) -> str:
    out = ""
    for x in path:
        out += f"[{x}]" if isinstance(x, int) else ("." if out else "") + str(x)
    return out


def _names_the_field(problems: list[str], path: tuple) -> bool:
    """Some problem's field is the touched one, an ancestor or a descendant of it, or its text
    names the touched key (a check across fields reports at their parent)."""
    want = _dotted(path)
    keys = [str(k) for k in path if not isinstance(k, int)]
    for p in problems:
        field, _, text = p.partition(": ")
        if field == "(top level)":
            continue
        if want.startswith(field) or field.startswith(want):
            return True
        if keys and keys[-1] in text:
            return True
    return False


def _cr(data: dict) -> dict:
    cr = copy.deepcopy(data)
    cr.setdefault("metadata", {}) if isinstance(cr.get("metadata"), dict) else None
    if isinstance(cr.get("metadata"), dict):
        cr["metadata"].update(namespace="team-a", uid="u-1")
    return cr


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(m=mutations)
def test_every_accepted_spec_plans_and_every_rejected_one_names_its_field(m, tmp_path_factory):
    (b, path), (op, value) = m
    data, touched = _apply(BASES[b], path, op, value)
    try:
        spec = spec_from_dict(data, source="mutated")
    except SpecError as e:
        assert e.problems and _names_the_field(e.problems, touched), (touched, e.problems)
        return
    # Accepted: the operator's builders and the local plan must not raise anything else.
    cr = _cr(data)
    try:
        mf.validate(cr)
        mf.build_all(cr, mf.Images("r:1", "s:1", "m:1"))
    except SpecError as e:
        assert e.problems and _names_the_field(e.problems, touched) or "name" in str(e), (touched, e.problems)
        return
    plan = DeploymentPlan.of(spec, spec_dir=REPO / "examples")
    plan.notes()
    try:
        plan.check_load(tmp_path_factory.mktemp("load"))
    except loadgen.WorkloadError as e:
        assert str(e), touched
