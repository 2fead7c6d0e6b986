"""The contract of an engine adapter: everything that differs between serving engines (vLLM,
SGLang next) or between versions of one, so that the plan, the runners, the shim, the clock and
the report stay shared.

Adding an engine, or a version of one, touches one adapter module and its tests.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import ClassVar

#: The folder of this interpreter's console scripts (the engine's and the load generator's).
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Build:
    """What one engine version is built on, as installed into its environment.

    Attributes:
        torch: the torch version the release pins (installed as its CUDA build).
        cuda: torch.version.cuda of that build on the package index (its major must match).
        layer: the semantic layer's seam set for this version (revati/vllm_plugin/patches.py).
        notes: what the adapter does differently for it (docs/engines.md).
        lacks: serve flags (by name) that this version does not have; the adapter leaves them out.
        disk_gb: free disk an install needs under the engines folder: the environment (8.6-11 GB
            measured for vLLM 0.15.1/0.33.0 and SGLang 0.5.23, docs/engines.md) and some room.
    """

    torch: str
    cuda: str
    layer: str
    notes: str = ""
    lacks: frozenset[str] = frozenset()
    disk_gb: float = 12.0


class UnknownEngineError(KeyError):
    """An engine or a version that no adapter declares; the message lists the supported ones."""

    def __str__(self) -> str:  # KeyError quotes its message; say it plainly
        return str(self.args[0]) if self.args else ""


class EngineAdapter(ABC):
    """One serving engine at one version.

    Class attributes:
        name: the engine's key in `revati.engines.get` (and in a spec's engine, later).
        versions: the versions this adapter knows, the first one the default.
        builds: version -> Build (torch, CUDA, semantic layer) of each of them.
        distribution: the Python distribution to install (`pip install <distribution>==<version>`).
        health_path: answers 200 once the server serves (the liveness and start-up probe).
        models_path: lists the served model names (the readiness probe that names the model).
        load_generator: what drives the server (its name in the report).
        plugin_entry_point: (entry-point group, "module:function") of the semantic hooks that the
            engine loads in every one of its processes: batch composition, values read back.
    """

    name: ClassVar[str]
    versions: ClassVar[tuple[str, ...]]
    builds: ClassVar[dict[str, Build]]
    distribution: ClassVar[str]
    health_path: ClassVar[str] = "/health"
    models_path: ClassVar[str] = "/v1/models"
    load_generator: ClassVar[str]
    plugin_entry_point: ClassVar[tuple[str, str]]

    def __init__(self, version: str | None = None):
        self.version = version or self.versions[0]

    # ---- install

    def requirement(self) -> str:
        """The pip requirement of this version."""
        return f"{self.distribution}=={self.version}"

    def build(self) -> Build:
        return self.builds[self.version]

    def requirements(self) -> list[str]:
        """What pip installs into the version's own environment (revati/engines/environments.py)."""
        return [self.requirement(), f"torch=={self.build().torch}"]

    def installed_version(self) -> str | None:
        """The version installed in this interpreter, None when it is not installed."""
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return None

    def in_this_interpreter(self) -> bool:
        """This version is the one installed beside revati (then no environment of its own)."""
        return self.installed_version() == self.version

    @property
    def bin_dir(self) -> Path:
        """The folder of the engine's console scripts (its server and load generator).

        Raises:
            EngineNotInstalledError: the version's environment is not installed (prepare() installs it).
        """
        if self.in_this_interpreter():
            return VENV_BIN
        from revati.engines import environments

        env = environments.env_of(self)
        if not env.installed():
            raise environments.EngineNotInstalledError(
                f"{self.name} {self.version} is not installed in {env.path} ({env.state()}): "
                f"`revati engines install {self.name} {self.version}` installs it (revati run does on first use)")
        return env.bin

    def prepare(self, out=None) -> Path:
        """Installs the version's environment if it is missing; returns bin_dir.

        Raises:
            EngineInstallError: the install failed (the message says why).
        """
        if not self.in_this_interpreter():
            from revati.engines import environments

            environments.ensure(self, out=out)
        return self.bin_dir

    # ---- serve

    @abstractmethod
    def serve_command(self, model: str, *, host: str, port: int, serve_args: list[str]) -> list[str]:
        """The command line of one emulated server: model, address, then serve_args."""

    @abstractmethod
    def emulator_serve_args(self, *, tensor_parallel_size: int, given: set[str]) -> list[str]:
        """The flags the emulator adds to the user's (given: the flag names the user set)."""

    @abstractmethod
    def parallel_args(self, *, tensor_parallel_size: int, pipeline_parallel_size: int) -> list[str]:
        """The flags of a replica's parallelism."""

    @abstractmethod
    def tokenizer_args(self, tokenizer: str) -> list[str]:
        """The flags that name a tokenizer folder apart from the model's."""

    @abstractmethod
    def env_defaults(self, *, nccl_library: str) -> dict[str, str]:
        """The engine's variables under the emulator, each overridable by the caller's environment.

        Args:
            nccl_library: the shim's library, which stands in for NCCL.
        """

    def served_model(self, url: str, timeout_s: float = 30.0) -> str:
        """The first model name the server lists at models_path."""
        with urllib.request.urlopen(url.rstrip("/") + self.models_path, timeout=timeout_s) as r:
            return json.loads(r.read())["data"][0]["id"]

    # ---- load generator

    @abstractmethod
    def bench_command(self, args: list[str]) -> list[str]:
        """The load generator's command line with the planned arguments (revati.run.loadgen)."""

    bench_backend: ClassVar[str]  # the load generator's --backend for this engine

    # ---- logs

    #: The names the engine gives its processes (log prefixes and process titles).
    process_name: ClassVar[re.Pattern[str]]
    #: A log line's process prefix, with groups "name" and "pid".
    log_prefix: ClassVar[re.Pattern[str]]

    @abstractmethod
    def process_kind(self, name: str) -> str | None:
        """"api", "engine" or "worker" for one of the engine's process names, else None."""

    def log_process(self, line: str) -> tuple[str, int] | None:
        """(process name, pid) of a log line that names its process, else None."""
        m = self.log_prefix.search(line)
        return (m.group("name"), int(m.group("pid"))) if m else None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.version}>"
