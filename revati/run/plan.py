"""The deployment plan of a spec: how every replica is served (ServePlan) and how it is loaded
(revati.run.loadgen.LoadPlan). Both runners use it: local processes (revati.run.orchestrator,
`revati run`) and pods (revati.run.roles, `revati role ...`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from revati import engines, models
from revati.catalog import get_gpu
from revati.engines import EngineAdapter
from revati.run import loadgen
from revati.spec.schema import EmulatedDeployment


@dataclass
class ServePlan:
    """How every replica of a spec is served: shared by `revati run` and `revati role replica`."""

    model: str                 # what the server is given (catalog id or a local config folder)
    tokenizer: str             # what the load generator tokenizes with
    serve_args: list[str]      # every serve flag after the model, emulator's included
    emulator_args: list[str]   # the flags the emulator adds (reported)
    per_replica: int           # GPUs per replica (TP x PP)


def serve_plan(s, engine: EngineAdapter | None = None) -> ServePlan:
    """The model folder/tokenizer and serve flags of a DeploymentSpec's replicas."""
    engine = engine or engines.get()
    resolved = models.resolve(s.model)
    tokenizer = str(resolved.tokenizer or resolved.model)
    serve_args = [*(engine.tokenizer_args(str(resolved.tokenizer)) if resolved.tokenizer else []),
                  *engine.parallel_args(tensor_parallel_size=s.tensorParallelSize,
                                        pipeline_parallel_size=s.pipelineParallelSize),
                  *s.engine.cli_args()]
    emulator_args = engine.emulator_serve_args(tensor_parallel_size=s.tensorParallelSize, given=set(s.engine.args))
    serve_args += emulator_args
    return ServePlan(str(resolved.model), tokenizer, serve_args, emulator_args,
                     s.tensorParallelSize * s.pipelineParallelSize)


@dataclass
class DeploymentPlan:
    """One spec, planned: the engine, the serve plan, and the load plan once a target answers."""

    spec: EmulatedDeployment
    engine: EngineAdapter
    serve: ServePlan
    spec_dir: Path

    @classmethod
    def of(cls, spec: EmulatedDeployment, spec_dir: Path | None = None,
           engine: EngineAdapter | None = None) -> "DeploymentPlan":
        engine = engine or engines.get(spec.spec.engine.name, spec.spec.engine.version)
        return cls(spec, engine, serve_plan(spec.spec, engine), Path(spec_dir or Path.cwd()))

    def serve_command(self, *, host: str, port: int) -> list[str]:
        """The serve command line of a replica."""
        return self.engine.serve_command(self.serve.model, host=host, port=port, serve_args=self.serve.serve_args)

    def load(self, *, base_url: str, model: str, result_dir: Path) -> loadgen.LoadPlan:
        """The load plan against base_url, which serves `model`."""
        return loadgen.plan(self.spec.spec, base_url=base_url, model=model, tokenizer=self.serve.tokenizer,
                            result_dir=result_dir, spec_dir=self.spec_dir, backend=self.engine.bench_backend)

    def check_load(self, result_dir: Path) -> None:
        """Validates the workload before anything starts. Raises loadgen.WorkloadError."""
        self.load(base_url="http://-", model="-", result_dir=result_dir)

    def start_load(self, lp: loadgen.LoadPlan, out: Path) -> list[str]:
        """Writes the load's dataset and bench.cmd into out; returns the load generator's command."""
        lp.write_dataset(out / loadgen.TRACE_NAME)
        (out / "bench.cmd").write_text(f"{self.engine.load_generator} {' '.join(lp.args)}\n")
        return self.engine.bench_command(lp.args)

    def notes(self) -> list[str]:
        """The report notes that follow from the spec alone."""
        s = self.spec.spec
        em = s.emulation
        notes: list[str] = []
        if em.dilation == "auto" and not em.timewarp:
            notes.append("dilation has no effect without the time warp")
        if not em.timewarp:
            notes.append("time warp OFF: every latency and throughput below is measured on this machine's "
                         "wall clock; it includes the CPU time of the real vLLM stack running here and the "
                         "predicted GPU time is not substituted for it. Do not read them as GPU predictions.")
        if "--disable-custom-all-reduce" in self.serve.emulator_args:
            notes.append(f"TP > 1: {self.engine.name}'s custom all-reduce is off (--disable-custom-all-reduce, "
                         "added by the emulator: its IPC buffers and device flags are not emulated); all-reduces "
                         "go through NCCL and are timed by the collective predictor (its undisturbed NCCL times)")
        if s.replicas > 1:
            notes.append(f"{s.replicas} replicas behind revati's round-robin HTTP router (no health checks, "
                         "no load awareness); each replica has its own sidecar and virtual node")
        return notes

    def deployment_block(self, lp: loadgen.LoadPlan) -> dict:
        """The report's description of what was emulated (a part of its emulation block)."""
        s = self.spec.spec
        return {
            "gpu": s.gpu, "gpu_name": get_gpu(s.gpu).name, "num_gpus": self.serve.per_replica * s.replicas,
            "model": s.model,
            "topology": {"tensor_parallel_size": s.tensorParallelSize,
                         "pipeline_parallel_size": s.pipelineParallelSize,
                         "replicas": s.replicas, "router": s.replicas > 1},
            "engine_args": s.engine.cli_args(),
            "emulator_engine_args": self.serve.emulator_args,
            "load_generator": {"tool": self.engine.load_generator, "dataset": lp.dataset,
                               "num_prompts": lp.num_prompts,
                               "command": f"{self.engine.load_generator} {' '.join(lp.args)}"},
        }


