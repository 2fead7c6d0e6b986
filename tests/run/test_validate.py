"""`revati validate`: the real runs' reading, the spec mirror rule, the emulated summary, the
table; and `revati validate --quick` end to end (slow: one vLLM server, minutes on 2 cores)."""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from revati.run import loadgen, validate
from revati.spec import spec_from_dict

DATA = validate.DEFAULT_DATA
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"the real runs are not at {DATA}")


def _stage(name: str) -> validate.RealStage:
    return next(st for st in validate.real_stages(DATA) if st.name == name)


@needs_data
def test_real_metrics_reproduce_the_readme_table():
    """The README's derived TPOT (its pitfall) and means, from the lifecycle summaries."""
    want = {  # name: (req/s, TTFT mean, E2E mean, TPOT derived), docs: shared/data/serving/README.md
        "llama-2-7b-general-stage0": (8.0, 27.1, 2057.6, 8.22),
        "llama-2-7b-general-stage1": (19.9, 51.9, 4158.1, 16.62),
        "llama-2-7b-codegen-stage1": (10.0, 29.5, 2215.9, 8.89),
        "llama-2-7b-roleplay-stage0": (6.0, 27.1, 2071.1, 8.18),
        "mixtral-8x7b-v0-1-general-stage0": (7.9, 63.9, 4796.0, 19.16),
        "mixtral-8x7b-v0-1-codegen-stage1": (9.9, 56.8, 4753.6, 19.09),
    }
    for name, (rps, ttft, e2e, tpot) in want.items():
        r = validate.real_metrics(_stage(name))
        m = r["metrics"]
        assert round(r["achieved_rps"], 1) == rps, name
        assert (round(m["ttft_mean"], 1), round(m["e2el_mean"], 1), round(m["tpot_mean"], 2)) == (ttft, e2e, tpot)
        assert m["ttft_p90"] > 0 and m["e2el_p90"] > m["e2el_mean"] * 0.9 and m["tpot_p90"] > 0
        assert math.isclose(r["in_flight_mean"], r["achieved_rps"] * e2e / 1e3, rel_tol=1e-3)


@needs_data
def test_only_the_reasoning_runs_are_overloaded():
    stages = validate.real_stages(DATA)
    assert len(stages) == 12
    assert sorted(st.name for st in stages if st.overloaded) == \
        ["llama-2-7b-reasoning-stage0", "mixtral-8x7b-v0-1-reasoning-stage0"]


@needs_data
def test_shipped_specs_are_the_mirror_of_the_real_runs():
    """examples/validation/ holds one valid spec per non-overloaded stage, as the rule gives it."""
    stages = [st for st in validate.real_stages(DATA) if not st.overloaded]
    specs = validate.load_specs()
    assert sorted(specs) == sorted((st.run, st.stage) for st in stages)
    for st in stages:
        path, d = specs[(st.run, st.stage)]
        assert path.name == f"{st.name}.yaml"
        assert d == validate.mirror_spec(st), f"{path}: regenerate with python -m revati.run.validate --write-specs"
        spec_from_dict(d, str(path))  # a valid spec: the catalog has the model
    g1 = specs[("20260217-231439-llama-2-7b-tp1-general", 1)][1]
    s = g1["spec"]
    assert (s["model"], s["tensorParallelSize"], s["gpu"]) == ("meta-llama/Llama-2-7b-hf", 1, "h100-sxm")
    assert s["engine"]["args"] == {"max-model-len": 4096, "max-num-batched-tokens": 2048, "max-num-seqs": 128}
    assert s["workload"]["dataset"] == {"type": "shared-prefix", "numGroups": 9, "promptsPerGroup": 5,
                                        "systemPromptLen": 100, "questionLen": 475, "outputLen": 248}  # 575 measured
    assert s["workload"]["arrival"] == {"process": "constant", "stages": [{"rate": 8.0, "durationSeconds": 10.0},
                                                                          {"rate": 20.0, "durationSeconds": 40.0}]}
    assert g1["metadata"]["labels"][validate.LABEL_FROM] == "20"
    mix = specs[("20260218-141024-mixtral-8x7b-v0-1-tp2-roleplay", 0)][1]["spec"]
    assert (mix["model"], mix["tensorParallelSize"]) == ("mistralai/Mixtral-8x7B-v0.1", 2)
    assert mix["workload"]["dataset"]["systemPromptLen"] + mix["workload"]["dataset"]["questionLen"] == 782


