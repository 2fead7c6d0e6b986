"""Loading and validating run specs, and the CRD schema derived from the same models."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from revati.spec.schema import EmulatedDeployment


class SpecError(ValueError):
    """A spec that cannot run. Each line names the field (dotted path) and what is allowed."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"invalid spec {source}:\n" + "\n".join(f"  - {p}" for p in problems))


def _field(loc: tuple) -> str:
    parts = []
    for x in loc:
        if isinstance(x, int):
            parts.append(f"[{x}]")
        elif x in ("random", "shared-prefix", "sharegpt-like", "trace", "function-after", "union"):
            continue  # pydantic's discriminator/validator tags, not field names
        else:
            parts.append(("." if parts else "") + str(x))
    return "".join(parts) or "(top level)"


def spec_from_dict(data: Any, source: str = "<dict>") -> EmulatedDeployment:
    """Validates a parsed spec. Raises SpecError listing every problem."""
    if not isinstance(data, dict):
        raise SpecError(source, [f"(top level): must be a mapping with apiVersion, kind, metadata and spec, "
                                 f"got {type(data).__name__}"])
    try:
        return EmulatedDeployment.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling; see the spec reference)"
            elif err["type"] == "missing":
                msg = "required field is missing"
            elif err["type"] == "literal_error":
                msg = f"{msg}"
            problems.append(f"{_field(err['loc'])}: {msg}")
        raise SpecError(source, problems) from None


def load_spec(path: str | Path) -> EmulatedDeployment:
    """Reads a YAML (or JSON) spec file and validates it."""
    p = Path(path)
    if not p.exists():
        raise SpecError(str(p), ["file does not exist"])
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SpecError(str(p), [f"not valid YAML: {e}"]) from None
    return spec_from_dict(data, str(p))


#: Names of CRs the operator turns into Services (`<name>-coordinator`, `<name>-replica-<i>`):
#: a DNS-1035 label (starts with a letter) short enough for the longest suffix ("-coordinator").
K8S_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
K8S_NAME_MAX = 63 - len("-coordinator")
#: The predictor values Emulation._predictor accepts, as a CRD pattern (tests check they agree).
PREDICTOR_PATTERN = r"^(sidecar|roofline|constant:[0-9]+(\.[0-9]+)?(ns|us|ms|s))$"

_DROPPED_KEYWORDS = ("title", "discriminator", "$defs")


def structural_schema(model: type[BaseModel]) -> dict:
    """A Kubernetes structural openAPIV3Schema for a pydantic model.

    - `$ref`s are inlined; `anyOf [X, null]` becomes X with `nullable: true`;
    - unions of objects (the dataset kinds) are flattened into one object whose `type` field
      is an enum of the kinds (defaults of the variants are dropped: the API server would
      otherwise write one variant's defaults into another);
    - unions of integer and string become `x-kubernetes-int-or-string`; other scalar unions
      (string or number or boolean) and untyped values become
      `x-kubernetes-preserve-unknown-fields` (pydantic checks them when the spec is used);
    - JSON-Schema-2020 numeric `exclusiveMinimum: n` becomes OpenAPI 3.0's
      `minimum: n, exclusiveMinimum: true`;
    - `additionalProperties: false` is dropped: structural schemas forbid it next to
      `properties`; unknown fields are rejected by the API server's strict field validation
      (kubectl's default, `--validate=strict`) and pruned otherwise.
    """
    raw = model.model_json_schema()
    return _structural(raw, raw.get("$defs", {}))


def _structural(node: dict, defs: dict) -> dict:
    """One schema node (and its children) in structural form; see structural_schema."""
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        target.update({k: v for k, v in node.items() if k != "$ref"})
        return _structural(target, defs)
    node = {k: v for k, v in node.items() if k not in _DROPPED_KEYWORDS}
    for key in ("anyOf", "oneOf"):
        if key in node:
            node = _union(node, node.pop(key), defs)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")
    elif node.get("additionalProperties") is True:  # dict[str, Any]: a map of any values
        node["additionalProperties"] = {}
    if "default" in node and node["default"] is None:
        node.pop("default")
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(exclusive)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            node[bound], node[exclusive] = value, True
    if "properties" in node:
        node["properties"] = {k: _structural(v, defs) for k, v in node["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _structural(node[key], defs)
    if "type" not in node and not node.get("x-kubernetes-int-or-string"):
        node["x-kubernetes-preserve-unknown-fields"] = True
    return node


def _union(node: dict, options: list[dict], defs: dict) -> dict:
    """Merges the options of an anyOf/oneOf into `node` (whose own keys win)."""
    options = [_structural(o, defs) for o in options]
    non_null = [o for o in options if o.get("type") != "null"]
    merged: dict
    if len(non_null) == 1:
        merged = non_null[0]
    elif all(o.get("type") == "object" for o in non_null):
        props: dict = {}
        for o in non_null:
            for name, prop in o.get("properties", {}).items():
                props[name] = {k: v for k, v in prop.items() if k != "default"}
        kinds = [o["properties"]["type"]["enum"][0] for o in non_null if "type" in o.get("properties", {})]
        props["type"] = {"type": "string", "enum": kinds,
                         "description": "The kind; it decides which of the other fields apply."}
        merged = {"type": "object", "properties": props, "required": ["type"]}
    elif {o.get("type") for o in non_null} <= {"integer", "string"}:
        merged = {"x-kubernetes-int-or-string": True}
    else:  # e.g. engine args (string, number or boolean), dilation ("auto" or a number)
        merged = {"x-kubernetes-preserve-unknown-fields": True}
    merged = {**merged, **node}
    if len(non_null) < len(options) and "enum" not in merged:
        # An enum would have to list null too; without nullable the API server prunes a null
        # (as if the field were absent), which is what None means here.
        merged["nullable"] = True
    return merged


def refine_spec_schema(spec: dict) -> dict:
    """CRD-only refinements of the DeploymentSpec schema (in place; returned for chaining).

    Constraints that pydantic checks in validators rather than in the JSON schema: `gpu` is
    an enum of the catalog's GPUs, `emulation.predictor` a pattern. `model` stays a free
    string: it may be a catalog name or a path to a config folder inside the runtime image.
    """
    from revati.catalog import load_catalog

    spec["properties"]["gpu"]["enum"] = list(load_catalog())
    spec["properties"]["emulation"]["properties"]["predictor"]["pattern"] = PREDICTOR_PATTERN
    spec["properties"]["model"]["minLength"] = 1
    return spec


def k8s_metadata_schema(max_length: int = K8S_NAME_MAX) -> dict:
    """metadata of a CR: Kubernetes allows restrictions on metadata.name only."""
    return {"type": "object", "properties": {"name": {
        "type": "string", "pattern": K8S_NAME_PATTERN, "maxLength": max_length,
        "description": f"A DNS-1035 label of at most {max_length} characters (the operator derives "
                       "Service names from it)."}}}


def crd_openapi_schema() -> dict:
    """The openAPIV3Schema of the EmulatedDeployment CRD (apiVersion, kind, metadata, spec).

    Derived from the pydantic models by structural_schema, plus refine_spec_schema and the
    Kubernetes form of metadata; the CRD generator (revati.spec.crds) adds the status.
    """
    schema = structural_schema(EmulatedDeployment)
    schema["properties"]["metadata"] = k8s_metadata_schema()
    refine_spec_schema(schema["properties"]["spec"])
    return schema
