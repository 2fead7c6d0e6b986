"""Pydantic models of the run spec (apiVersion revati.dev/v1alpha1, kind EmulatedDeployment)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from revati.catalog import DEFAULT_GPU, load_catalog

API_VERSION = "revati.dev/v1alpha1"
KIND = "EmulatedDeployment"


class _Strict(BaseModel):
    """Unknown fields are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Metadata(_Strict):
    name: str = Field(description="Name of the deployment (a DNS-1123 label).")
    namespace: str | None = Field(default=None, description="Kubernetes namespace (ignored locally).")
    labels: dict[str, str] = Field(default_factory=dict, description="Free-form labels.")

    @field_validator("name")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", v):
            raise ValueError("must be a DNS-1123 label: lower-case letters, digits and '-', "
                             "starting and ending with a letter or digit, at most 63 characters")
        return v


class Engine(_Strict):
    name: Literal["vllm", "sglang"] = Field(default="vllm", description="The serving engine: vllm or sglang.")
    version: str | None = Field(
        default=None, validate_default=True,
        description="Engine version (default: the engine's default, vLLM 0.33.0, SGLang 0.5.23): vLLM 0.33.0, "
                    "0.32.0, 0.29.0, 0.15.1; SGLang 0.5.23; `revati engines list` lists them. A version other than "
                    "the one installed beside revati is installed on first use.")
    args: dict[str, Union[str, int, float, bool]] = Field(
        default_factory=dict,
        description="The engine's serve flags without the leading dashes, e.g. {max-num-seqs: 256, "
                    "enable-prefix-caching: true} (vLLM) or {max-running-requests: 256} (SGLang). true adds "
                    "a bare flag; false omits it.")

    @field_validator("version")
    @classmethod
    def _supported(cls, v: str | None, info: ValidationInfo) -> str:
        from revati import engines  # the versions are the adapter's (revati/engines/)

        name = info.data.get("name", "vllm")
        versions = engines.supported()[name]
        if v is None:
            return versions[0]
        if v not in versions:
            label = {"vllm": "vLLM", "sglang": "SGLang"}[name]
            raise ValueError(f"{label} {v} is not supported by this release (supported: {', '.join(versions)})")
        return v

    @field_validator("args")
    @classmethod
    def _flags(cls, v: dict) -> dict:
        reserved = {"model", "port", "host", "load-format", "tensor-parallel-size", "pipeline-parallel-size",
                    "model-path", "tp-size", "pp-size"}  # the last three: SGLang's names
        for k in v:
            if k.startswith("-"):
                raise ValueError(f"flag {k!r}: write flags without leading dashes (e.g. 'max-num-seqs')")
            if k in reserved:
                raise ValueError(f"flag {k!r} is set by the emulator from the spec; use the spec field instead")
        return v

    def cli_args(self) -> list[str]:
        out: list[str] = []
        for k, v in self.args.items():
            if v is True:
                out.append(f"--{k}")
            elif v is False:
                continue
            else:
                out += [f"--{k}", str(v)]
        return out


class RandomDataset(_Strict):
    type: Literal["random"]
    inputLen: int = Field(gt=0, description="Prompt tokens.")
    outputLen: int = Field(gt=0, description="Output tokens (max_tokens).")
    rangeRatio: float = Field(default=0.0, ge=0.0, lt=1.0,
                              description="Lengths are drawn uniformly in [len·(1-r), len·(1+r)].")


class SharedPrefixDataset(_Strict):
    type: Literal["shared-prefix"]
    numGroups: int = Field(gt=0, description="Number of distinct system prompts.")
    promptsPerGroup: int = Field(gt=0, description="Questions per system prompt.")
    systemPromptLen: int = Field(gt=0, description="Tokens of each shared system prompt.")
    questionLen: int = Field(gt=0, description="Tokens of each question.")
    outputLen: int = Field(gt=0, description="Output tokens.")


class ShareGptLikeDataset(_Strict):
    type: Literal["sharegpt-like"]
    maxInputLen: int = Field(default=4096, gt=0, description="Cap on prompt tokens.")
    maxOutputLen: int = Field(default=2048, gt=0, description="Cap on output tokens.")


class TraceDataset(_Strict):
    type: Literal["trace"]
    path: str = Field(description="JSONL with one request per line: arrival_s, input_tokens, output_tokens.")


Dataset = Annotated[Union[RandomDataset, SharedPrefixDataset, ShareGptLikeDataset, TraceDataset],
                    Field(discriminator="type")]


def shared_prefix_dataset(**kw) -> SharedPrefixDataset:
    return SharedPrefixDataset(type="shared-prefix", **kw)


class Stage(_Strict):
    rate: float = Field(gt=0, description="Requests per second during this stage.")
    durationSeconds: float = Field(gt=0, description="Length of the stage in (virtual) seconds.")


class Arrival(_Strict):
    process: Literal["poisson", "constant"] = Field(default="poisson", description="Inter-arrival distribution.")
    requestRate: float | None = Field(default=None, gt=0, description="Requests per second; omit for 'as fast as possible'.")
    stages: list[Stage] = Field(default_factory=list, description="Piecewise-constant rates, in order.")
    maxConcurrency: int | None = Field(default=None, gt=0, description="Cap on requests in flight.")

    @model_validator(mode="after")
    def _one_rate(self) -> "Arrival":
        if self.stages and self.requestRate is not None:
            raise ValueError("give either requestRate or stages, not both")
        return self


