"""report.json from bench's detailed result, the summary table, and `revati compare`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from revati.cli import main
from revati.run import compare, report

REPO = Path(__file__).resolve().parents[2]


def _bench(scale: float = 1.0) -> dict:
    """A `vllm bench serve --save-result --save-detailed` result of 3 requests (times in s)."""
    return {
        "duration": 2.0 * scale, "completed": 3, "failed": 0, "total_input_tokens": 300, "total_output_tokens": 12,
        "request_throughput": 1.5 / scale, "request_goodput": None, "output_throughput": 6.0 / scale,
        "total_token_throughput": 156.0 / scale, "max_concurrency": None, "request_rate": 4.0,
        "mean_ttft_ms": 100.0 * scale, "median_ttft_ms": 100.0 * scale, "std_ttft_ms": 0.0, "p99_ttft_ms": 100.0 * scale,
        "input_lens": [100, 100, 100], "output_lens": [4, 4, 4],
        "ttfts": [0.1 * scale] * 3, "itls": [[0.02 * scale] * 3] * 3,
        "latencies": [0.16 * scale] * 3, "start_times": [50.0, 50.5, 51.0],
        "generated_texts": ["", "", ""], "errors": ["", "", ""],
    }


def test_report_keeps_bench_keys_fills_percentiles_and_writes_requests(tmp_path):
    b = _bench()
    rows = report.per_request(b)
    assert [r["start_s"] for r in rows] == [0.0, 0.5, 1.0]
    assert rows[0]["tpot_ms"] == pytest.approx(20.0) and rows[0]["itl_ms"] == pytest.approx([20.0] * 3)
    rep = report.build_report(b, rows, {"timewarp": False, "notes": []})
    for m in report.METRICS:
        for s in report.STATS:
            assert isinstance(rep[f"{s}_{m}_ms"], float), f"{s}_{m}_ms"
    assert rep["mean_ttft_ms"] == 100.0                     # bench's own value is kept
    assert rep["p90_e2el_ms"] == pytest.approx(160.0)       # filled from per-request data
    assert "ttfts" not in rep and "errors" not in rep
    assert any("computed by revati" in n for n in rep["emulation"]["notes"])
    report.write_requests(tmp_path / "requests.jsonl", rows)
    back = [json.loads(x) for x in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert len(back) == 3 and back[1]["ttft_ms"] == pytest.approx(100.0)
    table = report.summary_table(rep)
    assert table.startswith("=" * 12 + " Serving Benchmark Result " + "=" * 12)
    assert "Successful requests:" in table and "P99 E2EL (ms):" in table
    assert "OFF (latencies are this CPU's wall time)" in table


def test_failed_requests_count_in_rows_but_not_in_latencies():
    b = _bench()
    b["errors"] = ["", "boom", ""]
    b["latencies"] = [0.16, 0.0, 0.16]
    rows = report.per_request(b)
    assert [r["success"] for r in rows] == [True, False, True] and rows[1]["error"] == "boom"
    assert report._values(rows, "e2el") == pytest.approx([160.0, 160.0])


def _write(tmp_path: Path, name: str, d: dict) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return p


def test_compare_two_reports_and_a_bench_json(tmp_path, capsys):
    a = report.build_report(_bench(1.0), report.per_request(_bench(1.0)), {"timewarp": True, "notes": []})
    b_raw = {k: v for k, v in _bench(1.5).items()}  # a real bench JSON: no emulation block
    pa = _write(tmp_path, "a.json", a)
    pb = _write(tmp_path, "b.json", b_raw)
    rows = {k: (va, vb, rel) for k, va, vb, rel in compare.rows(a, b_raw)}
    assert rows["mean_ttft_ms"][2] == pytest.approx(0.5)
    assert rows["request_throughput"][2] == pytest.approx(1 / 1.5 - 1)
    assert rows["completed"] == (3, 3, 0.0)
    assert main(["compare", str(pa), str(pb)]) == 0
    out = capsys.readouterr().out
    assert "(revati, timewarp on)" in out and "(vllm bench)" in out
    assert "mean_ttft_ms" in out and "+50.0%" in out
    # a run folder stands for its report.json
    (tmp_path / "run").mkdir()
    _write(tmp_path / "run", "report.json", a)
    assert main(["compare", str(tmp_path / "run"), str(pa)]) == 0


def test_compare_rejects_what_is_not_a_result(tmp_path, capsys):
    bad = _write(tmp_path, "x.json", {"hello": 1})
    assert main(["compare", str(bad), str(bad)]) == 2
    assert "no 'completed' key" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing.json"), str(bad)]) == 2


@pytest.mark.parametrize("path, value, field", [
    ("tensorParallelSize", "two", "spec.tensorParallelSize"),
    ("gpu", "b300", "spec.gpu"),
    ("tensorParallelSize", 16, "spec"),
    ("workload.arrival.requestRate", -1, "spec.workload.arrival.requestRate"),
    ("model", None, "spec.model"),
])
def test_revati_run_rejects_invalid_specs_before_starting_anything(tmp_path, path, value, field):
    import yaml

    d = yaml.safe_load((REPO / "examples" / "default.yaml").read_text())
    node = d["spec"]
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    if value is None:
        del node[leaf]
    else:
        node[leaf] = value
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(d))
    p = subprocess.run([sys.executable, "-m", "revati.cli", "run", str(spec), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert f"{field}:" in p.stderr and "invalid spec" in p.stderr
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_revati_run_rejects_an_unrunnable_workload_with_exit_2(tmp_path):
    import yaml

    d = yaml.safe_load((REPO / "examples" / "default.yaml").read_text())
    d["spec"]["workload"]["arrival"] = {"maxConcurrency": 4}
    del d["spec"]["workload"]["numPrompts"]
    d["spec"]["workload"]["durationSeconds"] = 30
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(d))
    p = subprocess.run([sys.executable, "-m", "revati.cli", "run", str(spec), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "spec.workload.durationSeconds" in p.stderr, p.stderr
