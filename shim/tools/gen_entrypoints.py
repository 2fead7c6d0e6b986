#!/usr/bin/env python3
"""Refreshes shim/entrypoints.def, the one list of entry points the shim exports.

Every exported function of the real NVIDIA libraries gets one line:

    EP(LIB, name, KIND)

LIB is CUDART, CUDA (driver), CUBLAS, CUBLASLT, NCCL or NVML. KIND is IMPL (written by hand
in shim/src/*.c), STUB (a generated stub that logs once and returns the API's "not
supported" code) or STUBP (a generated stub for a pointer-returning function: returns NULL).

Sources, in order of authority:
  * the dynamic symbol tables of the installed cudart, cuBLAS, cuBLASLt and NCCL wheels, of both
    stacks: CUDA 13 (--site, revati's environment) and CUDA 12 (--site12, the environment of an
    engine version built on it, e.g. vLLM 0.15.1's; optional). The list is their union;
  * for libcuda.so.1 and libnvidia-ml.so.1, which are not installed on a GPU-less machine,
    the declarations and `#define x x_vN` aliases of cuda.h / generated_cuda_meta.h and nvml.h.

A name whose signature changed between CUDA 12 and 13 gets a CUDA 12 variant, bound only by
references versioned @libcudart.so.12 (the shim's version script): one line

    EPV(LIB, name, soname)

written by hand (and kept by this tool), defined as rv12_<name> in shim/src/cuda12.c.

Existing IMPL marks are kept, so this can be rerun after a library upgrade: new names arrive
as STUB, and names that disappeared are dropped (an IMPL that disappears is kept and
reported, since code still defines it).

Usage: gen_entrypoints.py --site SITE_PACKAGES [--site12 SITE_PACKAGES] [--also SITE_PACKAGES ...] --nvml-include DIR [--sync-impl SRC]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

DEF_PATH = Path(__file__).resolve().parent.parent / "entrypoints.def"
LIB_ORDER = ["CUDART", "CUDA", "CUBLAS", "CUBLASLT", "NCCL", "NVML"]
EP_RE = re.compile(r"^EP\((\w+),\s*(\w+),\s*(\w+)\)")
EPV_RE = re.compile(r"^EPV\((\w+),\s*(\w+),\s*([\w.]+)\)")


def stack12(site: Path) -> dict[str, Path]:
    """The CUDA 12 wheels' libraries and headers in a site-packages (nvidia/<component>/...)."""
    nv = site / "nvidia"
    return {"CUDART": nv / "cuda_runtime/lib/libcudart.so.12", "CUBLAS": nv / "cublas/lib/libcublas.so.12",
            "CUBLASLT": nv / "cublas/lib/libcublasLt.so.12", "NCCL": nv / "nccl/lib/libnccl.so.2",
            "include": nv / "cuda_runtime/include", "cublas_include": nv / "cublas/include"}


def exported_functions(so: Path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(so)], check=True,
                         capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in ("T", "W", "i"):
            names.add(parts[2].split("@")[0])
    return names


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def header_functions(text: str, prefix: str) -> set[str]:
    """Names declared as functions (or aliased by #define) with the given prefix."""
    text = strip_comments(text)
    names = set(re.findall(rf"\b({prefix}\w*)\s*\(", text))
    for alias, target in re.findall(rf"#\s*define\s+({prefix}\w*)\s+({prefix}\w*)\b", text):
        names.add(alias)
        names.add(target)
    return names


