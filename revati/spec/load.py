"""Loading and validating run specs, and the CRD schema derived from the same models."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

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


def crd_openapi_schema() -> dict:
    """The openAPIV3Schema of the EmulatedDeployment CRD's spec, from the pydantic models.

    Kubernetes wants structural schemas: no $ref, nullable instead of anyOf-null, and unions
    of objects flattened into one object whose `type` field is an enum.
    """
    raw = EmulatedDeployment.model_json_schema()
    defs = raw.get("$defs", {})

    def conv(node: Any) -> Any:
        if isinstance(node, list):
            return [conv(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            target.update(extra)
            return conv(target)
        node = {k: v for k, v in node.items() if k not in ("title", "discriminator", "$defs")}
        for key in ("anyOf", "oneOf"):
            if key in node:
                options = [conv(o) for o in node.pop(key)]
                non_null = [o for o in options if o.get("type") != "null"]
                nullable = len(non_null) < len(options)
                if len(non_null) == 1:
                    node.update(non_null[0])
                elif all(o.get("type") == "object" for o in non_null):
                    props: dict = {}
                    for o in non_null:
                        props.update(o.get("properties", {}))
                    kinds = [o["properties"]["type"]["enum"][0] for o in non_null if "type" in o.get("properties", {})]
                    props["type"] = {"type": "string", "enum": kinds}
                    node.update({"type": "object", "properties": props, "required": ["type"]})
                else:  # scalars of several types (engine args values)
                    node["x-kubernetes-int-or-string"] = True
                if nullable:
                    node["nullable"] = True
        if "const" in node:
            node["enum"] = [node.pop("const")]
        if node.get("additionalProperties") is False:
            node.pop("additionalProperties")  # structural schemas prune unknown fields instead
        return {k: conv(v) for k, v in node.items()}

    return conv(raw)
