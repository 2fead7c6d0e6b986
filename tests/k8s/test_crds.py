"""The generated CRDs: structural, in sync with charts/revati/crds, and strict.

CRs are checked as the API server would: OpenAPI validation against the generated
openAPIV3Schema (openapi-schema-validator's OAS30Validator, which knows `nullable`) plus a
small strict-field-validation check (kubectl's default `--validate=strict`) that walks the
object against `properties`. Every rejection must name the field, as the API server does
("spec.tensorParallelSize: Invalid value ...").
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from openapi_schema_validator import OAS30Validator
from pydantic import ValidationError

from revati.catalog import load_catalog
from revati.cli import main
from revati.spec import SpecError, spec_from_dict
from revati.spec.crds import (
    EmulatedDeploymentStatus,
    all_crds,
    crd_filename,
    crd_yaml,
    emulated_deployment_crd,
    emulation_sweep_crd,
)
from revati.spec.load import PREDICTOR_PATTERN
from revati.spec.schema import Emulation, Metadata
from revati.spec.sweep import EmulationSweep, expand, rank

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "charts" / "revati" / "crds"
EMD = yaml.safe_load((REPO / "examples" / "default.yaml").read_text())
EMS = yaml.safe_load((REPO / "charts" / "revati" / "examples" / "emulationsweep.yaml").read_text())
#: metav1.ObjectMeta fields a client may set; the API server checks metadata against ObjectMeta.
OBJECT_META = {"name", "generateName", "namespace", "labels", "annotations", "ownerReferences", "finalizers",
               "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
               "deletionGracePeriodSeconds", "managedFields"}


def _schema(crd: dict) -> dict:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _dotted(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def unknown_fields(schema: dict, obj, path: str = "") -> list[str]:
    """Paths of fields the schema does not know (strict field validation), metadata against ObjectMeta."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(obj, dict):
        if path == "metadata":
            return [f"metadata.{k}" for k in obj if k not in OBJECT_META]
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        out = []
        for key, value in obj.items():
            sub = f"{path}.{key}" if path else key
            if props is not None and key in props:
                out += unknown_fields(props[key], value, sub)
            elif isinstance(extra, dict):
                out += unknown_fields(extra, value, sub)
            else:
                out.append(sub)
        return out
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [p for i, v in enumerate(obj) for p in unknown_fields(schema["items"], v, f"{path}[{i}]")]
    return []


def problems(crd: dict, obj: dict) -> list[str]:
    """What the API server would reject, one 'field.path: message' per problem."""
    schema = _schema(crd)
    out = []
    for err in OAS30Validator(schema).iter_errors(obj):
        path = _dotted(err.absolute_path)
        if err.validator == "required":
            missing = re.search(r"'(.+?)' is a required property", err.message).group(1)
            out.append(f"{path + '.' if path else ''}{missing}: Required value")
        else:
            out.append(f"{path or '(root)'}: {err.message}")
    out += [f"{p}: unknown field" for p in unknown_fields(schema, obj)]
    return out


_DELETE = object()


def _with(base: dict, path: str, value) -> dict:
    """A copy of base with the dotted path (dict keys; [i] for list items) set or deleted."""
    d = copy.deepcopy(base)
    parts = [int(p) if p.isdigit() else p for p in re.split(r"\.|\[(\d+)\]", path) if p]
    node = d
    for p in parts[:-1]:
        node = node[p]
    if value is _DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return d


