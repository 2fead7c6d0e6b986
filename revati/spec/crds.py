"""The CustomResourceDefinitions of revati.dev/v1alpha1, generated from the pydantic models.

`emulated_deployment_crd()` and `emulation_sweep_crd()` return apiextensions.k8s.io/v1 CRDs
whose openAPIV3Schema comes from revati.spec.schema (the `revati run` spec), revati.spec.sweep
and the status models below, through revati.spec.load.structural_schema; nothing of the spec
is written twice. `revati crds --out charts/revati/crds` writes them (`write_crds`).

How strict the API server is with these schemas:
- types, minimum/maximum (exclusive too), enums (gpu: the catalog's GPUs), patterns (names,
  emulation.predictor), required fields, minItems/maxItems and minProperties/maxProperties
  are enforced by its OpenAPI validation;
- unknown fields (typos) are rejected by strict field validation, kubectl's default
  (`--validate=strict`); with `--validate=false` or a client that asks for no field
  validation they are pruned (dropped) instead, because a structural schema cannot say
  `additionalProperties: false` next to `properties`;
- values that may take several scalar types (engine.args values, emulation.dilation, grid
  values) are not type-checked by the API server; `model` is a free string (a catalog name
  or a config folder inside the runtime image); constraints between fields (one dataset
  kind's fields, TP x PP fitting a node) are not expressed either. The operator validates
  every spec with the pydantic models and reports what is wrong in the status.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from revati.catalog import load_catalog
from revati.spec.load import crd_openapi_schema, k8s_metadata_schema, refine_spec_schema, structural_schema
from revati.spec.schema import API_VERSION
from revati.spec.sweep import MAX_CHILDREN, SWEEP_NAME_MAX, EmulationSweep

GROUP, VERSION = API_VERSION.split("/")
Phase = Literal["Pending", "Starting", "Running", "Succeeded", "Failed"]


class _Status(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Condition(_Status):
    """A condition, as in Kubernetes' metav1.Condition."""

    type: str = Field(description="What the condition is about, e.g. Ready, Failed, Deadlock.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str | None = Field(default=None, description="A CamelCase reason for the last transition.")
    message: str | None = Field(default=None, description="What happened, in words (the emulator's message).")
    lastTransitionTime: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                           description="When the status last changed (RFC 3339).")


class Latency(_Status):
    """Percentiles of one latency, in milliseconds (as report.json's p50/p90/p99_*_ms)."""

    p50: float | None = Field(default=None, ge=0, description="Median (ms).")
    p90: float | None = Field(default=None, ge=0, description="90th percentile (ms).")
    p99: float | None = Field(default=None, ge=0, description="99th percentile (ms).")


class Metrics(_Status):
    """The summary of report.json (the full report is in the ConfigMap status.reportConfigMap)."""

    ttftMs: Latency | None = Field(default=None, description="Time to first token.")
    tpotMs: Latency | None = Field(default=None, description="Time per output token.")
    e2elMs: Latency | None = Field(default=None, description="End-to-end latency.")
    requestThroughput: float | None = Field(default=None, ge=0, description="Completed requests per virtual second.")
    outputThroughput: float | None = Field(default=None, ge=0, description="Output tokens per virtual second.")
    goodput: float | None = Field(default=None, ge=0, description="Requests per virtual second that met the SLO.")
    completed: int | None = Field(default=None, ge=0, description="Requests that completed.")
    failed: int | None = Field(default=None, ge=0, description="Requests that failed.")


class EmulatedDeploymentStatus(_Status):
    """Written by the operator only."""

    phase: Phase | None = Field(default=None, description="Pending, Starting, Running, Succeeded or Failed.")
    observedGeneration: int | None = Field(default=None, ge=0, description="The generation this status is about.")
    conditions: list[Condition] = Field(default_factory=list, max_length=32,
                                        description="Conditions with reasons (failing pods, emulated deadlocks ...).")
    virtualSeconds: float | None = Field(default=None, ge=0, description="Virtual time the emulation covered.")
    wallSeconds: float | None = Field(default=None, ge=0, description="Wall time it took.")
    speedup: float | None = Field(default=None, ge=0, description="virtualSeconds / wallSeconds.")
    gpus: int | None = Field(default=None, ge=0, description="Virtual GPUs: TP x PP x replicas.")
    metrics: Metrics | None = Field(default=None, description="The metric summary of the report.")
    reportConfigMap: str | None = Field(default=None, description="ConfigMap holding the full report.json.")


