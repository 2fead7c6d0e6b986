"""Smoke of each engine version other than the default: install it (once: its environment is
cached under REVATI_ENGINES_DIR), `revati demo` on it (the default model, 20 prompts, CUDA graphs
on), and the report. Opt-in per version: REVATI_ENGINE_SMOKE=0.15.1[,0.32.0]; .ci/run sets 0.15.1
(about 15 min and 11 GB; the install first checks that the disk can hold it).

Cost measured here (2 cores, docs/engines.md): the 0.15.1 environment is 8.6 GB and installs in
about 8 minutes with an empty pip cache (10 s to resume); the run took 2.5 minutes of start-up
plus seconds of load on a loaded host.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from revati import engines, envs
from revati.engines import environments

pytestmark = pytest.mark.slow

WANTED = [v.strip() for v in (envs.get("REVATI_ENGINE_SMOKE") or "").split(",") if v.strip()]


@pytest.mark.parametrize("version", [v for v in engines.supported()["vllm"][1:]])
def test_demo_serves_and_reports_on_the_version(version, tmp_path):
    if version not in WANTED:
        pytest.skip(f"vLLM {version}'s smoke is opt-in: REVATI_ENGINE_SMOKE={version}")
    adapter = engines.get("vllm", version)
    env = environments.ensure(adapter)
    assert env.info()["engine"] == version and env.info()["cuda"].split(".")[0] == adapter.build().cuda.split(".")[0]
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "revati.cli", "demo", "--engine-version", version, "--out", str(out)],
                       capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stderr[-4000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["completed"] == 20 and not rep.get("failed")
    assert rep["total_output_tokens"] == 20 * 32  # every request ran to max_tokens
    assert rep["mean_ttft_ms"] > 0 and rep["mean_tpot_ms"] > 0
    log = (out / "server.replica0.log").read_text()
    assert f"version {version}" in log and "Capturing CUDA graphs" in log  # graphs on, that version
    assert "revati: sampling stand-in tokens" in log  # the version's semantic layer ran
    stats = [json.loads(p.read_text()) for p in out.glob("stats.*.json")]
    assert sum(s.get("graph_launches", 0) for s in stats) > 0  # decode steps replayed captured graphs