EMD_INVALID = [  # (path, value, the field the message must name, also rejected by pydantic)
    ("spec.tensorParalellSize", 2, "spec.tensorParalellSize", True),  # typo
    ("spec.tensorParallelSize", -1, "spec.tensorParallelSize", True),
    ("spec.tensorParallelSize", 0, "spec.tensorParallelSize", True),
    ("spec.tensorParallelSize", "2", "spec.tensorParallelSize", False),  # pydantic coerces "2"
    ("spec.gpu", "h100", "spec.gpu", True),
    ("spec.workload.dataset.type", "randum", "spec.workload.dataset.type", True),
    ("spec.workload.dataset.rangeRatio", 1.5, "spec.workload.dataset.rangeRatio", True),
    ("spec.workload.dataset.rangeRatio", 1.0, "spec.workload.dataset.rangeRatio", True),
    ("spec.workload.dataset.inputLen", 0, "spec.workload.dataset.inputLen", True),
    ("spec.workload.arrival.requestRate", 0, "spec.workload.arrival.requestRate", True),
    ("spec.workload.arrival.process", "uniform", "spec.workload.arrival.process", True),
    ("spec.workload.arrival.rate", 4, "spec.workload.arrival.rate", True),
    ("spec.workload.arrival.stages", [{"rate": 1, "durationSecs": 5}], "spec.workload.arrival.stages[0].durationSecs", True),
    ("spec.workload", _DELETE, "spec.workload", True),
    ("spec.model", _DELETE, "spec.model", True),
    ("spec.engine.name", "tgi", "spec.engine.name", True),
    ("spec.emulation.predictor", "constant:fast", "spec.emulation.predictor", True),
    ("spec.emulation.timewarp", "yes", "spec.emulation.timewarp", False),  # pydantic coerces "yes"
    ("spec.slo.ttftMs.p99", -5, "spec.slo.ttftMs.p99", True),
    ("spec.slo.ttftMs.p95", 100, "spec.slo.ttftMs.p95", True),
    ("metadata.name", "Llama_8B", "metadata.name", True),
    ("metadata.name", "8b-llama", "metadata.name", False),  # Service names must start with a letter
    ("metadata.name", "a" * 52, "metadata.name", False),  # <name>-coordinator must fit 63 characters
    ("metadata.labells", {"a": "b"}, "metadata.labells", True),
    ("apiVersion", "revati.dev/v1", "apiVersion", True),
    ("kind", "EmulatedDeploymnet", "kind", True),
]

EMS_INVALID = [
    ("spec.grid.tensorParallelSize", [], "spec.grid.tensorParallelSize"),
    ("spec.grid", {}, "spec.grid"),
    ("spec.grid.gpu", "h100-sxm", "spec.grid.gpu"),  # a value, not a list
    ("spec.maxParallel", 0, "spec.maxParallel"),
    ("spec.prices.h100-sxm", 0, "spec.prices.h100-sxm"),
    ("spec.prices.h100-sxm", -2.5, "spec.prices.h100-sxm"),
    ("spec.prices.h100", 2.5, "spec.prices.h100"),  # not a catalog GPU
    ("spec.prices", _DELETE, "spec.prices"),
    ("spec.base.replica", 2, "spec.base.replica"),
    ("spec.base.tensorParallelSize", 0, "spec.base.tensorParallelSize"),
    ("spec.base.gpu", "b200", "spec.base.gpu"),
    ("spec.base.workload", _DELETE, "spec.base.workload"),
    ("spec.base", _DELETE, "spec.base"),
    ("spec.slo.ttft", {"p99": 1}, "spec.slo.ttft"),
    ("spec.maxParalel", 4, "spec.maxParalel"),
    ("metadata.name", "a" * 48, "metadata.name"),  # <name>-255 must be a valid EmulatedDeployment name
    ("kind", "EmulatedDeployment", "kind"),
]


@pytest.mark.parametrize("path,value,field,pydantic_too", EMD_INVALID,
                         ids=[f"{p}={v!r}"[:60] for p, v, _, _ in EMD_INVALID])
def test_invalid_emulated_deployments_are_rejected_naming_the_field(path, value, field, pydantic_too):
    found = problems(emulated_deployment_crd(), _with(EMD, path, value))
    assert found, f"{path}={value!r} passed the CRD schema"
    assert any(p.startswith(field + ":") for p in found), found
    if pydantic_too:  # the operator's (and revati run's) validation agrees
        with pytest.raises(SpecError):
            spec_from_dict(_with(EMD, path, value))


@pytest.mark.parametrize("path,value,field", EMS_INVALID, ids=[f"{p}={v!r}"[:60] for p, v, _ in EMS_INVALID])
def test_invalid_sweeps_are_rejected_naming_the_field(path, value, field):
    bad = _with(EMS, path, value)
    found = problems(emulation_sweep_crd(), bad)
    assert any(p.startswith(field + ":") for p in found), found
    with pytest.raises(ValidationError):
        EmulationSweep.model_validate(bad)


