"""The one builder of an emulated process tree's environment.

`emulator_vars` is pure: it says which variables the emulator sets, from values it is given
(the shim's folder, the clock, the sidecar). Two renderings of its result:

- `EmulatorEnv.apply(base)`: a process's environment (`revati run`, `revati exec`, the pod
  roles, which complete the pod's environment with it);
- `EmulatorEnv.pod_env()`: a container's env list (the Kubernetes operator, with the pod's
  paths: the shim's mount, the clock page and the sidecar socket).

`emulator_env` is the local one: it finds the shim and libzmq on this machine, prepares the
offline model hub and puts the tree on a Timekeeper's clock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from revati import engines
from revati.catalog import DEFAULT_GPU, get_gpu
from revati.launch import shim_api
from revati.launch.paths import SHIM_NAME, shim_dir

if TYPE_CHECKING:
    from revati.engines import EngineAdapter
    from revati.launch.clock import JoinedClock
    from revati.timekeeper.timekeeper import Timekeeper

#: Path lists that the emulator puts first (once) in front of the environment's own.
PATH_LISTS = ("LD_PRELOAD", "LD_LIBRARY_PATH")


@dataclass
class EmulatorEnv:
    """The variables of an emulated process tree, in the order they are rendered.

    values: what the emulator sets. defaults: set only where the environment has none (the
    engine's switches, the default predictor), so a user's own value wins.
    """

    values: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)

    def apply(self, base: dict[str, str]) -> dict[str, str]:
        """base completed: path lists prepended once, values set, defaults filled in."""
        env = dict(base)
        for k, v in self.values.items():
            env[k] = _prepend(v, env.get(k, "")) if k in PATH_LISTS else v
        for k, v in self.defaults.items():
            env.setdefault(k, v)
        return env

    def pod_env(self, field_refs: dict[str, str] | None = None) -> list[dict]:
        """A container's env list; field_refs: names whose value comes from the downward API
        (name -> fieldPath), in place of a value."""
        refs = field_refs or {}
        out = []
        for k, v in {**self.values, **self.defaults}.items():
            out.append({"name": k, "valueFrom": {"fieldRef": {"fieldPath": refs[k]}}} if k in refs
                       else {"name": k, "value": v})
        return out


def _prepend(first: str, rest: str) -> str:
    """first, then the entries of rest that first does not name (a path list, ':'-separated)."""
    seen: list[str] = []
    for p in [*first.split(":"), *rest.split(":")]:
        if p and p not in seen:
            seen.append(p)
    return ":".join(seen)


def emulator_vars(gpu: str, *, shim: str | os.PathLike, engine: "EngineAdapter | None" = None,
                  num_gpus: int | None = None, predictor: str | None = None, sidecar: str | None = None,
                  zmq_lib: str | None = None, trace: str | None = None, stats: str | None = None,
                  timewarp: bool = False, clock: str | None = None, node_name: str | None = None) -> EmulatorEnv:
    """The emulator's variables for a tree on a virtual `gpu` (see revati/envs.py for each).

    Args:
        shim: the folder that holds the shim (and its libcuda.so.1 / libnvidia-ml.so.1 names).
        engine: the engine whose switches are set (default: vLLM's default version).
        sidecar: endpoint of the prediction sidecar; the default predictor is then the sidecar.
        zmq_lib: the libzmq the shim opens to reach the sidecar (None: left out).
        timewarp: REVATI_TIMEWARP=1, the tree follows the clock page at `clock`.
        clock: path of the Timekeeper's clock page.
        node_name: REVATI_NODE_NAME, mixed into the device UUIDs.
    """
    engine = engine or engines.get()
    d = str(shim)
    preload = f"{d}/{SHIM_NAME}"
    v: dict[str, str] = {"LD_PRELOAD": preload, "LD_LIBRARY_PATH": d, "TRITON_LIBCUDA_PATH": d,
                         "REVATI_SHIM_DIR": d, "REVATI_ACTIVE": "1", "REVATI_GPU": gpu}
    if num_gpus is not None:
        v["REVATI_NUM_GPUS"] = str(num_gpus)
    if predictor:
        v["REVATI_PREDICTOR"] = predictor
    if timewarp:
        v["REVATI_TIMEWARP"] = "1"
    if clock:
        v["REVATI_CLOCK"] = str(clock)
    if sidecar:
        v["REVATI_SIDECAR"] = sidecar
    if zmq_lib:
        v["REVATI_ZMQ_LIB"] = zmq_lib
    if node_name:
        v["REVATI_NODE_NAME"] = node_name
    if trace:
        v["REVATI_TRACE"] = trace
    if stats:
        v["REVATI_STATS_FILE"] = stats
    defaults = {"REVATI_PREDICTOR": "sidecar"} if sidecar and not predictor else {}
    defaults.update(engine.env_defaults(nccl_library=preload))
    return EmulatorEnv(v, defaults)


def emulator_env(
    gpu: str = DEFAULT_GPU,
    *,
    num_gpus: int | None = None,
    predictor: str | None = None,
    trace: str | os.PathLike | None = None,
    stats: str | os.PathLike | None = None,
    offline_hub: bool = True,
    sidecar: str | None = None,
    timewarp: "bool | Timekeeper | JoinedClock" = False,
    base: dict[str, str] | None = None,
    engine: "EngineAdapter | None" = None,
) -> dict[str, str]:
    """Returns the environment for a process tree that runs under the emulator on this machine.

    Args:
        gpu: catalog key of the virtual GPU.
        num_gpus: GPUs on the virtual node (default: the part's node size).
        predictor: duration source (roofline, constant:1ms, ...).
        trace: path of the merged Perfetto trace; processes write parts next to it.
        stats: prefix of per-process statistics files.
        offline_hub: serve the shipped model configs and tokenizers as an offline HF hub.
        sidecar: endpoint of a running prediction sidecar (revati.launch.sidecar); when given
            and no other predictor is named, every op is predicted by the trained models.
        timewarp: put the tree on a causal virtual clock (REVATI_TIMEWARP=1): True starts
            this process's Timekeeper (revati.launch.clock.shared_timekeeper) on first use; a
            Timekeeper (or a joined clock) is used as given. False (default) leaves every clock real.
        base: environment to start from (default: os.environ).
        engine: the engine adapter whose switches are set (default: vLLM).
    """
    get_gpu(gpu)  # validates, with the list of choices in the error
    clock_vars: dict[str, str] = {}
    if timewarp:
        from revati.launch.clock import shared_timekeeper

        clock_vars = (shared_timekeeper() if timewarp is True else timewarp).env()
    if sidecar:
        from revati.launch.sidecar import zmq_library
    shim = shim_dir()
    shim_api.check_built(shim)
    ev = emulator_vars(
        gpu, shim=shim, engine=engine, num_gpus=num_gpus, predictor=predictor, sidecar=sidecar,
        zmq_lib=zmq_library() if sidecar else None,
        trace=str(Path(trace).resolve()) if trace else None, stats=str(Path(stats).resolve()) if stats else None,
        timewarp=clock_vars.get("REVATI_TIMEWARP") == "1", clock=clock_vars.get("REVATI_CLOCK"))
    env = ev.apply(dict(os.environ if base is None else base))
    if offline_hub:
        from revati import models

        env.update(models.prepare_offline_hub())
    return env
