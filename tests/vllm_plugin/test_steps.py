"""step_hook(): in-process ring plus optional JSON lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from revati.vllm_plugin import steps, step_hook

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh():
    steps._reset_for_tests()
    yield
    steps._reset_for_tests()


def _batch(n):
    return {"num_reqs": n, "num_tokens": n, "num_prefill": 0, "num_decode": n,
            "query_lens": [1] * n, "seq_lens": list(range(10, 10 + n))}


def test_ring_without_log(monkeypatch, tmp_path):
    monkeypatch.delenv("REVATI_STEP_LOG", raising=False)
    for i in range(1, 4):
        step_hook(_batch(i))
    assert [b["num_reqs"] for b in steps.STEP_RING] == [1, 2, 3]
    assert [b["step"] for b in steps.STEP_RING] == [1, 2, 3]
    assert list(tmp_path.iterdir()) == []


def test_json_lines(monkeypatch, tmp_path):
    log = tmp_path / "s.jsonl"
    monkeypatch.setenv("REVATI_STEP_LOG", str(log))
    for i in range(1, 6):
        step_hook(_batch(i))
    lines = log.read_text().splitlines()
    assert len(lines) == 5
    recs = [json.loads(line) for line in lines]
    assert [r["num_reqs"] for r in recs] == [1, 2, 3, 4, 5]
    assert recs[-1]["seq_lens"] == [10, 11, 12, 13, 14]
    assert all(r["pid"] == os.getpid() for r in recs)


def test_lines_from_several_processes_stay_whole(tmp_path):
    log = tmp_path / "s.jsonl"
    code = (
        "from revati.vllm_plugin import step_hook\n"
        "for i in range(300):\n"
        "    step_hook({'num_reqs': 64, 'query_lens': [1]*64, 'seq_lens': list(range(64))})\n"
    )
    env = dict(os.environ, REVATI_STEP_LOG=str(log))
    env.pop("PYTHONPATH", None)
    code = f"import sys; sys.path.append({str(REPO)!r})\n" + code
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(tmp_path))
        for _ in range(4)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = log.read_text().splitlines()
    assert len(lines) == 1200
    assert all(json.loads(line)["num_reqs"] == 64 for line in lines)


def test_ring_is_bounded():
    for i in range(steps.RING_SIZE + 10):
        step_hook({"num_reqs": i})
    assert len(steps.STEP_RING) == steps.RING_SIZE
    assert steps.STEP_RING[-1]["num_reqs"] == steps.RING_SIZE + 9