@needs_data
def test_quick_is_a_30_s_cut_of_the_llama_general_stage_0(tmp_path):
    jobs = validate.plan_jobs(validate.real_stages(DATA), validate.load_specs(), quick=True, runs_glob="*",
                              out=tmp_path)
    assert [j.real.name for j in jobs] == [validate.QUICK_SPEC]
    j = jobs[0]
    assert (j.measure_from_s, j.window_end_s, j.command) == (10.0, 30.0, "revati validate --quick")
    spec = spec_from_dict(j.spec).spec
    p = loadgen.plan(spec, base_url="http://-", model="m", tokenizer="t", result_dir=tmp_path)
    ts = [r["timestamp"] for r in p.trace_rows]
    assert p.num_prompts == 240 and ts[:2] == [0.0, 0.125] and "--self-timed" in p.args
    assert sum(1 for t in ts if t >= 10) == 160
    # --runs selects by spec name or run folder; the overloaded stages are never run
    names = [j.real.name for j in validate.plan_jobs(validate.real_stages(DATA), validate.load_specs(),
                                                      quick=False, runs_glob="llama-2-7b-*", out=tmp_path)]
    assert len(names) == 5 and "llama-2-7b-reasoning-stage0" not in names
    assert len(validate.plan_jobs(validate.real_stages(DATA), validate.load_specs(), quick=False,
                                  runs_glob="*mixtral*general", out=tmp_path)) == 2
    with pytest.raises(validate.ValidateError, match="no spec"):
        validate.plan_jobs(validate.real_stages(DATA), {}, quick=True, runs_glob="*", out=tmp_path)


def _row(start, ttft, e2el, out=248, ok=True):
    return {"success": ok, "start_s": start, "ttft_ms": ttft if ok else None, "e2el_ms": e2el if ok else None,
            "output_tokens": out}


def test_emulated_metrics_measure_only_the_window_and_derive_tpot_as_the_real_side():
    rows = [_row(0.0, 500.0, 12000.0), _row(1.0, 400.0, 12000.0)]          # warm-up (cold cache)
    rows += [_row(10.0 + i, 20.0 + i, 2000.0 + 10 * i) for i in range(10)]  # measured
    rows += [_row(20.0, 0, 0, ok=False)]                                     # outside the window
    m = validate.emulated_metrics(rows, 10.0, 20.0, 248)
    assert m["requests"] == 10 and m["warmup_requests"] == 2 and m["failures"] == 0
    e = m["metrics"]
    assert e["ttft_mean"] == pytest.approx(24.5) and e["ttft_p90"] == pytest.approx(28.1)
    assert e["e2el_mean"] == pytest.approx(2045.0) and e["e2el_p90"] == pytest.approx(2081.0)
    assert e["tpot_mean"] == pytest.approx((2045.0 - 24.5) / 247)
    assert e["tpot_p90"] == pytest.approx((2081.0 - 24.5) / 247)
    # over [10, 20]: the two warm-up requests until 12 and 13 s (2 + 3 s), the measured ones
    # for their E2E, cut at 20 s
    assert m["achieved_rps"] == pytest.approx(1.0)
    assert m["in_flight_mean"] == pytest.approx((5.0 + sum(min(2.0 + 0.01 * i, 10.0 - i) for i in range(10))) / 10)
    # the warm-up requests (12 s long) are still in flight at 11 s, with two measured ones
    assert m["in_flight_peak"] == 4 and m["output_tokens"] == [248]
    with pytest.raises(validate.ValidateError):
        validate.emulated_metrics(rows, 30.0, 40.0, 248)
    # by planned arrivals: a request planned at 10 s whose measured start reads 9.995 s is measured
    late_first = [dict(r, start_s=r["start_s"] - 0.005) for r in rows]
    assert validate.emulated_metrics(late_first, 10.0, 20.0, 248)["requests"] == 9
    planned = [r["start_s"] for r in rows]
    m2 = validate.emulated_metrics(late_first, 10.0, 20.0, 248, arrivals=planned)
    assert (m2["requests"], m2["warmup_requests"]) == (10, 2) and m2["metrics"] == m["metrics"]
    with pytest.raises(validate.ValidateError, match="planned arrivals"):
        validate.emulated_metrics(rows, 10.0, 20.0, 248, arrivals=planned[:3])


