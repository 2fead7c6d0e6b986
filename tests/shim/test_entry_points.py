"""Every exported entry point of the real libraries exists; unimplemented ones log their
name once and return the API's "not supported" code, never crash, never reach NVIDIA code."""

from __future__ import annotations

import re
import subprocess

from revati.launch.paths import shim_dir

DEF = shim_dir().parent.parent / "entrypoints.def"

STUBS = """
import ctypes, json
lib = ctypes.CDLL("libcuda.so.1")   # the shim, through its libcuda name
nvml = ctypes.CDLL("libnvidia-ml.so.1")
calls = {"cudaArrayGetInfo": lib, "cuArrayCreate_v2": lib, "cublasSrot_v2": lib,
         "cublasLtMatrixTransform": lib, "ncclCommSuspend": lib, "nvmlDeviceGetFanSpeed_v2": nvml}
out = {}
for name, l in calls.items():
    f = getattr(l, name)
    out[name] = [f(None, None, None), f(0, 0)]   # called twice, with junk arguments
print(json.dumps(out))
"""


def test_unimplemented_entry_points_return_not_supported_and_log_once(emulated, tmp_path):
    log = tmp_path / "shim.log"
    r = emulated(STUBS, env={"REVATI_LOG_FILE": str(log)})
    assert r.rc == 0, r.err
    got = r.json()
    expected = {"cudaArrayGetInfo": 801, "cuArrayCreate_v2": 801, "cublasSrot_v2": 15,
                "cublasLtMatrixTransform": 15, "ncclCommSuspend": 5, "nvmlDeviceGetFanSpeed_v2": 3}
    assert got == {k: [v, v] for k, v in expected.items()}
    lines = log.read_text().splitlines()
    for name in expected:
        assert sum(f"entry point {name} called" in line for line in lines) == 1, lines


def test_every_listed_entry_point_is_exported():
    listed = re.findall(r"^EP\(\w+, (\w+), (IMPL|STUB|STUBP)\)", DEF.read_text(), flags=re.M)
    assert len(listed) > 2000
    nm = subprocess.run(["nm", "-D", "--defined-only", str(shim_dir() / "librevati_shim.so")],
                        capture_output=True, text=True, check=True).stdout
    # a name that CUDA 12 and 13 callers bind differently is exported once per symbol version
    # (cudaMemAdvise@libcudart.so.12, cudaMemAdvise@@libcudart.so.13: entrypoints.def's EPV lines)
    exported = {line.split()[-1].split("@")[0] for line in nm.splitlines()}
    missing = [n for n, _ in listed if n not in exported]
    assert not missing, missing[:20]
    # The hot APIs are implemented, not stubbed.
    kinds = dict(listed)
    for name in ["cudaMalloc", "cudaLaunchKernel", "__cudaLaunchKernel", "cublasGemmEx", "cublasLtMatmul",
                 "cuLaunchKernel", "cuLaunchKernelEx", "ncclAllReduce", "nvmlDeviceGetMemoryInfo",
                 "cudaGraphLaunch", "cudaStreamBeginCapture", "cuMemAlloc_v2"]:
        assert kinds[name] == "IMPL", name


PROC = """
import ctypes, json
lib = ctypes.CDLL("libcuda.so.1")
fn = ctypes.c_void_p()
status = ctypes.c_int(-1)
get = lib.cuGetProcAddress_v2
rc = get(b"cuMemAlloc", ctypes.byref(fn), 13000, ctypes.c_uint64(0), ctypes.byref(status))
direct = ctypes.cast(lib.cuMemAlloc_v2, ctypes.c_void_p).value
rc2 = get(b"cuNoSuchFunction", ctypes.byref(ctypes.c_void_p()), 13000, ctypes.c_uint64(0), ctypes.byref(status))
print(json.dumps({"rc": rc, "same": fn.value == direct, "rc_missing": rc2, "status_missing": status.value}))
"""


def test_cu_get_proc_address_resolves_to_the_newest_variant(emulated):
    r = emulated(PROC)
    assert r.rc == 0, r.err
    d = r.json()
    assert d == {"rc": 0, "same": True, "rc_missing": 500, "status_missing": 1}
