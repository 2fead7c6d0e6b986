"""The `revati` command line."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from revati import envs
from revati.catalog import DEFAULT_GPU, load_catalog


def cmd_gpus(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Virtual GPU catalog (REVATI_GPU / --gpu)")
    for col in ("key", "name", "memory", "SMs", "CC", "L2", "BF16 TFLOPS", "HBM GB/s", "link GB/s"):
        table.add_column(col, justify="left" if col in ("key", "name") else "right", no_wrap=True)
    for key, g in load_catalog().items():
        table.add_row(
            key + (" (default)" if key == DEFAULT_GPU else ""), g.name, f"{g.memory_mib} MiB",
            str(g.sm_count), f"{g.cc_major}.{g.cc_minor}", f"{g.l2_bytes >> 20} MiB",
            f"{g.peak_tflops_bf16:g}", f"{g.mem_bw_gbps:g}",
            f"{g.interconnect_gbps:g} ({'NVLink' if g.nvlink else 'PCIe'})")
    Console(width=max(Console().width, 130)).print(table)
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from revati.launch.env import emulator_env
    from revati.launch.paths import ShimNotBuiltError
    from revati.launch.trace import merge_trace

    command = args.command[1:] if args.command and args.command[0] == "--" else args.command
    if not command:
        print("revati exec: give a command after --, e.g. revati exec -- python app.py", file=sys.stderr)
        return 2
    from contextlib import nullcontext

    from revati.catalog import get_gpu
    from revati.launch.sidecar import prediction_sidecar

    try:
        get_gpu(args.gpu)
    except KeyError as e:
        print(f"revati exec: {e.args[0]}", file=sys.stderr)
        return 2
    if args.no_timewarp and (args.clock or args.dilation):
        print("revati exec: --clock and --dilation are time-warp options; drop --no-timewarp", file=sys.stderr)
        return 2
    import tempfile

    from revati.launch.stats import format_summary, summarize_stats

    use_sidecar = args.predictor in (None, "sidecar")
    stats = args.stats or str(Path(tempfile.mkdtemp(prefix="revati-stats-")) / "stats")
    with prediction_sidecar(args.gpu) if use_sidecar else nullcontext((None, {})) as (endpoint, sidecar_stats):
        try:
            from revati import engines

            engine = engines.get(*args.engine.split("==", 1)) if args.engine else engines.for_command(command)
            timewarp = _exec_timewarp(args)
            env = emulator_env(args.gpu, num_gpus=args.num_gpus, predictor=args.predictor,
                               trace=args.trace, stats=stats, sidecar=endpoint, timewarp=timewarp, engine=engine)
        except (KeyError, ShimNotBuiltError) as e:
            print(f"revati exec: {e.args[0] if e.args else e}", file=sys.stderr)
            return 2
        rc = _run_tree(command, env)
        if timewarp:
            from revati.timekeeper.timewarp_cli import exit_code

            rc = exit_code(timewarp, rc)
    print(format_summary(summarize_stats(stats), sidecar_stats), file=sys.stderr)
    if args.trace:
        n = merge_trace(args.trace)
        print(f"revati: wrote {n} trace events to {args.trace} (open in ui.perfetto.dev)", file=sys.stderr)
    return rc


def _exec_timewarp(args: argparse.Namespace):
    """The clock of `revati exec [--clock PATH]`: a Timekeeper to own or join, or False with
    --no-timewarp (every clock real)."""
    if args.no_timewarp:
        return False
    from revati.launch.clock import shared_timekeeper
    from revati.timekeeper import timewarp_cli

    return timewarp_cli.open_clock(args, shared_timekeeper(args.clock, timewarp_cli.dilation(args.dilation),
                                                           args.host_contention))


def _run_tree(command: list[str], env: dict[str, str]) -> int:
    """Runs command as the leader of its own process group; signals reach the whole tree."""
    # The child leads its own process group so Ctrl-C and termination reach the whole tree.
    try:
        proc = subprocess.Popen(command, env=env, process_group=0)
    except FileNotFoundError:
        print(f"revati exec: command not found: {command[0]}", file=sys.stderr)
        return 127

    def forward(signum, _frame):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    rc = proc.wait()
    try:  # whatever the tree left behind goes too
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    return rc if rc >= 0 else 128 - rc


def cmd_demo(args: argparse.Namespace) -> int:
    """`revati run` of the built-in demo spec (revati.run.plan.demo_spec)."""
    from revati.run.plan import demo_spec
    from revati.spec import SpecError

    try:
        spec = demo_spec(model=args.model, gpu=args.gpu, num_prompts=args.num_prompts, input_len=args.input_len,
                         output_len=args.output_len, request_rate=args.request_rate, serve_args=args.serve_args,
                         engine_version=args.engine_version)
    except (SpecError, ValueError) as e:
        print(f"revati demo: {e}", file=sys.stderr)
        return 2
    print(f"revati demo: revati run of the built-in spec {spec.metadata.name} ({args.model} on a virtual "
          f"{args.gpu}, {args.num_prompts} prompts); report in {args.out}", flush=True)
    return _run_spec(spec, Path(args.out), None, "revati demo")


def cmd_run(args: argparse.Namespace) -> int:
    """`revati run SPEC [--out DIR]`: validate, run the deployment under load, write the report."""
    from revati.spec import SpecError, load_spec

    try:
        spec = load_spec(args.spec)
    except SpecError as e:
        print(f"revati run: {e}", file=sys.stderr)
        return 2
    return _run_spec(spec, Path(args.out or Path("runs") / spec.metadata.name), Path(args.spec), "revati run")


def _run_spec(spec, out: Path, spec_path: Path | None, name: str) -> int:
    """Runs a spec locally (revati.run.orchestrator), prints the summary; the exit status."""
    from revati.launch.processes import ServerFailed
    from revati.run import faults, orchestrator
    from revati.run.loadgen import WorkloadError
    from revati.run.report import summary_table

    def interrupt(signum, _frame):  # SIGTERM/SIGHUP unwind like Ctrl-C: every child is killed
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    from revati.engines.environments import EngineInstallError

    # NOTE: explicitly, because Python leaves SIGINT ignored when it starts with it ignored, as
    # every command a non-interactive shell runs in the background (`revati run ... &`, a suite
    # under nohup &) does: a `kill -INT` then did nothing and the run went on to the end.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = orchestrator.run(spec, out, spec_path=spec_path.resolve() if spec_path else None)
    except WorkloadError as e:
        print(f"{name}: invalid spec {spec_path or spec.metadata.name}:\n  - {e}", file=sys.stderr)
        return 2
    except orchestrator.DeploymentFault as e:  # a process died or hung: report.json says "outcome": "failed"
        if e.fault.load_s is not None or e.report.get("completed"):
            print(summary_table(e.report))  # a table of zeros for a run that never served says nothing
        print(f"{name}: FAILED: {e}\n{name}: wrote report.json (outcome: failed) and requests.jsonl to {e.out}",
              file=sys.stderr)
        return faults.DEADLOCK_EXIT_CODE if e.fault.kind == "deadlock" else faults.FAULT_EXIT_CODE
    except (ServerFailed, orchestrator.RunFailed, EngineInstallError) as e:
        # EngineInstallError: the spec's version, installed on first use (orchestrator.run), failed to install
        print(f"{name}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted; every process was stopped", file=sys.stderr)
        return 130
    rep = result.report
    print(summary_table(rep))
    for note in rep["emulation"].get("notes", []):
        print(f"note: {note}")
    print(f"{name}: wrote {', '.join(result.files)} to {result.out}")
    n = rep["emulation"]["load_generator"]["num_prompts"]
    return 0 if rep.get("completed") == n and not rep.get("failed") else 1


def cmd_validate(args: argparse.Namespace) -> int:
    from revati.run.validate import validate_main

    return validate_main(args)


def cmd_compare(args: argparse.Namespace) -> int:
    from revati.run.compare import compare_main

    return compare_main(args.a, args.b)


def cmd_explain(args: argparse.Namespace) -> int:
    from revati.run.explain import explain_main

    return explain_main(args.run_dir, plot=not args.no_plot, json_out=args.json, all_steps=args.all)


def cmd_predict(args: argparse.Namespace) -> int:
    from revati.predictor.predict_cmd import predict_main

    return predict_main(args.gpu, json_str=args.json, jsonl_path=args.jsonl)


def cmd_predictor_evaluate(args: argparse.Namespace) -> int:
    from revati.predictor.evaluate import evaluate, print_report

    report = evaluate(gpus=args.gpu or None, families=args.family or None, folds=args.folds)
    print_report(report)
    if args.json_out:
        import json

        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1, default=str)
    return 0


def cmd_predictor_train(args: argparse.Namespace) -> int:
    from revati.predictor.predict_cmd import train_main

    train_main(args.gpu or None, out_dir=args.out)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from revati.predictor.profiler import NoGpuError, profile_main

    try:
        profile_main(args.out, args.gpu, iters=args.iters, warmup=args.warmup, quick=args.quick)
    except NoGpuError as e:
        print(f"revati profile: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_sidecar(args: argparse.Namespace) -> int:
    from revati.sidecar import serve

    relay = None
    if args.coordinator:
        from revati.timekeeper.multihost_cli import start_relay

        relay = start_relay(args)
    try:
        serve(args.endpoint, args.gpu)
    finally:
        if relay is not None:
            relay.stop()
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from revati.run.sweep_local import cmd_sweep as run  # yaml/pydantic only when a sweep runs

    return run(args)


def cmd_trace_merge(args: argparse.Namespace) -> int:
    from revati.launch.trace import merge_trace

    parts = Path(args.path).with_name(Path(args.path).name + ".parts")
    if not parts.is_dir():
        print(f"revati trace merge: no per-process parts at {parts} (was REVATI_TRACE={args.path} set?)",
              file=sys.stderr)
        return 2
    n = merge_trace(args.path)
    print(f"revati: wrote {n} trace events to {args.path} (open in ui.perfetto.dev)")
    return 0


def cmd_crds(args: argparse.Namespace) -> int:
    from revati.spec.crds import all_crds, crd_yaml, write_crds

    if args.out:
        for path in write_crds(args.out):
            print(f"revati: wrote {path}")
    else:
        sys.stdout.write("---\n".join(crd_yaml(crd) for crd in all_crds()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="revati", description="GPU-free time-warp emulator for LLM serving.")
    sub = p.add_subparsers(dest="cmd", required=True)

    cr = sub.add_parser("crds", help="print (or write) the Kubernetes CRDs generated from the spec models")
    cr.add_argument("--out", default=None, help="write one YAML per CRD into this folder (e.g. charts/revati/crds)")
    cr.set_defaults(func=cmd_crds)

    g = sub.add_parser("gpus", help="list the virtual GPU catalog")
    g.set_defaults(func=cmd_gpus)

    e = sub.add_parser("exec", help="run any command under the emulator (children inherit it)",
                       description="Run CMD with virtual GPUs, like faketime does for clocks.")
    e.add_argument("--gpu", default=envs.get("REVATI_GPU", DEFAULT_GPU), help="catalog key (see `revati gpus`)")
    e.add_argument("--num-gpus", type=int, default=None, help="GPUs on the virtual node (default: 8)")
    e.add_argument("--predictor", default=None,
                   help="sidecar (default: the trained models), roofline, or constant:<n>{ns,us,ms,s}")
    e.add_argument("--trace", default=None, help="write a Perfetto trace of the virtual GPU timelines here")
    e.add_argument("--stats", default=None, help="per-process op statistics prefix (<prefix>.<pid>.json)")
    e.add_argument("--no-timewarp", action="store_true",
                   help="every clock real (a debugging mode): GPU work is predicted and recorded but "
                        "costs no time. Default: one causal virtual clock for the tree, on which "
                        "predicted GPU time and idle waits cost no wall time, as in `revati run`")
    e.add_argument("--timewarp", action="store_true", help=argparse.SUPPRESS)  # the default; kept as a no-op
    e.add_argument("--clock", default=None, metavar="PATH",
                   help="one deployment clock shared by several commands: the first "
                        "`revati exec --clock PATH` starts the Timekeeper with its clock page at PATH, "
                        "later ones join it")
    e.add_argument("--dilation", default=None, metavar="D|auto",
                   help="CPU work counts 1/D of its wall time; auto: D from the "
                        "calibration in docs/timewarp.md (default 1)")
    e.add_argument("--host-contention", choices=("compensate", "count"), default="compensate",
                   help="time warp: compensate (default) slows the clock while this host has more runnable "
                        "tasks than cores, so CPU work costs its CPU time; count: queueing for a core "
                        "counts as CPU work (docs/timewarp.md)")
    e.add_argument("--engine", default=None, metavar="NAME[==VERSION]",
                   help="set this engine's variables under the emulator (e.g. sglang, vllm==0.15.1; default: the "
                        "engine the command runs: a program in an engine version's environment, or one named "
                        "sglang or vllm; otherwise vllm's)")
    e.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    e.set_defaults(func=cmd_exec)

    d = sub.add_parser("demo", help="`revati run` of a built-in spec: one model, random prompts, vllm bench serve",
                       description="Runs a built-in EmulatedDeployment (one replica, a random dataset of "
                                   "--num-prompts prompts at --request-rate, inf: all at once) like "
                                   "`revati run`, on the time warp, and writes its report to --out.")
    d.add_argument("--model", default="meta-llama/Llama-3.1-8B")
    d.add_argument("--gpu", default=DEFAULT_GPU)
    d.add_argument("--num-prompts", type=int, default=20)
    d.add_argument("--input-len", type=int, default=128)
    d.add_argument("--output-len", type=int, default=32)
    d.add_argument("--request-rate", default="inf")
    d.add_argument("--engine-version", default=None, metavar="VERSION",
                   help="spec.engine.version (default: the default version; `revati engines list`)")
    d.add_argument("--out", default="runs/demo", help="report folder (as `revati run --out`)")
    d.add_argument("serve_args", nargs=argparse.REMAINDER, help="-- extra `vllm serve` flags")
    d.set_defaults(func=cmd_demo)

    rn = sub.add_parser("run", help="emulate a deployment spec under load and write the report",
                        description="Validate SPEC, start the sidecar, `vllm serve` per replica (and a "
                                    "round-robin router), drive it with `vllm bench serve`, and write "
                                    "report.json, requests.jsonl, spec.resolved.yaml and plots to --out.")
    rn.add_argument("spec", help="an EmulatedDeployment YAML (see examples/default.yaml)")
    rn.add_argument("--out", default=None, help="report folder (default: runs/<metadata.name>)")
    rn.set_defaults(func=cmd_run)

    va = sub.add_parser("validate", help="replay the real GPU serving runs (shared/data/serving) and print the "
                                         "real vs emulated error table",
                        description="For every run and stage of the real H100 runs that is not overloaded, run "
                                    "its spec (examples/validation/) with `revati run` and print real vs "
                                    "emulated TTFT, TPOT and E2E (mean, p90), the signed error, the "
                                    "concurrency and the command; writes validate.json (docs/fidelity.md).")
    va.add_argument("--quick", action="store_true",
                    help="a 30-virtual-second slice of the Llama-2-7B general stage 0 only (minutes)")
    va.add_argument("--runs", default="*", metavar="GLOB",
                    help="spec names or real run folders to include (fnmatch; default: all)")
    va.add_argument("--out", default="runs/validate", help="folder of the runs and validate.json")
    va.add_argument("--data", default=None, help="the real runs (default: ../shared/data/serving of the repo)")
    va.add_argument("--list", action="store_true", help="print the real runs and their specs, run nothing")
    va.add_argument("--engine-version", default=None, metavar="VERSION",
                    help="emulate this vLLM version (spec engine.version; `revati engines list`); default: "
                         "the default engine. The real runs used the vLLM 0.15 series (0.15.1 emulates it)")
    va.set_defaults(func=cmd_validate)

    cp = sub.add_parser("compare", help="two reports (or vllm bench serve result JSONs) side by side")
    cp.add_argument("a", help="report.json, a run folder, or a `vllm bench serve --save-result` JSON")
    cp.add_argument("b", help="the same, to compare against A: (B-A)/A")
    cp.set_defaults(func=cmd_compare)

    xp = sub.add_parser("explain", help="where each kind of engine step spent its virtual time (step anatomy)",
                        description="Reads the step logs of a `revati run` folder and prints, per rank and per "
                                    "kind of step (decode, mixed, prefill; by batch size), the mean step's GPU "
                                    "busy time, CPU and waits on the critical path; writes explain.json and "
                                    "explain.png there (docs/run.md).")
    xp.add_argument("run_dir", help="a `revati run` output folder, or one steps.*.jsonl")
    xp.add_argument("--json", default=None, help="write the JSON here (default: RUN_DIR/explain.json)")
    xp.add_argument("--no-plot", action="store_true", help="do not write explain.png")
    xp.add_argument("--all", action="store_true",
                    help="also the steps before the benchmark's first request (warm-up, probe)")
    xp.set_defaults(func=cmd_explain)

    pr = sub.add_parser("predict", help="predict the duration of ops on a GPU (see docs/predictor.md)")
    pr.add_argument("--gpu", default=DEFAULT_GPU)
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--json", help='one op, e.g. \'{"op":"gemm","m":512,"n":8192,"k":8192,"dtype":"bf16"}\'')
    src.add_argument("--jsonl", help="a file with one op per line; prints one result per line")
    pr.set_defaults(func=cmd_predict)

    pp = sub.add_parser("predictor", help="train and evaluate the duration predictor")
    psub = pp.add_subparsers(dest="predictor_cmd", required=True)
    ev = psub.add_parser("evaluate", help="MAPE, median and p90 APE per family and GPU on held-out shapes")
    ev.add_argument("--gpu", action="append", help="catalog key (repeatable; default: all with data)")
    ev.add_argument("--family", action="append", help="op family (repeatable; default: all)")
    ev.add_argument("--folds", type=int, default=5)
    ev.add_argument("--json-out", help="also write the report as JSON")
    ev.set_defaults(func=cmd_predictor_evaluate)
    tr = psub.add_parser("train", help="train the models from profiles/ and write them")
    tr.add_argument("--gpu", action="append", help="catalog key (repeatable; default: all with data)")
    tr.add_argument("--out", default=None, help="models folder (default: profiles/models)")
    tr.set_defaults(func=cmd_predictor_train)

    pf = sub.add_parser("profile", help="measure op timings on a real GPU with torch and write profiles")
    pf.add_argument("--gpu", required=True, help="catalog key of the GPU being measured")
    pf.add_argument("--out", required=True, help="output folder (profile schema CSVs)")
    pf.add_argument("--iters", type=int, default=20)
    pf.add_argument("--warmup", type=int, default=5)
    pf.add_argument("--quick", action="store_true", help="a small sweep, for a smoke run")
    pf.set_defaults(func=cmd_profile)

    tm = sub.add_parser("trace", help="work with Perfetto traces of the virtual GPU timelines")
    tsub = tm.add_subparsers(dest="trace_cmd", required=True)
    mg = tsub.add_parser("merge", help="merge the per-process parts that REVATI_TRACE=PATH left into PATH "
                                       "(revati exec --trace does this itself)")
    mg.add_argument("path")
    mg.set_defaults(func=cmd_trace_merge)

    from revati.run import roles  # `revati role replica|router|loadgen`: the Kubernetes pods' commands

    roles.add_parser(sub)
    from revati.engines import commands as engine_commands  # `revati engines list|install|remove`

    engine_commands.add_parser(sub)
    sw = sub.add_parser("sweep", help="run an EmulationSweep file locally: every child a `revati run`, then the ranking",
                        description="Expand the sweep's grid into child specs, run each with `revati run` (in "
                                    "turn, or --parallel N at once), rank them with the operator's rank(), print "
                                    "the table and write sweep.json, sweep-state.json and pareto.png to --out. "
                                    "Run it again to resume: finished children are not rerun (docs/sweep.md).")
    sw.add_argument("file", help="an EmulationSweep YAML (see charts/revati/examples/emulationsweep.yaml)")
    sw.add_argument("--out", default=None, help="sweep folder (default: runs/<metadata.name>)")
    sw.add_argument("--parallel", type=int, default=1, metavar="N",
                    help="children running at once (default 1; they share this machine's cores; "
                         "spec.maxParallel is the operator's)")
    sw.add_argument("--retry-failed", action="store_true", help="rerun the children that failed in an earlier run")
    sw.set_defaults(func=cmd_sweep)


    sc = sub.add_parser("sidecar", help="run the prediction sidecar (ZeroMQ ROUTER, msgpack)")
    sc.add_argument("--endpoint", required=True, help="e.g. ipc:///tmp/revati.sock or tcp://127.0.0.1:5555")
    sc.add_argument("--gpu", default=DEFAULT_GPU)
    from revati.timekeeper import multihost_cli

    multihost_cli.add_relay_args(sc, required=False)  # the pod's relay to the coordinator, if given
    sc.set_defaults(func=cmd_sidecar)
    multihost_cli.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "serve_args", None) and args.serve_args[0] == "--":
        args.serve_args = args.serve_args[1:]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