def bench_env(gpu: str, timewarp, seed: int, base: dict[str, str] | None = None,
              engine: EngineAdapter | None = None) -> dict[str, str]:
    """The environment of the load generator under the emulator."""
    from revati.launch.env import emulator_env

    env = emulator_env(gpu, timewarp=timewarp, base=base, engine=engine)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONHASHSEED"] = str(seed)  # timed_trace seeds prompt tokens from hash(str)
    return env


def demo_spec(*, model: str = "meta-llama/Llama-3.1-8B", gpu: str = "h100-sxm", num_prompts: int = 20,
              input_len: int = 128, output_len: int = 32, request_rate: str = "inf",
              serve_args: list[str] | None = None, engine_version: str | None = None) -> EmulatedDeployment:
    """The built-in spec of `revati demo`: one replica, a random dataset, Poisson arrivals at
    request_rate ("inf": every request at once); engine_version: spec.engine.version (None: the default).

    serve_args: extra serve flags as on a command line (`--enforce-eager --max-model-len 2048`).
    Raises:
        SpecError: the spec does not validate (a flag the emulator sets, an unknown GPU ...).
    """
    from revati.spec import spec_from_dict

    arrival: dict = {"process": "poisson"}
    if request_rate != "inf":
        arrival["requestRate"] = float(request_rate)
    doc = {"apiVersion": "revati.dev/v1alpha1", "kind": "EmulatedDeployment", "metadata": {"name": "demo"},
           "spec": {"model": model, "gpu": gpu,
                    "engine": {"args": flags_to_args(serve_args or []),
                               **({"version": engine_version} if engine_version else {})},
                    "workload": {"dataset": {"type": "random", "inputLen": input_len, "outputLen": output_len},
                                 "arrival": arrival, "numPrompts": num_prompts}}}
    return spec_from_dict(doc, "revati demo")


def flags_to_args(tokens: list[str]) -> dict[str, str | bool]:
    """Command-line flags (`--a 1 --b --c=x`) as a spec's engine.args ({a: "1", b: true, c: "x"})."""
    out: dict[str, str | bool] = {}
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if not t.startswith("--") or len(t) == 2:
            raise ValueError(f"serve flag {t!r}: expected --name [value]")
        name, eq, value = t[2:].partition("=")
        if eq:
            out[name] = value
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            out[name] = tokens[i + 1]
            i += 1
        else:
            out[name] = True
        i += 1
    return out
