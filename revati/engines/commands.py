"""`revati engines list|install|remove`: the engine versions' environments (environments.py)."""

from __future__ import annotations

import argparse
import sys


def _adapter(engine: str, version: str | None):
    from revati import engines

    return engines.get(engine, version)


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from revati import engines
    from revati.engines import environments

    table = Table(title=f"Engine versions (environments in {environments.engines_dir()})")
    for col in ("engine", "version", "torch", "CUDA", "semantic layer", "state", "where"):
        table.add_column(col, no_wrap=col != "where")
    known: set[str] = set()
    for name, versions in engines.supported().items():
        for i, v in enumerate(versions):
            a = engines.get(name, v)
            b = a.build()
            env = environments.env_of(a)
            known.add(env.path.name)
            if a.in_this_interpreter():
                state, where = "installed (beside revati)", sys.prefix
            else:
                state, where = env.state(), str(env.path)
                info = env.info()
                if info:
                    state = f"installed: torch {info.get('torch')} CUDA {info.get('cuda')}"
            table.add_row(name, v + (" (default)" if i == 0 else ""), b.torch, b.cuda, b.layer, state, where)
    Console(width=max(Console().width, 140)).print(table)
    for env in environments.listing():
        if env.path.name not in known:
            print(f"revati engines: {env.path} is not a supported version (`rm -rf` it)", file=sys.stderr)
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from revati.engines import UnknownEngineError, environments

    try:
        a = _adapter(args.engine, args.version)
    except UnknownEngineError as e:
        print(f"revati engines install: {e}", file=sys.stderr)
        return 2
    if a.in_this_interpreter():
        print(f"revati engines: {a.name} {a.version} is installed beside revati ({sys.prefix}); nothing to do")
        return 0
    try:
        env = environments.ensure(a)
    except environments.EngineInstallError as e:
        print(f"revati engines install: {e}", file=sys.stderr)
        return 1
    info = env.info()
    print(f"revati engines: {a.name} {a.version} is installed in {env.path} "
          f"(torch {info.get('torch')}, CUDA {info.get('cuda')})")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from revati.engines import UnknownEngineError, environments

    try:
        a = _adapter(args.engine, args.version)
    except UnknownEngineError as e:
        print(f"revati engines remove: {e}", file=sys.stderr)
        return 2
    if a.in_this_interpreter():
        print(f"revati engines remove: {a.name} {a.version} is the one installed beside revati ({sys.prefix}); "
              "it has no environment of its own", file=sys.stderr)
        return 2
    env = environments.env_of(a)
    if not environments.remove(a):
        print(f"revati engines: {a.name} {a.version} has no environment ({env.path})")
        return 0
    print(f"revati engines: removed {env.path}")
    return 0


def add_parser(sub) -> None:
    en = sub.add_parser("engines", help="list, install or remove the engine versions a spec can name "
                                        "(spec.engine.version)",
                        description="Each engine version other than the one installed beside revati gets its "
                                    "own environment under REVATI_ENGINES_DIR (default ~/.cache/revati/engines), "
                                    "installed on first use by revati run, or here ahead of time.")
    esub = en.add_subparsers(dest="engines_cmd", required=True)
    ls = esub.add_parser("list", help="the supported versions, their torch/CUDA and what is installed")
    ls.set_defaults(func=cmd_list)
    for name, func, text in (("install", cmd_install, "install a version's environment (resumes a partial one)"),
                             ("remove", cmd_remove, "remove a version's environment")):
        p = esub.add_parser(name, help=text)
        p.add_argument("engine", help="the engine (vllm)")
        p.add_argument("version", help="its version, e.g. 0.15.1")
        p.set_defaults(func=func)
