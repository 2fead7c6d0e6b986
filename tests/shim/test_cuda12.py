"""The shim stands in for both NVIDIA stacks: CUDA 13 (torch 2.14, revati's environment; vLLM
0.32.0's torch 2.13 where its environment is installed) and CUDA 12 (torch 2.9.1, vLLM 0.15.1's
environment, revati/engines/environments.py).

The CUDA 12 checks need that environment (its nvidia-* wheels hold the real libraries and
headers); without it they are skipped, saying so. scripts/test.sh installs the versions named
in REVATI_ENGINE_SMOKE before the tests start, and .ci/run names 0.15.1: CI runs them.
"""

from __future__ import annotations

import re
import subprocess
import sysconfig
from pathlib import Path

import pytest

from revati import engines
from revati.engines import environments
from revati.launch.paths import shim_dir

SHIM = shim_dir() / "librevati_shim.so"
SRC = Path(__file__).resolve().parents[2] / "shim" / "src" / "cuda12.c"
NV13 = Path(sysconfig.get_paths()["purelib"]) / "nvidia"


def _site(version: str) -> Path | None:
    env = environments.env_of(engines.get("vllm", version))
    site = env.path / "lib" / "python3.11" / "site-packages"
    return site if env.installed() and (site / "nvidia").is_dir() else None


def _site12() -> Path | None:
    return _site("0.15.1")


needs12 = pytest.mark.skipif(_site12() is None, reason="vLLM 0.15.1's environment (the CUDA 12 wheels) is not "
                                                       "installed: `revati engines install vllm 0.15.1`")


def _exported(so: Path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True, check=True).stdout
    return {p[2].split("@")[0] for p in (line.split() for line in out.splitlines())
            if len(p) == 3 and p[1] in ("T", "W", "i")}


def _stack(major: int | str) -> dict[str, Path]:
    if major in (13, "13 (vLLM 0.32.0)"):
        nv = NV13 if major == 13 else _site("0.32.0") / "nvidia"
        return {"cudart": nv / "cu13/lib/libcudart.so.13", "cublas": nv / "cu13/lib/libcublas.so.13",
                "cublasLt": nv / "cu13/lib/libcublasLt.so.13", "nccl": nv / "nccl/lib/libnccl.so.2"}
    nv = _site12() / "nvidia"
    return {"cudart": nv / "cuda_runtime/lib/libcudart.so.12", "cublas": nv / "cublas/lib/libcublas.so.12",
            "cublasLt": nv / "cublas/lib/libcublasLt.so.12", "nccl": nv / "nccl/lib/libnccl.so.2"}


@pytest.mark.parametrize("major", [13, pytest.param(12, marks=needs12), pytest.param(
    "13 (vLLM 0.32.0)", marks=pytest.mark.skipif(_site("0.32.0") is None, reason="vLLM 0.32.0 is not installed"))])
def test_every_exported_entry_point_of_the_real_libraries_resolves_in_the_shim(major):
    shim = _exported(SHIM)
    for lib, so in _stack(major).items():
        real = _exported(so)
        if lib == "nccl":
            real = {n for n in real if n.startswith(("nccl", "pnccl"))}
        assert len(real) > 50, (lib, so)
        missing = sorted(real - shim)
        assert not missing, f"CUDA {major} {so.name}: {len(missing)} entry points missing, e.g. {missing[:10]}"


def test_the_cuda12_variants_are_versioned_and_the_cuda13_ones_are_the_default():
    out = subprocess.run(["nm", "-D", "--defined-only", str(SHIM)], capture_output=True, text=True, check=True).stdout
    names = {line.split()[-1] for line in out.splitlines()}
    variants = re.findall(r"^EPV\(\w+, (\w+), ([\w.]+)\)", (SRC.parent.parent / "entrypoints.def").read_text(), re.M)
    assert ("cudaMemAdvise", "libcudart.so.12") in variants
    for name, soname in variants:
        assert f"{name}@{soname}" in names and f"{name}@@{soname[:-2]}13" in names, name
    # every other entry point stays unversioned (binds a reference of either version)
    assert "cudaMalloc" in names and not any(n.startswith("cudaMalloc@") for n in names)


def _offsets_program(struct_decl: str, struct_name: str, fields: list[str]) -> str:
    prints = "\n".join(f'  printf("{f} %zu\\n", offsetof(struct {struct_name}, {f}));' for f in fields)
    return (f"#include <cuda_runtime_api.h>\n#include <stddef.h>\n#include <stdio.h>\n{struct_decl}\n"
            f"int main(void) {{\n{prints}\n  printf(\"sizeof %zu\\n\", sizeof(struct {struct_name}));\n  return 0;\n}}\n")


def _run_c(tmp: Path, name: str, text: str, includes: list[Path]) -> str:
    c = tmp / f"{name}.c"
    c.write_text(text)
    exe = tmp / name
    flags = [f for i in includes for f in ("-idirafter", str(i))]
    subprocess.run(["gcc", "-w", *flags, str(c), "-o", str(exe)], check=True, capture_output=True, text=True)
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout


@needs12
def test_the_hand_written_cuda12_device_prop_matches_the_cuda12_header(tmp_path):
    decl = re.search(r"struct rv_cudaDeviceProp12 \{.*?\n\};", SRC.read_text(), re.S).group(0)
    fields = re.findall(r"(\w+)(?:\[\d+\])*;", decl)
    assert len(fields) > 90
    inc13 = [NV13 / "cu13/include", NV13 / "cu13/include/cccl"]
    ours = _run_c(tmp_path, "ours", _offsets_program(decl, "rv_cudaDeviceProp12", fields), inc13)
    # the CUDA 12 runtime wheel ships cuda_runtime_api.h without crt/ and cccl: those come from 13
    inc12 = [_site12() / "nvidia/cuda_runtime/include", *inc13]
    theirs = _run_c(tmp_path, "theirs", _offsets_program("", "cudaDeviceProp", fields), inc12)
    assert ours == theirs
    assert "sizeof 1032" in theirs