def pointer_returning(texts: list[str]) -> set[str]:
    """Functions whose declared return type is a pointer (their stubs return NULL)."""
    out = set()
    for text in texts:
        text = strip_comments(text)
        for m in re.finditer(r"\*\s*(?:CUDARTAPI|CUBLASWINAPI|CUDAAPI|DECLDIR)?\s*(\w+)\s*\(", text):
            out.add(m.group(1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--site", required=True, type=Path, help="site-packages with the nvidia wheels")
    ap.add_argument("--site12", type=Path, help="site-packages with the CUDA 12 wheels (optional: their names "
                    "join the list)")
    ap.add_argument("--also", type=Path, action="append", default=[], metavar="SITE",
                    help="another site-packages with CUDA 13 wheels (another engine version's): its names join the list")
    ap.add_argument("--nvml-include", required=True, type=Path, help="folder with nvml.h")
    ap.add_argument("--sync-impl", type=Path, metavar="SRC_DIR",
                    help="mark IMPL exactly the names defined with the API macro in SRC_DIR/*.c")
    args = ap.parse_args()

    nv = args.site / "nvidia"
    inc = nv / "cu13" / "include"
    libs: dict[str, set[str]] = {
        "CUDART": exported_functions(nv / "cu13/lib/libcudart.so.13"),
        "CUBLAS": exported_functions(nv / "cu13/lib/libcublas.so.13"),
        "CUBLASLT": exported_functions(nv / "cu13/lib/libcublasLt.so.13"),
        "NCCL": {n for n in exported_functions(nv / "nccl/lib/libnccl.so.2") if n.startswith(("nccl", "pnccl"))},
    }
    for site in args.also:
        nv2 = site / "nvidia"
        for lib, so in (("CUDART", "cu13/lib/libcudart.so.13"), ("CUBLAS", "cu13/lib/libcublas.so.13"),
                        ("CUBLASLT", "cu13/lib/libcublasLt.so.13")):
            libs[lib] |= exported_functions(nv2 / so)
        libs["NCCL"] |= {n for n in exported_functions(nv2 / "nccl/lib/libnccl.so.2") if n.startswith(("nccl", "pnccl"))}
    headers12: list[str] = []
    if args.site12:
        s12 = stack12(args.site12)
        for lib in ("CUDART", "CUBLAS", "CUBLASLT"):
            libs[lib] |= exported_functions(s12[lib])
        libs["NCCL"] |= {n for n in exported_functions(s12["NCCL"]) if n.startswith(("nccl", "pnccl"))}
        headers12 = [(s12["include"] / "cuda.h").read_text(), (s12["include"] / "cuda_runtime_api.h").read_text(),
                     (s12["cublas_include"] / "cublas_api.h").read_text(), (s12["cublas_include"] / "cublasLt.h").read_text()]
    cuda_h = (inc / "cuda.h").read_text()
    meta = (inc / "generated_cuda_meta.h").read_text()
    driver = header_functions(cuda_h, "cu") | set(re.findall(r"typedef struct (cu\w+)_params_st", meta))
    if headers12:
        driver |= header_functions(headers12[0], "cu")
    # Names the real libcuda exports that the headers only reach through cuGetProcAddress.
    driver |= {"cuGetExportTable", "cuGetProcAddress", "cuGetProcAddress_v2"}
    libs["CUDA"] = {n for n in driver if re.fullmatch(r"cu[A-Z]\w*", n)}
    nvml_h = (args.nvml_include / "nvml.h").read_text()
    libs["NVML"] = {n for n in header_functions(nvml_h, "nvml") if re.fullmatch(r"nvml[A-Z]\w*", n)}

    ptr = pointer_returning([cuda_h, nvml_h, (inc / "cuda_runtime_api.h").read_text(),
                             (inc / "cublas_api.h").read_text(), (inc / "cublasLt.h").read_text(),
                             (nv / "nccl/include/nccl.h").read_text(), *headers12])
    ptr |= {"__cudaRegisterFatBinary"}

    kept: dict[str, tuple[str, str]] = {}
    variants: list[str] = []
    if DEF_PATH.exists():
        for line in DEF_PATH.read_text().splitlines():
            m = EP_RE.match(line)
            if m:
                kept[m.group(2)] = (m.group(1), m.group(3))
            elif EPV_RE.match(line) and line not in variants:
                variants.append(line)

    if args.sync_impl:
        defined = set()
        # cuda.h and nvml.h rename many functions (#define cuMemAlloc cuMemAlloc_v2): a
        # definition written as cuMemAlloc defines the _vN symbol, unless the file #undefs it.
        aliases = dict(re.findall(r"#\s*define\s+(\w+)\s+(?:__CUDA_API_PT\w+\()?(\w+_v\d+)\b", strip_comments(cuda_h + nvml_h)))
        for c in sorted(args.sync_impl.glob("*.c")):
            text = c.read_text()
            undone = set(re.findall(r"^#undef\s+(\w+)", text, flags=re.M))
            for name in re.findall(r"^API\s+[\w\s\*]+?\b(\w+)\s*\(", text, flags=re.M):
                defined.add(name if name in undone else aliases.get(name, name))
        kept = {n: (lib, "IMPL" if n in defined else ("STUB" if kind == "IMPL" else kind))
                for n, (lib, kind) in kept.items()}
        for n in defined - kept.keys():
            for lib in LIB_ORDER:
                if n in libs[lib]:
                    kept[n] = (lib, "IMPL")
        unknown = defined - set().union(*libs.values())
        for n in sorted(unknown):
            print(f"note: {n} is implemented but not exported by the real libraries", file=sys.stderr)

    seen: set[str] = set()
    lines = [
        "/* The one list of entry points the shim exports. Expanded with X-macros into the",
        " * generated stubs (stubs.c) and the name table used by dlsym-style lookups",
        " * (cuGetProcAddress, cudaGetDriverEntryPoint). Refresh with shim/tools/gen_entrypoints.py;",
        " * flip STUB to IMPL when a function gets a hand-written implementation in shim/src/.",
        " * The build fails if the two disagree (duplicate or missing definition).",
        " * The names are the union of the CUDA 13 and CUDA 12 stacks' exports (--site12); EPV lines",
        " * (at the end) are CUDA 12 variants of names whose signature changed in 13. */",
    ]
    for lib in LIB_ORDER:
        lines.append(f"/* ---- {lib} ---- */")
        for name in sorted(libs[lib]):
            if name in seen:
                continue
            seen.add(name)
            kind = kept.get(name, (lib, None))[1] or ("STUBP" if name in ptr else "STUB")
            lines.append(f"EP({lib}, {name}, {kind})")
    for name, (lib, kind) in sorted(kept.items()):
        if name not in seen and kind == "IMPL":
            print(f"note: {name} is no longer exported by {lib} but is implemented; kept", file=sys.stderr)
            lines.append(f"EP({lib}, {name}, IMPL)")
    lines.append("/* ---- CUDA 12 variants: bound by references versioned @<soname>, defined as rv12_<name> in")
    lines.append(" * src/cuda12.c (the version script is generated from these lines); ignored where EPV is")
    lines.append(" * not defined ---- */")
    lines += ["#ifndef EPV", "#define EPV(lib, name, soname)", "#define RV_EPV_UNUSED", "#endif", *variants,
              "#ifdef RV_EPV_UNUSED", "#undef EPV", "#undef RV_EPV_UNUSED", "#endif"]
    DEF_PATH.write_text("\n".join(lines) + "\n")
    counts = {lib: len(libs[lib]) for lib in LIB_ORDER}
    print(f"wrote {DEF_PATH}: {len(seen)} entry points {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