def test_in_flight_peak_counts_overlaps_inside_the_window_only():
    rows = [_row(0.0, 1, 5000.0), _row(1.0, 1, 5000.0), _row(2.0, 1, 5000.0),  # 3 at once at t=2..5
            _row(8.0, 1, 1000.0), _row(9.5, 1, 1000.0)]                         # never more than 1 after 6 s
    assert validate.in_flight_peak(rows, 0.0, 20.0) == 3
    assert validate.in_flight_peak(rows, 6.5, 20.0) == 1
    assert validate.in_flight_peak(rows, 4.0, 20.0) == 3   # in flight when the window opens
    back_to_back = [_row(0.0, 1, 1000.0), _row(1.0, 1, 1000.0)]
    assert validate.in_flight_peak(back_to_back, 0.0, 5.0) == 1  # an end before a start at the same instant


def test_signed_error_and_the_table_outputs():
    assert validate.signed_error(27.1, 437.0) == pytest.approx((437.0 - 27.1) / 27.1 * 100)
    assert validate.signed_error(10.0, 9.0) == pytest.approx(-10.0) and validate.signed_error(0.0, 1.0) is None
    real = {"metrics": {f"{m}_{s}": 10.0 for m, _ in validate.METRICS for s in validate.STATS}, "requests": 4800,
            "requested_rps": 8.0, "achieved_rps": 7.98, "in_flight_mean": 16.4, "failures": 0}
    emu = {"metrics": {f"{m}_{s}": 12.0 for m, _ in validate.METRICS for s in validate.STATS}, "requests": 160,
           "warmup_requests": 80, "in_flight_mean": 17.0, "in_flight_peak": 21, "achieved_rps": 8.0}
    result = {"date": "2026-12-02", "commit": "abc1234", "command": "revati validate --quick",
              "versions": {"vllm": "0.32.0"},
              "rows": [{"name": "x-stage0", "real": real, "emulated": emu, "compare": validate.compare(real, emu),
                        "command": "revati run examples/validation/x.yaml --out runs/validate/x"},
                       {"name": "y-stage1", "real": real, "error": "RunFailed: boom", "command": "c"}],
              "overloaded": [{"name": "z-stage0", "requested_rps": 4.0, "achieved_rps": 0.49, "failures": 4068}]}
    assert result["rows"][0]["compare"]["ttft_mean"]["error_pct"] == pytest.approx(20.0)
    md = validate.markdown(result)
    assert "| x-stage0 | 8 | 4800 / 160 | 10.0 / 12.0 (+20.0%)" in md and "abc1234" in md
    assert "failed: RunFailed: boom" in md and "overloaded: achieved 0.49" in md
    from rich.console import Console

    c = Console(file=io.StringIO(), width=200, record=True)
    c.print(validate.render(result))
    text = c.export_text()
    assert "TTFT mean (ms)" in text and "+20.0%" in text and "in flight peak" in text and "21" in text
    assert "reproduce: revati validate --quick" in text and "not emulated" in text and "commit abc1234" in text
    assert validate.commands(result) == ["x-stage0: revati run examples/validation/x.yaml --out runs/validate/x",
                                         "y-stage1: c", "  failed: RunFailed: boom"]
    narrow = Console(file=io.StringIO(), width=100, record=True)
    narrow.print(validate.render(result))
    assert "+20.0%" in narrow.export_text()  # the figures are never cut


@needs_data
def test_list_runs_nothing(capsys):
    args = argparse.Namespace(quick=False, runs="*", out="/nonexistent/validate", data=None, list=True)
    assert validate.validate_main(args) == 0
    out = capsys.readouterr().out
    assert "examples/validation/llama-2-7b-general-stage0.yaml (measured from 10 s to 40 s)" in out
    assert "reasoning stage 0: overloaded (0.49 of 4 req/s)" in out
    assert not Path("/nonexistent/validate").exists()


