"""The manifests pick the runtime image of the spec's engine version (docs/engines.md)."""

from __future__ import annotations

from pathlib import Path

import yaml

from revati.operator import manifests as mf

REPO = Path(__file__).resolve().parents[2]
IMAGES = mf.Images(runtime="ghcr.io/revati-dev/revati-runtime:0.1.0", sidecar="s:1", shim="m:1")


def _cr(version: str | None) -> dict:
    cr = yaml.safe_load((REPO / "examples/default.yaml").read_text())
    cr["metadata"].update(namespace="ns", uid="u-1", name="llm")
    if version:
        cr["spec"]["engine"]["version"] = version
    else:
        cr["spec"]["engine"].pop("version")
    return cr


def _images(objs: dict) -> dict[str, str]:
    spec = objs.get("spec", {})
    pod = spec.get("template", {}).get("spec", spec)
    return {c["name"]: c["image"] for c in pod["containers"]}


def test_the_default_version_runs_the_runtime_image():
    for version in (None, "0.33.0"):
        cr = _cr(version)
        assert _images(mf.build_replica_pod(cr, 0, IMAGES))["engine"] == IMAGES.runtime
        assert _images(mf.build_loadgen_job(cr, IMAGES))["loadgen"] == IMAGES.runtime


def test_another_version_runs_its_own_image_for_the_engine_and_the_load_generator():
    cr = _cr("0.15.1")
    want = "ghcr.io/revati-dev/revati-runtime:0.1.0-vllm0.15.1"
    assert _images(mf.build_replica_pod(cr, 0, IMAGES))["engine"] == want
    assert _images(mf.build_loadgen_job(cr, IMAGES))["loadgen"] == want
    assert mf.Images("localhost:5000/rt", "s", "m").runtime_for(mf._model(cr)) == "localhost:5000/rt:latest-vllm0.15.1"


def test_sglang_runs_its_own_image_whose_build_installs_that_engine():
    cr = _cr(None)
    cr["spec"]["engine"] = {"name": "sglang", "args": {"max-running-requests": 256}}  # its default version
    want = "ghcr.io/revati-dev/revati-runtime:0.1.0-sglang0.5.23"
    assert _images(mf.build_replica_pod(cr, 0, IMAGES))["engine"] == want
    assert _images(mf.build_loadgen_job(cr, IMAGES))["loadgen"] == want
    # the image of that tag: the runtime Dockerfile built with ENGINE_NAME=sglang installs that engine
    dockerfile = (REPO / "images/runtime.Dockerfile").read_text()
    assert "--build-arg ENGINE_NAME=sglang --build-arg ENGINE_VERSION=0.5.23" in dockerfile
    assert 'revati engines install "$ENGINE_NAME" "$ENGINE_VERSION"' in dockerfile
