"""The EmulationSweep: a base DeploymentSpec, a grid of spec paths and an SLO.

`expand(sweep)` lists the child EmulatedDeployments (`<sweep>-<index>`) and `rank(spec,
children)` turns the children's results into the sweep's status: per child the GPU count,
the cost per hour (GPU count x the price of its GPU) and whether it met the SLO; the cheapest
child that met it; the Pareto front of output throughput against TTFT p99; a ranking. Both are
pure functions: the operator calls them, and so can anyone with a sweep YAML.

Expansion order: grid paths sorted by name (the order in which the API server returns a
map, whatever order the YAML had), each path's values in list order, the last path varying
fastest (itertools.product).
"""

from __future__ import annotations

import copy
import itertools
import math
import types
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from revati.catalog import load_catalog
from revati.spec.load import K8S_NAME_MAX, K8S_NAME_PATTERN, _field
from revati.spec.schema import API_VERSION, DeploymentSpec, Slo

SWEEP_KIND = "EmulationSweep"
#: Most children one sweep may expand to (so child names stay short and sweeps stay sane).
MAX_CHILDREN = 256
#: Most grid paths one sweep may vary.
MAX_GRID_PATHS = 16
#: `<sweep>-<index>` must itself be a valid EmulatedDeployment name.
SWEEP_NAME_MAX = K8S_NAME_MAX - len(f"-{MAX_CHILDREN - 1}")
#: Child phases after which a child is done (for better or worse).
FINISHED = ("Succeeded", "Failed")
#: Label on every child: the name of its sweep.
SWEEP_LABEL = "revati.dev/sweep"

GridValues = Annotated[list[Any], Field(min_length=1, max_length=MAX_CHILDREN)]


class SweepMetadata(BaseModel):
    """The sweep's metadata. Other Kubernetes metadata fields (uid, resourceVersion ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=K8S_NAME_PATTERN, max_length=SWEEP_NAME_MAX,
                      description=f"A DNS-1035 label of at most {SWEEP_NAME_MAX} characters; children "
                                  "are named <name>-<index>.")
    namespace: str | None = Field(default=None, description="Namespace of the sweep and its children.")


class SweepSpec(BaseModel):
    """What to sweep: every combination of the grid's values applied to the base spec."""

    model_config = ConfigDict(extra="forbid")

    base: DeploymentSpec = Field(description="The EmulatedDeployment spec every child starts from.")
    grid: Annotated[dict[str, GridValues], Field(min_length=1, max_length=MAX_GRID_PATHS)] = Field(
        description="Dotted spec paths (e.g. tensorParallelSize, gpu, engine.args.max-num-seqs, "
                    "workload.arrival.requestRate) to the values to try. Children are every "
                    f"combination, at most {MAX_CHILDREN}; paths are expanded in sorted order, "
                    "the last one varying fastest.")
    slo: Slo | None = Field(default=None, description="The SLO children must meet (default: base.slo). "
                                                      "It is also written into every child's spec.")
    prices: dict[str, Annotated[float, Field(gt=0)]] = Field(
        description="USD per GPU-hour for each catalog GPU the sweep uses (base.gpu or the grid's gpu values).")
    maxParallel: int = Field(default=2, ge=1, le=MAX_CHILDREN,
                             description="Most children running (created and not finished) at a time.")

    @field_validator("grid")
    @classmethod
    def _paths_exist(cls, grid: dict) -> dict:
        for path in grid:
            check_path(path)
        size = math.prod(len(v) for v in grid.values())
        if size > MAX_CHILDREN:
            raise ValueError(f"the grid expands to {size} children, more than {MAX_CHILDREN}")
        return grid

    @field_validator("prices")
    @classmethod
    def _known_gpus(cls, prices: dict) -> dict:
        catalog = load_catalog()
        for gpu in prices:
            if gpu not in catalog:
                raise ValueError(f"prices.{gpu}: unknown GPU; the catalog has: {', '.join(catalog)}")
        return prices

    @model_validator(mode="after")
    def _children_valid_and_priced(self) -> "SweepSpec":
        for index, params in enumerate(grid_params(self.grid)):
            try:
                child = DeploymentSpec.model_validate(child_spec(self, params))
            except ValidationError as e:
                problems = "; ".join(f"{_field(err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
                                     for err in e.errors())
                raise ValueError(f"grid child {index} ({_describe(params)}) is not a valid spec: {problems}") from None
            if child.gpu not in self.prices:
                raise ValueError(f"prices: no price for GPU {child.gpu!r}, used by grid child {index} "
                                 f"({_describe(params)})")
        return self

    def effective_slo(self) -> Slo | None:
        """The SLO the children are judged by: the sweep's, else the base spec's."""
        return self.slo if self.slo is not None else self.base.slo


