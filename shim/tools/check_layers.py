#!/usr/bin/env python3
"""Checks that the shim's files call each other in layers: no loop of calls between files.

Reads the object files of a build (`nm`): a file depends on another when it refers to a
symbol the other defines. The one exception is the entry-point name table (entries.o), which
takes the address of every exported entry point for cuGetProcAddress and calls none of them.

    python3 tools/check_layers.py build/obj/*.o    # prints the layers, exits 1 on a loop
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENTRYPOINTS = HERE.parent / "entrypoints.def"

#: files whose references to the exported entry points are address-taking, not calls
TABLE_FILES = {"entries"}


def entry_point_names(path: Path = ENTRYPOINTS) -> set[str]:
    return set(re.findall(r"^EP\(\w+,\s*(\w+),", path.read_text(), re.M))


def graph_from_objects(objects: list[Path], exempt: set[str] | None = None) -> dict[str, set[str]]:
    """file -> the files it refers to (by symbol), from object files (a folder: all its .o)."""
    exempt = entry_point_names() if exempt is None else exempt
    defined: dict[str, str] = {}
    undefined: dict[str, set[str]] = {}
    files = sorted(o for p in objects for o in (p.glob("*.o") if p.is_dir() else [p]))
    for obj in files:
        name = obj.stem
        out = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True).stdout
        undefined[name] = set()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "U":
                undefined[name].add(parts[1])
            elif len(parts) == 3 and parts[1] in "TDBRCVW":
                defined.setdefault(parts[2], name)
    graph: dict[str, set[str]] = {name: set() for name in undefined}
    for name, syms in undefined.items():
        for sym in syms:
            if name in TABLE_FILES and sym in exempt:
                continue
            target = defined.get(sym)
            if target and target != name:
                graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one file (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layers(graph: dict[str, set[str]]) -> list[list[str]]:
    """Files by level: level 0 depends on nothing, level k on files below k (no loops)."""
    level: dict[str, int] = {}

    def depth(v: str) -> int:
        if v not in level:
            level[v] = 0  # (a loop would recurse forever; callers check find_cycles first)
            level[v] = 1 + max((depth(w) for w in graph.get(v, ())), default=-1)
        return level[v]

    for v in graph:
        depth(v)
    out: list[list[str]] = [[] for _ in range(1 + max(level.values(), default=-1))]
    for v, k in level.items():
        out[k].append(v)
    return [sorted(x) for x in out]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("objects", type=Path, nargs="+", help="the library's object files (or a folder of them)")
    args = ap.parse_args()
    graph = graph_from_objects(args.objects)
    cycles = find_cycles(graph)
    if cycles:
        for c in cycles:
            print("loop of calls between: " + " ".join(c), file=sys.stderr)
            for a in c:
                print(f"  {a} -> {' '.join(sorted(graph[a] & set(c)))}", file=sys.stderr)
        return 1
    for k, files in enumerate(layers(graph)):
        print(f"layer {k}: {' '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