def _num(v: Any) -> float | int | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)) and math.isfinite(v):
        return v
    return None


def status_from_report(report: dict) -> dict:
    """status fields (metrics, virtualSeconds, wallSeconds, speedup) from report.json.

    The operator writes them into an EmulatedDeployment's status; `revati sweep` ranks local
    runs by the same metrics.
    """
    def pair(metric: str) -> dict:
        # NOTE: every percentile an SLO may target (Percentiles: p50, p90, p99), or sweep.meets_slo
        # reads a p90 target as unmeasured, hence missed.
        return {p: v for p in ("p50", "p90", "p99")
                if (v := _num(report.get(f"{p}_{metric}_ms"))) is not None}

    metrics: dict[str, Any] = {k: v for k, v in (("ttftMs", pair("ttft")), ("tpotMs", pair("tpot")),
                                                  ("e2elMs", pair("e2el"))) if v}
    for key, src in (("requestThroughput", "request_throughput"), ("outputThroughput", "output_throughput"),
                     ("goodput", "request_goodput"), ("completed", "completed"), ("failed", "failed")):
        v = _num(report.get(src))
        if v is not None:
            metrics[key] = v
    emu = report.get("emulation") or {}
    out: dict[str, Any] = {"metrics": metrics}
    for key, src in (("virtualSeconds", "virtual_s"), ("wallSeconds", "wall_s"), ("speedup", "speedup")):
        v = _num(emu.get(src))
        if v is not None:
            out[key] = v
    return out


class SweepChild(_Status):
    """One child EmulatedDeployment and its result."""

    name: str = Field(description="The child's name, <sweep>-<index>.")
    params: dict[str, Any] = Field(default_factory=dict, description="The grid values of this child: path -> value.")
    phase: Phase | None = Field(default=None, description="The child's phase (none before it exists).")
    gpus: int | None = Field(default=None, ge=0, description="TP x PP x replicas.")
    costPerHour: float | None = Field(default=None, ge=0, description="gpus x the price of its GPU (USD per hour).")
    meetsSlo: bool | None = Field(default=None, description="Succeeded and met every SLO target.")
    metrics: Metrics | None = Field(default=None, description="The child's status.metrics.")


class Cheapest(_Status):
    """The lowest-cost child that met the SLO."""

    name: str = Field(description="The child's name.")
    params: dict[str, Any] = Field(default_factory=dict, description="Its grid values.")
    gpus: int | None = Field(default=None, ge=0, description="Its GPU count.")
    costPerHour: float | None = Field(default=None, ge=0, description="Its cost, USD per hour.")


class EmulationSweepStatus(_Status):
    """Written by the operator only (revati.spec.sweep.rank computes the ranking fields)."""

    phase: Phase | None = Field(default=None, description="Pending, Starting, Running, Succeeded or Failed.")
    observedGeneration: int | None = Field(default=None, ge=0, description="The generation this status is about.")
    conditions: list[Condition] = Field(default_factory=list, max_length=32, description="Conditions with reasons.")
    progress: str | None = Field(default=None, description="<finished children>/<children>.")
    children: list[SweepChild] = Field(default_factory=list, max_length=MAX_CHILDREN,
                                       description="Every child created so far, in expansion order.")
    cheapest: Cheapest | None = Field(default=None, description="Lowest GPU count x price that meets the SLO; "
                                                                 "null if none does (yet).")
    pareto: list[str] = Field(default_factory=list, max_length=MAX_CHILDREN,
                              description="Children on the Pareto front of outputThroughput (max) "
                                          "against ttftMs.p99 (min).")
    ranking: list[str] = Field(default_factory=list, max_length=MAX_CHILDREN,
                               description="Succeeded children: SLO met first, then by cost, then p99 TPOT.")


def _column(name: str, type_: str, path: str, description: str, priority: int = 0) -> dict:
    col = {"name": name, "type": type_, "jsonPath": path, "description": description}
    if priority:
        col["priority"] = priority
    return col


_AGE = _column("Age", "date", ".metadata.creationTimestamp", "Time since creation.")


