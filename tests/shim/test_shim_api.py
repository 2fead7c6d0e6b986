"""The functions Python calls in C: declared once (shim/src/revati_api.h), bound once
(revati/launch/shim_api.py) with the same types, exported by the built libraries, and usable
from an emulated process and from the Timekeeper."""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys

import pytest

from revati.launch import shim_api
from revati.launch.paths import REPO_ROOT, SHIM_NAME, ShimNotBuiltError, shim_dir

HEADER = REPO_ROOT / "shim" / "src" / "revati_api.h"

#: C types of the header -> ctypes
C_TYPES = {
    "void": None,
    "int": ctypes.c_int,
    "int64_t": ctypes.c_int64,
    "const char *": ctypes.c_char_p,
    "int64_t *": ctypes.POINTER(ctypes.c_int64),
    "const int32_t *": ctypes.POINTER(ctypes.c_int32),
}


def _declarations() -> dict[str, dict[str, tuple[object, list[object]]]]:
    """{library section: {name: (result type, [argument types])}} from the header."""
    text = re.sub(r"/\*.*?\*/", lambda m: "SECTION:" + m.group(0) if ".so" in m.group(0) else " ",
                  HEADER.read_text(), flags=re.S)
    out: dict[str, dict[str, tuple[object, list[object]]]] = {}
    section = ""
    for chunk in re.split(r"(SECTION:/\*.*?\*/)", text, flags=re.S):
        if chunk.startswith("SECTION:"):
            section = "tk" if "librevati_tk.so" in chunk else "shim"
            continue
        for ret, name, params in re.findall(r"RV_API\s+([\w\s*]+?)\s*\b(\w+)\(([^)]*)\);", chunk):
            args = []
            for p in (x.strip() for x in params.split(",")):
                if p in ("", "void"):
                    continue
                ctype = re.sub(r"\s*\b\w+$", "", p)  # drop the parameter's name
                args.append(C_TYPES[re.sub(r"\s*\*", " *", ctype)])
            out.setdefault(section, {})[name] = (C_TYPES[ret.strip()], args)
    return out


def test_the_header_is_read_whole():
    decl = _declarations()
    assert set(decl) == {"shim", "tk"}
    # every RV_API declaration was parsed (the one more RV_API is its #define)
    assert len(decl["shim"]) + len(decl["tk"]) == HEADER.read_text().count("RV_API") - 1


@pytest.mark.parametrize("section, table", [("shim", shim_api.SHIM_FUNCTIONS), ("tk", shim_api.TK_FUNCTIONS)])
def test_every_declared_function_is_bound_with_its_types(section, table):
    decl = _declarations()[section]
    assert list(table) == list(decl), "the binding lists the header's functions, in its order"
    for name, (restype, argtypes) in table.items():
        assert (restype, list(argtypes)) == decl[name], name


def _exported(lib: str) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(shim_dir() / lib)], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[-1] for line in out.splitlines()}


def test_the_libraries_export_what_the_header_declares_and_no_other_api_function():
    decl = _declarations()
    shim = _exported(SHIM_NAME)
    assert set(decl["shim"]) <= shim
    # A new function for Python goes in the header (and so in the binding).
    assert {s for s in shim if s.startswith("revati_")} == set(decl["shim"])
    assert {s for s in _exported(shim_api.TK_NAME) if s.startswith("rv_")} == set(decl["tk"])


def test_outside_the_emulator_there_is_no_preloaded_shim():
    if os.environ.get("LD_PRELOAD", "").endswith(SHIM_NAME):
        pytest.skip("this process runs under the shim")
    assert shim_api.preloaded() is None
    assert shim_api.preloaded(hold_gil=True) is None


PROGRAM = r"""
import ctypes, json
from revati.launch import shim_api
api = shim_api.preloaded()
gil = shim_api.preloaded(hold_gil=True)
assert api is not None and gil is not None
buf = (ctypes.c_int64 * 4)()
api.revati_set_model(32, 8, 128, 4096, 14336)
api.revati_set_step(*range(10))
api.revati_anatomy_push(1)
api.revati_anatomy_pop(1)
api.revati_flush()
print(json.dumps({"fields": api.revati_anatomy_fields().decode(), "read": gil.revati_thread_anatomy(buf, 4),
                  "freeze": api.revati_clock_freeze(1), "same": shim_api.preloaded() is api,
                  "gil": [bool(type(f)._flags_ & ctypes._FUNCFLAG_PYTHONAPI)
                          for f in (gil.revati_thread_anatomy, api.revati_thread_anatomy)]}))
"""


def test_an_emulated_process_binds_the_preloaded_shim(tmp_path):
    """Without the time warp: the counters and the freeze answer -1, the rest are no-ops."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVATI_")}
    env.update(LD_PRELOAD=str(shim_dir() / SHIM_NAME), REVATI_PREDICTOR="constant:1ms",
               PYTHONPATH=str(REPO_ROOT))
    r = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    head, _, states = out["fields"].partition(";")
    assert head.split(",")[0] == "now" and "frozen" in states.split(",")
    assert out["read"] == -1 and out["freeze"] == -1 and out["same"] is True
    assert out["gil"] == [True, False]  # PyDLL keeps the GIL, CDLL drops it


def test_the_tk_scanner_reads_this_process():
    shim_api.tk_library.cache_clear()
    scanner = shim_api.tk_scanner(cap=4096)
    pids = (ctypes.c_int32 * 1)(os.getpid())
    n = scanner.fn(pids, 1, scanner.out, scanner.cap)
    # This thread is running: the scan stops at it (-1), or every thread was idle (a count).
    assert n == -1 or n >= 1
    assert scanner.quiet(pids, 1, pids, 0) in (-1, 0, 1)


def test_a_missing_tk_library_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / SHIM_NAME).write_bytes(b"")  # a shim folder without librevati_tk.so
    monkeypatch.setenv("REVATI_SHIM_DIR", str(tmp_path))
    shim_api.tk_library.cache_clear()
    try:
        with pytest.raises(ShimNotBuiltError, match="librevati_tk.so is missing"):
            shim_api.tk_scanner()
    finally:
        shim_api.tk_library.cache_clear()


def test_a_stale_shim_build_is_refused_before_a_run(tmp_path):
    # a shim built from older sources lacks a function the Python side binds: the semantic layer
    # would silently stay off in every engine process, so the environment builder refuses it
    from revati.launch import shim_api
    from revati.launch.env import emulator_env
    from revati.launch.paths import SHIM_NAME, shim_dir

    shim_api.check_built(shim_dir())  # the current build has them all
    data = (shim_dir() / SHIM_NAME).read_bytes().replace(b"\0revati_set_mla\0", b"\0revati_set_xyz\0")
    (tmp_path / SHIM_NAME).write_bytes(data)
    with pytest.raises(shim_api.ShimOutdatedError, match="revati_set_mla.*make -C shim"):
        shim_api.check_built(tmp_path)
    import os
    old = os.environ.get("REVATI_SHIM_DIR")
    os.environ["REVATI_SHIM_DIR"] = str(tmp_path)
    try:
        with pytest.raises(shim_api.ShimOutdatedError):
            emulator_env("h100-sxm")
    finally:
        if old is None:
            del os.environ["REVATI_SHIM_DIR"]
        else:
            os.environ["REVATI_SHIM_DIR"] = old
