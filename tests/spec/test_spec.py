"""The run spec: valid specs load; bad ones fail fast with messages naming the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from revati.spec import SpecError, crd_openapi_schema, load_spec, spec_from_dict

REPO = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((REPO / "examples" / "default.yaml").read_text())


def _with(path: str, value, base=DEFAULT):
    d = copy.deepcopy(base)
    node = d
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return d


_DELETE = object()


def test_the_shipped_default_spec_is_valid():
    s = load_spec(REPO / "examples" / "default.yaml")
    assert s.spec.gpu == "h100-sxm" and s.spec.model == "meta-llama/Llama-3.1-8B"
    assert s.spec.engine.cli_args() == ["--max-num-seqs", "256", "--max-num-batched-tokens", "8192"]
    assert s.spec.workload.dataset.type == "random"


def test_every_dataset_kind_and_staged_arrivals_are_expressible():
    for ds in [{"type": "shared-prefix", "numGroups": 4, "promptsPerGroup": 16, "systemPromptLen": 2048,
                "questionLen": 128, "outputLen": 256},
               {"type": "sharegpt-like"}, {"type": "trace", "path": "arrivals.jsonl"}]:
        spec_from_dict(_with("spec.workload.dataset", ds))
    staged = _with("spec.workload.arrival", {"process": "constant", "stages": [
        {"rate": 2, "durationSeconds": 60}, {"rate": 8, "durationSeconds": 60}]})
    spec_from_dict(_with("spec.workload.numPrompts", _DELETE, staged))
    spec_from_dict(_with("spec.workload.arrival", {"maxConcurrency": 32}))


@pytest.mark.parametrize("path, value, field, words", [
    ("spec.tensorParallelSize", "two", "spec.tensorParallelSize", "integer"),             # wrong type
    ("spec.gpu", "b300", "spec.gpu", "unknown GPU 'b300'"),                               # unknown GPU
    ("spec.tensorParallelSize", 16, "spec", "larger than a h100-sxm node"),               # TP > node
    ("spec.workload.arrival.requestRate", -1, "spec.workload.arrival.requestRate", "greater than 0"),  # negative rate
    ("spec.model", _DELETE, "spec.model", "required field is missing"),                   # missing model
    ("spec.model", "meta-llama/Llama-9-1T", "spec.model", "Llama-3.1-8B"),                # unknown model lists known
    ("spec.workload.datset", {"type": "random"}, "spec.workload.datset", "unknown field"),  # typo
    ("spec.emulation.predictor", "magic", "spec.emulation.predictor", "constant:1ms"),
    ("spec.engine.args", {"--max-num-seqs": 8}, "spec.engine.args", "without leading dashes"),
    ("spec.engine.version", "0.9.0", "spec.engine.version", "supported: 0.33.0"),        # the adapter's versions
])
def test_invalid_specs_fail_with_a_message_naming_the_field(path, value, field, words):
    with pytest.raises(SpecError) as exc:
        spec_from_dict(_with(path, value), "bad.yaml")
    text = str(exc.value)
    assert any(p.startswith(field + ":") and words in p for p in exc.value.problems), text
    assert "invalid spec bad.yaml" in text


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


def test_crd_schema_is_structural_and_covers_the_spec():
    schema = crd_openapi_schema()
    text = json.dumps(schema)
    assert "$ref" not in text and "anyOf" not in text and "oneOf" not in text
    spec = schema["properties"]["spec"]
    assert spec["properties"]["tensorParallelSize"]["minimum"] == 1
    ds = spec["properties"]["workload"]["properties"]["dataset"]
    assert set(ds["properties"]["type"]["enum"]) == {"random", "shared-prefix", "sharegpt-like", "trace"}
    assert "systemPromptLen" in ds["properties"] and "inputLen" in ds["properties"]


def test_timewarp_and_host_contention_are_emulation_switches_on_by_default():
    em = load_spec(REPO / "examples" / "default.yaml").spec.emulation
    assert em.timewarp is True and em.hostContention == "compensate"
    assert spec_from_dict(_with("spec.emulation.timewarp", False)).spec.emulation.timewarp is False
    assert spec_from_dict(_with("spec.emulation.hostContention", "count")).spec.emulation.hostContention == "count"
    with pytest.raises(SpecError) as exc:
        spec_from_dict(_with("spec.emulation.hostContention", "ignore"))
    assert any(p.startswith("spec.emulation.hostContention:") for p in exc.value.problems)
    with pytest.raises(SpecError) as exc:
        spec_from_dict(_with("spec.emulation.timewarp", "sometimes"))
    assert any(p.startswith("spec.emulation.timewarp:") for p in exc.value.problems)
    crd = crd_openapi_schema()["properties"]["spec"]["properties"]["emulation"]["properties"]
    assert crd["timewarp"]["type"] == "boolean"