class Workload(_Strict):
    dataset: Dataset
    arrival: Arrival = Field(default_factory=Arrival)
    numPrompts: int | None = Field(default=None, gt=0, description="Requests to send.")
    durationSeconds: float | None = Field(default=None, gt=0, description="Or: send for this long (virtual seconds).")
    ignoreEos: bool = Field(default=True, description="Generate exactly the output length.")
    seed: int = Field(default=0, ge=0, description="Seeds every random choice of the run.")

    @model_validator(mode="after")
    def _amount(self) -> "Workload":
        if (self.numPrompts is None) == (self.durationSeconds is None) and not self.arrival.stages:
            raise ValueError("give exactly one of numPrompts or durationSeconds")
        return self


class Percentiles(_Strict):
    p50: float | None = Field(default=None, gt=0)
    p90: float | None = Field(default=None, gt=0)
    p99: float | None = Field(default=None, gt=0)


class Slo(_Strict):
    ttftMs: Percentiles | None = Field(default=None, description="Time-to-first-token targets (ms).")
    tpotMs: Percentiles | None = Field(default=None, description="Time-per-output-token targets (ms).")
    e2elMs: Percentiles | None = Field(default=None, description="End-to-end latency targets (ms).")


class Emulation(_Strict):
    predictor: str = Field(default="sidecar", description="sidecar (trained models), roofline, or constant:<n>{ns,us,ms,s}.")
    dilation: Union[Literal["auto"], float] = Field(default="auto", description="CPU time counts 1/dilation; auto calibrates.")
    trace: bool = Field(default=False, description="Write a Perfetto trace of the virtual GPU timelines.")
    timewarp: bool = Field(default=True,
                           description="Run every process on the causal virtual clock (the Timekeeper): "
                                       "predicted GPU time and idle waits cost no wall time, CPU work "
                                       "costs its CPU time / dilation. Off: latencies are this "
                                       "machine's wall clock (a debugging mode).")

    hostContention: Literal["compensate", "count"] = Field(
        default="compensate",
        description="compensate: CPU work costs its CPU time even when this host has fewer free cores than "
                    "the deployment has busy threads (the clock slows while tasks queue for a core); "
                    "count: queueing for a core counts as CPU time too.")

    @field_validator("predictor")
    @classmethod
    def _predictor(cls, v: str) -> str:
        if v in ("sidecar", "roofline") or re.fullmatch(r"constant:\d+(\.\d+)?(ns|us|ms|s)", v):
            return v
        raise ValueError("must be 'sidecar', 'roofline' or 'constant:<number><ns|us|ms|s>' (e.g. constant:1ms)")

    @field_validator("dilation")
    @classmethod
    def _dilation(cls, v):
        if v != "auto" and v <= 0:
            raise ValueError("must be 'auto' or a number > 0")
        return v


class DeploymentSpec(_Strict):
    model: str = Field(description="A catalog model name (see `revati models`) or a path to an HF-style config folder.")
    gpu: str = Field(default=DEFAULT_GPU, description="Catalog GPU (see `revati gpus`).")
    tensorParallelSize: int = Field(default=1, ge=1, description="GPUs per model replica (tensor parallel).")
    pipelineParallelSize: int = Field(default=1, ge=1, description="Pipeline stages per replica.")
    replicas: int = Field(default=1, ge=1, description="Independent serving replicas behind a round-robin router.")
    engine: Engine = Field(default_factory=Engine)
    workload: Workload
    slo: Slo | None = None
    emulation: Emulation = Field(default_factory=Emulation)

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, v: str) -> str:
        catalog = load_catalog()
        if v not in catalog:
            raise ValueError(f"unknown GPU {v!r}; the catalog has: {', '.join(catalog)}")
        return v

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        from revati import models

        if not v.strip():
            raise ValueError("must name a catalog model or a config folder")
        p = Path(v).expanduser()
        if p.exists():
            if not (p / "config.json").exists():
                raise ValueError(f"folder {v!r} has no config.json")
            return v
        try:
            models.model_config(v)  # validates the name; the error lists the known models
        except Exception as e:  # noqa: BLE001 - the catalog's message lists the known models
            raise ValueError(str(e.args[0]) if e.args else str(e)) from None
        return v

    @model_validator(mode="after")
    def _fits_a_node(self) -> "DeploymentSpec":
        node = load_catalog()[self.gpu].max_gpus_per_node
        per_replica = self.tensorParallelSize * self.pipelineParallelSize
        if self.tensorParallelSize > node:
            raise ValueError(f"tensorParallelSize {self.tensorParallelSize} is larger than a {self.gpu} node "
                             f"({node} GPUs): tensor parallelism does not span nodes")
        if per_replica > node:
            raise ValueError(f"tensorParallelSize x pipelineParallelSize = {per_replica} GPUs per replica does "
                             f"not fit a {self.gpu} node ({node} GPUs); multi-node replicas are not emulated yet")
        return self


class EmulatedDeployment(_Strict):
    apiVersion: Literal["revati.dev/v1alpha1"] = Field(description="Always revati.dev/v1alpha1.")
    kind: Literal["EmulatedDeployment"] = Field(description="Always EmulatedDeployment.")
    metadata: Metadata
    spec: DeploymentSpec
