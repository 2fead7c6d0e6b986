"""Every environment variable the emulator reads or sets, in one place.

The shim (C) reads the REVATI_* variables once, at load; Python reads them through this
module. One prefix, one comment per variable.
"""

from __future__ import annotations

import os

ENV_VARS: dict[str, str] = {
    "REVATI_ACTIVE": "1 inside an emulated process tree; turns on the vLLM semantic layer.",
    "REVATI_GPU": "catalog key of the virtual GPU (default h100-sxm); `revati gpus` lists them.",
    "REVATI_NUM_GPUS": "GPUs on the virtual node (default: the part's max_gpus_per_node, 8).",
    "REVATI_NODE_NAME": "node name mixed into device UUIDs, so two virtual nodes differ.",
    "REVATI_PREDICTOR": "duration source: sidecar (default: the trained models, through REVATI_SIDECAR; the "
                        "roofline when no sidecar answers), roofline, or constant:<n>{ns,us,ms,s}.",
    "REVATI_SIDECAR": "endpoint of the prediction sidecar the shim asks on a cache miss (ipc://... or tcp://...).",
    "REVATI_SIDECAR_PREFETCH": "1 (default): the shim asks the sidecar for each step's attention when the step is "
                               "announced, and for the next decode step's, without waiting; 0: only on a miss.",
    "REVATI_ZMQ_LIB": "path of the libzmq (pyzmq's) the shim opens with dlopen to reach REVATI_SIDECAR.",
    "REVATI_TRACE": "write a Chrome/Perfetto trace of the virtual GPU timelines to this path.",
    "REVATI_STATS_FILE": "each process writes <path>.<pid>.json with op counts and busy time at exit.",
    "REVATI_LOG_LEVEL": "shim log level: 0 error, 1 warn (default), 2 info, 3 debug.",
    "REVATI_LOG_FILE": "append shim logs to this file instead of stderr.",
    "REVATI_BACKED_MAX": "device allocations up to this many bytes are host-backed (default 64 MiB).",
    "REVATI_SEED": "seed for values the semantic layer supplies (sampled tokens).",
    "REVATI_STEP_LOG": "the semantic layer writes one JSON line per model step to this path.",
    "REVATI_STEP_RING": "steps the semantic layer keeps in its in-memory ring before writing (default 4096).",
    "REVATI_FREEZE_JIT": "1 (default): the clock stands still while vLLM JIT-compiles or loads a Triton kernel; "
                         "0: JIT time counts (to measure a cold server's first requests).",
    "REVATI_SPEC_ACCEPTANCE": "speculative decoding: probability that each draft token is accepted (default 0.7).",
    "REVATI_SHIM_DIR": "folder holding librevati_shim.so (default: the repo's shim/build/lib).",
    "REVATI_TIMEWARP": "1: clocks, sleeps and timed waits follow the Timekeeper's virtual clock (default 0: real).",
    "REVATI_TIMEWARP_LAZY": "thread-name prefixes whose poll timeouts are idle ticks the time warp may coalesce (default gloo_tcp_loop).",
    "REVATI_CLOCK": "path of the Timekeeper's shared-memory clock page (set with REVATI_TIMEWARP).",
    "REVATI_ENGINES_DIR": "one environment per engine version (spec.engine.version), installed on first use "
                          "(default ~/.cache/revati/engines; `revati engines list`).",
    "REVATI_ENGINE_SOURCE": "the revati source folder installed into each engine environment (default: this checkout).",
    "REVATI_DILATION_AUTO": "what `emulation.dilation: auto` resolves to, as JSON {\"dilation\": d, \"how\": text}: a "
                            "local sweep sets it for its children from one calibration at its start (default: "
                            "each run calibrates).",
    "REVATI_ENGINE_SMOKE": "tests: engine versions (comma-separated) whose end-to-end smoke runs (tests/e2e/test_engine_versions.py).",
    "REVATI_CACHE_DIR": "cache for tokenizers and the offline model hub (default ~/.cache/revati).",
    "REVATI_PROFILES_DIR": "predictor: profiles root (default: profiles/ of the checkout).",
    "REVATI_PROFILE_DATA": "predictor: the public raw profiles (default: shared/data/profiles beside the checkout).",
    "REVATI_MODEL_CACHE": "predictor: cache of fitted models keyed by data and config hash "
                          "(default ~/.cache/revati/models).",
    "REVATI_SECRET_FILE": "file holding the deployment's secret that `revati coordinator` and its relays "
                          "prove they know (default of --secret-file; the operator mounts a Secret there).",
    "REVATI_OPERATOR_NETWORK_POLICY": "operator: 1 (default) gives each EmulatedDeployment a NetworkPolicy that "
                                      "lets only its own pods reach its coordinator and replica pods; 0: none.",
    "REVATI_OPERATOR_RUNTIME_IMAGE": "operator: image of the engine, coordinator, router and loadgen containers "
                                     "(default ghcr.io/revati-dev/revati-runtime:0.1.0).",
    "REVATI_OPERATOR_SIDECAR_IMAGE": "operator: image of the per-pod predictor/relay sidecar "
                                     "(default ghcr.io/revati-dev/revati-sidecar:0.1.0).",
    "REVATI_OPERATOR_SHIM_IMAGE": "operator: image of the init container that copies the shim into the pod "
                                  "(default ghcr.io/revati-dev/revati-shim:0.1.0).",
    "REVATI_OPERATOR_RESYNC_SECONDS": "operator: period of the safety-net reconcile timer of unfinished "
                                      "EmulatedDeployments and EmulationSweeps (default 30; events drive the rest).",
}


def get(name: str, default: str | None = None) -> str | None:
    """Reads a registered variable; unregistered names are a programming error."""
    if name not in ENV_VARS:
        raise KeyError(f"{name} is not a registered revati environment variable")
    return os.environ.get(name, default)