@needs_data
def test_engine_version_sets_every_row_and_a_bad_one_fails_before_any_run(tmp_path, capsys):
    jobs = validate.plan_jobs(validate.real_stages(DATA), validate.load_specs(), quick=False,
                              runs_glob="llama-2-7b-general*", out=tmp_path, engine_version="0.15.1")
    assert [j.spec["spec"]["engine"]["version"] for j in jobs] == ["0.15.1", "0.15.1"]
    assert [j.spec["metadata"]["name"] for j in jobs] == [
        "llama-2-7b-general-stage0-vllm-0-15-1", "llama-2-7b-general-stage1-vllm-0-15-1"]
    assert jobs[0].command == "revati validate --runs 'llama-2-7b-general-stage0' --engine-version 0.15.1"
    assert spec_from_dict(jobs[0].spec).spec.engine.version == "0.15.1"
    # the shipped specs are untouched (the default engine)
    assert "version" not in validate.load_specs()[(jobs[0].real.run, 0)][1]["spec"]["engine"]
    q = validate.plan_jobs(validate.real_stages(DATA), validate.load_specs(), quick=True, runs_glob="*",
                           out=tmp_path, engine_version="0.15.1")
    assert q[0].command == "revati validate --quick --engine-version 0.15.1"
    args = argparse.Namespace(quick=True, runs="*", out=str(tmp_path / "v"), data=None, list=False,
                              engine_version="0.99.0")
    assert validate.validate_main(args) == 2
    err = capsys.readouterr().err
    assert "spec.engine.version" in err and "0.15.1" in err and not (tmp_path / "v").exists()


@pytest.mark.slow
@needs_data
def test_validate_quick_finishes_with_a_table():
    """`revati validate --quick` end to end: the table and validate.json with sane values
    (no error thresholds: the emulator's fidelity is being worked on)."""
    import shutil
    import tempfile

    # NOTE: a short folder: the sidecar's IPC socket lives under the run folder, and a
    # pytest tmp_path makes it longer than sockaddr_un allows (107 bytes)
    short = Path(tempfile.mkdtemp(prefix="rv-", dir="/tmp"))
    try:
        _quick(short / "v")
    finally:
        shutil.rmtree(short, ignore_errors=True)


def _quick(out: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "revati.cli", "validate", "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=2400, env={**__import__("os").environ, "COLUMNS": "200"})
    print(p.stdout[-6000:], p.stderr[-6000:])
    assert p.returncode == 0, p.stderr[-4000:]
    for line in ("llama-2-7b-general-stage0-quick", "TTFT mean (ms)", "TPOT p90 (ms)", "E2E mean (ms)",
                 "in flight peak", "reproduce: revati validate --quick",
                 "llama-2-7b-general-stage0-quick: revati validate --quick"):
        assert line in p.stdout, line
    res = json.loads((out / "validate.json").read_text())
    assert res["command"] == "revati validate --quick" and res["commit"] and res["versions"]["vllm"] == "0.33.0"
    (row,) = res["rows"]
    assert "error" not in row and row["run"] == "20260217-231439-llama-2-7b-tp1-general" and row["stage"] == 0
    e = row["emulated"]
    assert e["requests"] == 160 and e["failures"] == 0 and e["warmup_requests"] == 80 and e["output_tokens"] == [248]
    m = e["metrics"]
    assert 0 < m["ttft_mean"] <= m["ttft_p90"] and 0 < m["tpot_mean"] <= m["tpot_p90"] * 1.05
    assert m["e2el_mean"] > m["ttft_mean"] and m["e2el_mean"] > 247 * m["tpot_mean"] * 0.99
    assert 1 <= e["in_flight_peak"] <= 240 and e["in_flight_mean"] > 0
    for k, c in row["compare"].items():
        assert c["real"] > 0 and math.isfinite(c["error_pct"]), k
    assert row["compare"]["tpot_mean"]["real"] == pytest.approx(8.22, abs=0.005)
    reqs = [json.loads(x) for x in (Path(row["report_dir"]) / "requests.jsonl").read_text().splitlines()]
    assert len(reqs) == 240 and all(r["success"] for r in reqs)
    assert (out / "validate.md").read_text().count("| llama-2-7b-general-stage0-quick | 8 |") == 1
    assert yaml.safe_load((Path(row["report_dir"]) / "quick.spec.yaml").read_text())["spec"]["workload"][
        "arrival"]["stages"] == [{"rate": 8.0, "durationSeconds": 30.0}]