class EmulationSweep(BaseModel):
    """An EmulationSweep custom resource (revati.dev/v1alpha1)."""

    model_config = ConfigDict(extra="ignore")  # status, when a whole Kubernetes object is validated

    apiVersion: Literal["revati.dev/v1alpha1"] = Field(description="Always revati.dev/v1alpha1.")
    kind: Literal["EmulationSweep"] = Field(description="Always EmulationSweep.")
    metadata: SweepMetadata
    spec: SweepSpec


@dataclass(frozen=True)
class Child:
    """One child EmulatedDeployment of a sweep."""

    name: str
    index: int
    params: dict[str, Any]
    spec: dict[str, Any]  # a DeploymentSpec, as a plain dict
    body: dict[str, Any] = field(repr=False)  # the whole EmulatedDeployment (no owner references)


# -- paths --------------------------------------------------------------------------------


def _models_of(annotation: Any) -> list[type[BaseModel]] | str | None:
    """The models a field holds (several for a union), "map" for a dict field, None for scalars."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _models_of(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        found = [_models_of(a) for a in get_args(annotation) if a is not type(None)]
        models = [m for f in found if isinstance(f, list) for m in f]
        return models or ("map" if "map" in found else None)
    if origin is dict:
        return "map"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return None


def check_path(path: str) -> None:
    """Raises ValueError naming the path unless it is a field path of DeploymentSpec.

    A map field (engine.args) takes exactly one more segment: the key.
    """
    parts = path.split(".")
    node: list[type[BaseModel]] | str | None = [DeploymentSpec]
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "spec"
        if node == "map":
            if depth != len(parts) - 1 or not part:
                raise ValueError(f"grid path {path!r}: {where} is a map; give exactly one key after it")
            return
        if node is None:
            raise ValueError(f"grid path {path!r}: {where} is a value, it has no field {part!r}")
        fields = {name: f for model in node for name, f in model.model_fields.items()}
        if part not in fields:
            raise ValueError(f"grid path {path!r}: {where} has no field {part!r} "
                             f"(it has: {', '.join(fields)})")
        node = _models_of(fields[part].annotation)
    if node == "map":
        raise ValueError(f"grid path {path!r}: a map; give a key (e.g. {path}.<key>)")


def set_path(tree: dict, path: str, value: Any) -> None:
    """Sets tree[a][b][c] = value for path "a.b.c", creating (or replacing non-map) parents."""
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = copy.deepcopy(value)


# -- expansion ----------------------------------------------------------------------------


def grid_params(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of the grid: paths in sorted order, the last one varying fastest."""
    paths = sorted(grid)
    return [dict(zip(paths, combo)) for combo in itertools.product(*(grid[p] for p in paths))]