def _crd(kind: str, plural: str, short: str, schema: dict, columns: list[dict]) -> dict:
    """An apiextensions.k8s.io/v1 CRD of one namespaced v1alpha1 kind with a status subresource."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/name": "revati"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
                      "shortNames": [short], "categories": ["revati"]},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
            }],
        },
    }


def _with_status(schema: dict, status_model: type[BaseModel]) -> dict:
    schema = copy.deepcopy(schema)
    schema["properties"]["status"] = structural_schema(status_model)
    return schema


def emulated_deployment_crd() -> dict:
    """The EmulatedDeployment CRD: spec = the `revati run` spec, status = EmulatedDeploymentStatus."""
    schema = _with_status(crd_openapi_schema(), EmulatedDeploymentStatus)
    schema["description"] = ("An LLM serving deployment emulated without GPUs: the spec of `revati run` "
                             "(examples/default.yaml); the operator runs it over pods and writes the results.")
    columns = [
        _column("Phase", "string", ".status.phase", "Pending, Starting, Running, Succeeded or Failed."),
        _column("GPU", "string", ".spec.gpu", "Catalog GPU."),
        _column("TP", "integer", ".spec.tensorParallelSize", "Tensor parallel size."),
        _column("Virtual", "number", ".status.virtualSeconds", "Virtual seconds emulated."),
        _column("TTFT-p99", "number", ".status.metrics.ttftMs.p99", "p99 time to first token (ms)."),
        _column("TPOT-p99", "number", ".status.metrics.tpotMs.p99", "p99 time per output token (ms)."),
        _column("Replicas", "integer", ".spec.replicas", "Serving replicas.", priority=1),
        _column("Speedup", "number", ".status.speedup", "Virtual seconds per wall second.", priority=1),
        _AGE,
    ]
    return _crd("EmulatedDeployment", "emulateddeployments", "emd", schema, columns)


def _prices_schema(node: dict) -> dict:
    """prices as an object with one optional field per catalog GPU (so a typo is an unknown field)."""
    value = node["additionalProperties"]
    return {"type": "object", "description": node.get("description", ""), "minProperties": 1,
            "properties": {gpu: {**value, "description": f"USD per {gpu} GPU-hour."} for gpu in load_catalog()}}


def sweep_openapi_schema() -> dict:
    """The openAPIV3Schema of the EmulationSweep CRD, without status."""
    schema = structural_schema(EmulationSweep)
    schema["properties"]["metadata"] = k8s_metadata_schema(SWEEP_NAME_MAX)
    spec = schema["properties"]["spec"]
    refine_spec_schema(spec["properties"]["base"])
    spec["properties"]["prices"] = _prices_schema(spec["properties"]["prices"])
    return schema


def emulation_sweep_crd() -> dict:
    """The EmulationSweep CRD: a base spec, a grid and an SLO; status = EmulationSweepStatus."""
    schema = _with_status(sweep_openapi_schema(), EmulationSweepStatus)
    schema["description"] = ("A grid of EmulatedDeployments (children <name>-<index>) ranked by cost per "
                             "hour under an SLO, with the Pareto front of throughput against TTFT.")
    columns = [
        _column("Phase", "string", ".status.phase", "Pending, Running, Succeeded or Failed."),
        _column("Children", "string", ".status.progress", "Finished children / children."),
        _column("Cheapest", "string", ".status.cheapest.name", "Cheapest child that meets the SLO."),
        _column("Cost", "number", ".status.cheapest.costPerHour", "Its USD per hour.", priority=1),
        _AGE,
    ]
    return _crd("EmulationSweep", "emulationsweeps", "ems", schema, columns)


def all_crds() -> list[dict]:
    """Every CRD of revati.dev."""
    return [emulated_deployment_crd(), emulation_sweep_crd()]


HEADER = "# Generated by `revati crds --out charts/revati/crds` from revati/spec; do not edit by hand.\n"


def crd_yaml(crd: dict) -> str:
    """One CRD as a YAML document (stable: same models, same text)."""
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True)


def crd_filename(crd: dict) -> str:
    """controller-gen's naming: <group>_<plural>.yaml."""
    return f"{crd['spec']['group']}_{crd['spec']['names']['plural']}.yaml"


def write_crds(directory: str | Path) -> list[Path]:
    """Writes one YAML file per CRD into directory (created if needed); returns the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for crd in all_crds():
        path = out / crd_filename(crd)
        path.write_text(crd_yaml(crd))
        paths.append(path)
    return paths