def test_at_least_ten_distinct_fields_are_covered():
    assert len({f for _, _, f, _ in EMD_INVALID} | {f for _, _, f in EMS_INVALID}) >= 10


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")) +
                         sorted((REPO / "charts" / "revati" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_examples_validate(path):
    obj = yaml.safe_load(path.read_text())
    crd = {"EmulatedDeployment": emulated_deployment_crd(), "EmulationSweep": emulation_sweep_crd()}[obj["kind"]]
    assert problems(crd, obj) == []


def test_every_dataset_kind_and_engine_arg_type_validates():
    for ds in [{"type": "shared-prefix", "numGroups": 4, "promptsPerGroup": 16, "systemPromptLen": 2048,
                "questionLen": 64, "outputLen": 32},
               {"type": "sharegpt-like", "maxInputLen": 1024},
               {"type": "trace", "path": "/data/trace.jsonl"}]:
        assert problems(emulated_deployment_crd(), _with(EMD, "spec.workload.dataset", ds)) == []
    args = {"max-num-seqs": 64, "gpu-memory-utilization": 0.9, "enable-prefix-caching": True, "dtype": "bfloat16"}
    assert problems(emulated_deployment_crd(), _with(EMD, "spec.engine.args", args)) == []
    assert problems(emulated_deployment_crd(), _with(EMD, "spec.emulation.dilation", 1.5)) == []


def test_sweep_children_and_statuses_validate():
    sweep = EmulationSweep.model_validate(EMS)
    children = expand(sweep)
    for child in children:
        assert problems(emulated_deployment_crd(), child.body) == []
    status = {"phase": "Succeeded", "observedGeneration": 1, "virtualSeconds": 61.5, "wallSeconds": 20.5,
              "speedup": 3.0, "gpus": 2, "reportConfigMap": "x-report",
              "conditions": [{"type": "Ready", "status": "True", "reason": "Finished", "message": "ok",
                              "lastTransitionTime": "2026-11-21T20:00:00Z"}],
              "metrics": {"ttftMs": {"p50": 80.0, "p99": 210.0}, "tpotMs": {"p50": 20.0, "p99": 31.0},
                          "e2elMs": {"p50": 2500.0, "p99": 4100.0}, "requestThroughput": 3.9,
                          "outputThroughput": 500.0, "goodput": 3.8, "completed": 200, "failed": 0}}
    EmulatedDeploymentStatus.model_validate(status)
    assert problems(emulated_deployment_crd(), {**EMD, "status": status}) == []
    assert problems(emulated_deployment_crd(), {**EMD, "status": {**status, "phase": "Done"}})[0].startswith("status.phase:")
    results = [{"name": c.name, "params": c.params, "phase": "Succeeded", "metrics": status["metrics"]}
               for c in children]
    assert problems(emulation_sweep_crd(), {**EMS, "status": {"phase": "Succeeded", **rank(sweep.spec, results)}}) == []
    early = [{"name": c.name, "params": c.params, "phase": None, "metrics": None} for c in children]
    early[0].update(phase="Running")
    assert problems(emulation_sweep_crd(), {**EMS, "status": {"phase": "Running", **rank(sweep.spec, early)}}) == []


# -- generated, structural, in sync --------------------------------------------------------


def test_chart_crds_match_the_generator():
    """charts/revati/crds is `revati crds --out charts/revati/crds`, never edited by hand."""
    expected = {crd_filename(crd): crd_yaml(crd) for crd in all_crds()}
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == sorted(expected)
    for name, text in expected.items():
        assert (CRD_DIR / name).read_text() == text, f"{name} is stale: run `revati crds --out charts/revati/crds`"


def test_cli_prints_both_crds(capsys, tmp_path):
    assert main(["crds"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["metadata"]["name"] for d in docs] == ["emulateddeployments.revati.dev", "emulationsweeps.revati.dev"]
    assert main(["crds", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in CRD_DIR.glob("*.yaml"))


def _nodes(schema: dict, path: str = ""):
    """Every schema node with its path, children via properties, items and additionalProperties."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("crd", all_crds(), ids=lambda c: c["spec"]["names"]["kind"])
def test_schemas_are_structural(crd):
    schema = _schema(crd)
    for path, node in _nodes(schema):
        assert not {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "discriminator", "const", "title"} & set(node), path
        special = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        assert node.get("type") in ("object", "array", "string", "integer", "number", "boolean") or special, path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert not isinstance(node.get("additionalProperties"), bool), path
        assert node.get("type") != "array" or isinstance(node.get("items"), dict), path
        for key in ("exclusiveMinimum", "exclusiveMaximum", "nullable"):
            assert isinstance(node.get(key, False), bool), (path, key)
        assert node.get("exclusiveMinimum") is not True or "minimum" in node, path
        assert not (node.get("nullable") and None not in node.get("enum", [None])), path  # null must pass
        if "default" in node:  # the API server requires defaults to validate against their schema
            assert node["default"] is not None, path
            OAS30Validator(node).validate(node["default"])
        for key, value in node.get("properties", {}).items():
            assert set(node.get("required", [])) <= set(node["properties"]), path
    assert set(schema["properties"]["metadata"]) == {"type", "properties"}
    assert set(schema["properties"]["metadata"]["properties"]) == {"name"}  # the only restriction allowed
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}} and version["served"] and version["storage"]


def test_flattened_dataset_union_carries_no_defaults():
    """A default of one dataset kind (rangeRatio) would be written by the API server into another."""
    for crd, spec_path in ((emulated_deployment_crd(), ("spec",)), (emulation_sweep_crd(), ("spec", "base"))):
        node = _schema(crd)
        for p in spec_path:
            node = node["properties"][p]
        ds = node["properties"]["workload"]["properties"]["dataset"]
        assert ds["required"] == ["type"]
        assert all("default" not in prop for prop in ds["properties"].values())


def test_names_kinds_and_printer_columns_follow_the_contract():
    emd, ems = emulated_deployment_crd(), emulation_sweep_crd()
    for crd, kind, plural, short in ((emd, "EmulatedDeployment", "emulateddeployments", "emd"),
                                     (ems, "EmulationSweep", "emulationsweeps", "ems")):
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1" and crd["kind"] == "CustomResourceDefinition"
        assert crd["metadata"]["name"] == f"{plural}.revati.dev"
        assert crd["spec"]["group"] == "revati.dev" and crd["spec"]["scope"] == "Namespaced"
        names = crd["spec"]["names"]
        assert (names["kind"], names["plural"], names["singular"], names["shortNames"]) == \
            (kind, plural, kind.lower(), [short])
        assert crd["spec"]["versions"][0]["name"] == "v1alpha1"
    cols = {c["name"]: c["jsonPath"] for c in emd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert cols["Phase"] == ".status.phase" and cols["GPU"] == ".spec.gpu"
    assert cols["TP"] == ".spec.tensorParallelSize" and cols["Virtual"] == ".status.virtualSeconds"
    assert cols["TTFT-p99"] == ".status.metrics.ttftMs.p99" and cols["TPOT-p99"] == ".status.metrics.tpotMs.p99"
    assert cols["Age"] == ".metadata.creationTimestamp"
    cols = {c["name"]: c["jsonPath"] for c in ems["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert {"Phase", "Children", "Cheapest", "Age"} <= set(cols)


@pytest.mark.parametrize("crd", all_crds(), ids=lambda c: c["spec"]["names"]["kind"])
def test_printer_columns_point_at_schema_fields(crd):
    schema = _schema(crd)
    for col in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        if col["jsonPath"] == ".metadata.creationTimestamp":
            continue
        node = schema
        for part in col["jsonPath"].lstrip(".").split("."):
            node = node["properties"][part]
        assert {"string": "string", "integer": "integer", "number": "number"}[col["type"]] == node["type"], col


def test_gpu_enum_is_the_catalog_and_prices_take_only_catalog_gpus():
    spec = _schema(emulated_deployment_crd())["properties"]["spec"]
    assert spec["properties"]["gpu"]["enum"] == list(load_catalog())
    prices = _schema(emulation_sweep_crd())["properties"]["spec"]["properties"]["prices"]
    assert set(prices["properties"]) == set(load_catalog())


@pytest.mark.parametrize("value", ["sidecar", "roofline", "constant:1ms", "constant:2.5us", "constant:10s",
                                   "constant:7ns", "constant:1", "constant:ms", "constant:1.ms", "constant:-1ms",
                                   "constant:1 ms", "Sidecar", "roofline ", "constant:1msx", ""])
def test_predictor_pattern_agrees_with_the_model(value):
    try:
        Emulation(predictor=value)
        accepted = True
    except ValidationError:
        accepted = False
    assert bool(re.search(PREDICTOR_PATTERN, value)) == accepted


@pytest.mark.parametrize("name", ["a", "llama-8b", "a1-b2", "a" * 51, "8b", "-a", "a-", "A", "a_b", "a.b", "a" * 52])
def test_crd_names_are_a_subset_of_what_the_model_accepts(name):
    pattern = _schema(emulated_deployment_crd())["properties"]["metadata"]["properties"]["name"]
    crd_ok = bool(re.search(pattern["pattern"], name)) and len(name) <= pattern["maxLength"]
    if crd_ok:
        Metadata(name=name)  # must not raise