def child_spec(sweep_spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The DeploymentSpec dict of one child: the base, the sweep's SLO, then the params."""
    spec = sweep_spec.base.model_dump(mode="json", exclude_unset=True)
    if sweep_spec.slo is not None:
        spec["slo"] = sweep_spec.slo.model_dump(mode="json", exclude_none=True)
    for path, value in params.items():
        set_path(spec, path, value)
    return spec


def _as_sweep(sweep: EmulationSweep | dict) -> EmulationSweep:
    return sweep if isinstance(sweep, EmulationSweep) else EmulationSweep.model_validate(dict(sweep))


def expand(sweep: EmulationSweep | dict) -> list[Child]:
    """The sweep's children, index 0.. in expansion order (see the module docstring)."""
    sweep = _as_sweep(sweep)
    children = []
    for index, params in enumerate(grid_params(sweep.spec.grid)):
        name = f"{sweep.metadata.name}-{index}"
        spec = child_spec(sweep.spec, params)
        metadata: dict[str, Any] = {"name": name, "labels": {SWEEP_LABEL: sweep.metadata.name}}
        if sweep.metadata.namespace:
            metadata["namespace"] = sweep.metadata.namespace
        body = {"apiVersion": API_VERSION, "kind": "EmulatedDeployment", "metadata": metadata,
                "spec": copy.deepcopy(spec)}
        children.append(Child(name=name, index=index, params=params, spec=spec, body=body))
    return children


def size(sweep_spec: SweepSpec) -> int:
    """How many children the sweep has."""
    return math.prod(len(v) for v in sweep_spec.grid.values())


# -- ranking ------------------------------------------------------------------------------


def gpus(spec: DeploymentSpec | dict) -> int:
    """GPUs a deployment uses: tensorParallelSize x pipelineParallelSize x replicas."""
    if isinstance(spec, DeploymentSpec):
        return spec.tensorParallelSize * spec.pipelineParallelSize * spec.replicas
    return math.prod(int(spec.get(k) or 1) for k in ("tensorParallelSize", "pipelineParallelSize", "replicas"))


def _gpu_of(spec: dict) -> str:
    return spec.get("gpu") or DeploymentSpec.model_fields["gpu"].default


def _latency(metrics: dict | None, metric: str, p: str) -> float | None:
    """metrics[metric][p] (e.g. ttftMs.p99), None when absent."""
    value = ((metrics or {}).get(metric) or {}).get(p)
    return None if value is None else float(value)


def meets_slo(slo: Slo | None, phase: str | None, metrics: dict | None) -> bool:
    """Whether a child met the SLO: it Succeeded, completed requests, and every target
    (p50/p90/p99 of ttftMs/tpotMs/e2elMs) is met by the measured percentile (a missing
    measurement misses its target), as in the report's slo_attainment."""
    if phase != "Succeeded" or not metrics or not metrics.get("completed"):
        return False
    if slo is None:
        return True
    for metric in ("ttftMs", "tpotMs", "e2elMs"):
        targets = getattr(slo, metric)
        for p in ("p50", "p90", "p99"):
            target = getattr(targets, p) if targets is not None else None
            if target is None:
                continue
            actual = _latency(metrics, metric, p)
            if actual is None or actual > target:
                return False
    return True


def _describe(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _child_row(sweep_spec: SweepSpec, child: dict) -> dict:
    """One status.children entry: the child's result plus gpus, costPerHour and meetsSlo."""
    spec = child_spec(sweep_spec, child.get("params") or {})
    n = gpus(spec)
    price = sweep_spec.prices.get(_gpu_of(spec))
    row = {
        "name": child["name"],
        "params": copy.deepcopy(child.get("params") or {}),
        "phase": child.get("phase"),
        "gpus": n,
        "costPerHour": None if price is None else round(n * price, 6),
        "meetsSlo": meets_slo(sweep_spec.effective_slo(), child.get("phase"), child.get("metrics")),
        "metrics": copy.deepcopy(child.get("metrics")),
    }
    return {k: v for k, v in row.items() if v is not None}  # absent, not null (e.g. no phase yet)


def pareto_front(rows: list[dict]) -> list[str]:
    """Names of the Succeeded rows no other row dominates (outputThroughput at least as high
    and ttftMs.p99 at least as low, one of them strictly), by ttftMs.p99 then name.
    Rows without both numbers are left out."""
    points = []
    for r in rows:
        thr = (r.get("metrics") or {}).get("outputThroughput")
        ttft = _latency(r.get("metrics"), "ttftMs", "p99")
        if r.get("phase") == "Succeeded" and thr is not None and ttft is not None:
            points.append((r["name"], float(thr), ttft))

    def dominated(p) -> bool:
        return any(q[1] >= p[1] and q[2] <= p[2] and (q[1] > p[1] or q[2] < p[2]) for q in points)

    return [p[0] for p in sorted((p for p in points if not dominated(p)), key=lambda p: (p[2], p[0]))]


def _order(row: dict, position: int) -> tuple:
    """Sort key: cost, then p99 TPOT (missing last), then expansion position."""
    cost = row.get("costPerHour", math.inf)
    tpot = _latency(row.get("metrics"), "tpotMs", "p99")
    return (cost, math.inf if tpot is None else tpot, position)


def rank(sweep_spec: SweepSpec | dict, children: list[dict]) -> dict:
    """The sweep's status fields from its children's results.

    children: [{name, params, phase, metrics}] (metrics as in EmulatedDeployment status).
    Returns {children, cheapest, pareto, ranking, progress}:
    - children: each with gpus, costPerHour (gpus x prices[gpu]) and meetsSlo (keys whose
      value would be None, e.g. the phase of a child not created yet, are left out);
    - cheapest: {name, params, gpus, costPerHour} of the lowest-cost child that meets the SLO
      (ties: lower p99 TPOT, then the earlier child), None if none does;
    - pareto: see pareto_front;
    - ranking: the Succeeded children, those meeting the SLO first, each group by cost, then
      p99 TPOT, then expansion order (unfinished and failed children are not ranked);
    - progress: "<finished>/<total children of the grid>".
    """
    if not isinstance(sweep_spec, SweepSpec):
        sweep_spec = SweepSpec.model_validate(dict(sweep_spec))
    rows = [_child_row(sweep_spec, c) for c in children]
    done = [(i, r) for i, r in enumerate(rows) if r.get("phase") == "Succeeded"]
    ranked = sorted(done, key=lambda ir: (not ir[1]["meetsSlo"], _order(ir[1], ir[0])))
    meeting = [r for _, r in ranked if r["meetsSlo"]]
    cheapest = None
    if meeting:
        best = meeting[0]
        cheapest = {k: copy.deepcopy(best[k]) for k in ("name", "params", "gpus", "costPerHour")}
    finished = sum(1 for r in rows if r.get("phase") in FINISHED)
    return {
        "children": rows,
        "cheapest": cheapest,
        "pareto": pareto_front(rows),
        "ranking": [r["name"] for _, r in ranked],
        "progress": f"{finished}/{size(sweep_spec)}",
    }
