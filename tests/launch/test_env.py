"""The one environment builder (revati/launch/env.py): a process's environment and a pod's."""

from __future__ import annotations

import os

from revati.launch.env import emulator_env, emulator_vars
from revati.launch.paths import SHIM_NAME, shim_dir


def test_apply_prepends_the_shim_once_and_keeps_the_users_switches():
    ev = emulator_vars("h100-sxm", shim="/s", sidecar="ipc:///x.sock", zmq_lib="/z.so")
    env = ev.apply({"LD_PRELOAD": "/other.so", "LD_LIBRARY_PATH": "/s:/lib", "VLLM_USE_SPINLOOP_EXT": "1"})
    assert env["LD_PRELOAD"] == f"/s/{SHIM_NAME}:/other.so"
    assert env["LD_LIBRARY_PATH"] == "/s:/lib"  # already there: named once
    assert env["VLLM_USE_SPINLOOP_EXT"] == "1" and env["VLLM_NCCL_SO_PATH"] == f"/s/{SHIM_NAME}"
    assert env["REVATI_PREDICTOR"] == "sidecar" and env["REVATI_ZMQ_LIB"] == "/z.so"
    # applied twice (a pod's environment completed by its role): the same environment
    assert ev.apply(env) == env


def test_a_named_predictor_wins_over_the_sidecar_default():
    env = emulator_vars("h100-sxm", shim="/s", predictor="roofline", sidecar="ipc:///x").apply(
        {"REVATI_PREDICTOR": "sidecar"})
    assert env["REVATI_PREDICTOR"] == "roofline"


def test_pod_env_is_the_same_variables_as_a_list():
    ev = emulator_vars("l40s", shim="/opt/s", timewarp=True, clock="/run/c", sidecar="ipc:///run/s", node_name="x")
    pod = ev.pod_env({"REVATI_NODE_NAME": "metadata.name"})
    names = [e["name"] for e in pod]
    assert len(names) == len(set(names))
    assert {e["name"]: e.get("value") for e in pod if "value" in e} == {
        k: v for k, v in ev.apply({}).items() if k != "REVATI_NODE_NAME"}
    assert {"name": "REVATI_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in pod
    assert names.index("REVATI_TIMEWARP") < names.index("REVATI_CLOCK")


def test_local_env_is_the_builder_with_this_machines_paths(tmp_path):
    env = emulator_env("h100-sxm", stats=tmp_path / "stats", offline_hub=False, base={"PATH": os.environ["PATH"]})
    want = emulator_vars("h100-sxm", shim=shim_dir(), stats=str((tmp_path / "stats").resolve())).apply(
        {"PATH": os.environ["PATH"]})
    assert env == want
    assert "REVATI_TIMEWARP" not in env and "HF_HUB_OFFLINE" not in env
