"""The one ctypes binding of the functions that Python calls in C (shim/src/revati_api.h).

Two libraries:

- the shim (librevati_shim.so). Inside an emulated process it is LD_PRELOADed, so its symbols
  are global and :func:`preloaded` binds them from the process itself (``CDLL(None)``); it
  returns None outside the emulator, where callers do nothing.
- the Timekeeper's /proc scanner (librevati_tk.so), loaded from the shim's build folder by
  :func:`tk_scanner`, which raises :class:`ShimNotBuiltError` when it is not built.

Each function's argument and result types are written once, in the tables below, in the order
of the header (tests/shim/test_shim_api.py checks them against it).
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from revati.launch.paths import SHIM_NAME, ShimNotBuiltError, shim_dir

TK_NAME = "librevati_tk.so"

_i32p = ctypes.POINTER(ctypes.c_int32)
_i64p = ctypes.POINTER(ctypes.c_int64)

#: librevati_shim.so: name -> (result type, argument types)
SHIM_FUNCTIONS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "revati_flush": (None, ()),
    "revati_clock_freeze": (ctypes.c_int, (ctypes.c_int,)),
    "revati_anatomy_fields": (ctypes.c_char_p, ()),
    "revati_thread_anatomy": (ctypes.c_int, (_i64p, ctypes.c_int)),
    "revati_anatomy_push": (None, (ctypes.c_int,)),
    "revati_anatomy_pop": (None, (ctypes.c_int,)),
    "revati_set_model": (None, (ctypes.c_int,) * 5),
    "revati_set_moe": (None, (ctypes.c_int,) * 5),
    "revati_set_mla": (None, (ctypes.c_int,) * 4),
    "revati_set_step": (None, (ctypes.c_int64,) * 10),
}

#: librevati_tk.so: name -> (result type, argument types)
TK_FUNCTIONS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "rv_tk_scan": (ctypes.c_int64, (_i32p, ctypes.c_int, _i64p, ctypes.c_int64)),
    "rv_tk_quiet": (ctypes.c_int, (_i32p, ctypes.c_int, _i32p, ctypes.c_int)),
    "rv_tk_counters": (None, (_i64p,)),
}


class _Bound:
    """The functions of one table, bound from one library with their types."""

    def __init__(self, lib: ctypes.CDLL, table: dict[str, tuple[Any, tuple[Any, ...]]]) -> None:
        for name, (restype, argtypes) in table.items():
            fn = getattr(lib, name)  # AttributeError: the library lacks it
            fn.restype = restype
            fn.argtypes = list(argtypes)
            setattr(self, name, fn)


class ShimAPI(_Bound):
    """librevati_shim.so's functions for Python (see revati_api.h for each one's contract)."""

    revati_flush: Any
    revati_clock_freeze: Any
    revati_anatomy_fields: Any
    revati_thread_anatomy: Any
    revati_anatomy_push: Any
    revati_anatomy_pop: Any
    revati_set_model: Any
    revati_set_moe: Any
    revati_set_mla: Any
    revati_set_step: Any


class TkAPI(_Bound):
    """librevati_tk.so's functions."""

    rv_tk_scan: Any
    rv_tk_quiet: Any
    rv_tk_counters: Any


class ShimOutdatedError(ShimNotBuiltError):
    """The built shim lacks a function that this Python side calls (built from older sources)."""


@functools.cache
def _missing_exports(path: str, mtime_ns: int) -> tuple[str, ...]:
    # NOTE: the names of a shared library's exported functions are NUL-terminated strings of its
    # dynamic string table; reading the file (not dlopen, which would run the shim's
    # constructors in this process) is enough to tell a stale build
    data = Path(path).read_bytes()
    return tuple(n for n in SHIM_FUNCTIONS if b"\0" + n.encode() + b"\0" not in data)


def check_built(folder: Path) -> None:
    """Raises ShimOutdatedError when the shim in `folder` lacks a function of SHIM_FUNCTIONS: a
    stale build would leave the semantic layer off in every engine process (no model, no steps,
    every kernel described by its launch geometry) while the run went on."""
    lib = folder / SHIM_NAME
    missing = _missing_exports(str(lib), lib.stat().st_mtime_ns)
    if missing:
        raise ShimOutdatedError(
            f"the shim at {lib} is older than revati's Python side: it lacks {', '.join(missing)}. "
            "Rebuild it with `make -C shim` (scripts/setup.sh does).")


@functools.cache
def preloaded(hold_gil: bool = False) -> ShimAPI | None:
    """The shim's functions in this process, or None when the shim is not preloaded here.

    Args:
        hold_gil: call them through ``PyDLL`` (the GIL is kept across the call) instead of
            ``CDLL`` (it is released and taken again).
    NOTE: a call that drops the GIL may wait for it again behind another thread (up to the GIL's
    5 ms switch interval); the step anatomy's counter reads, which are followed by a clock
    read, hold it.
    """
    try:
        lib = (ctypes.PyDLL if hold_gil else ctypes.CDLL)(None)  # the preloaded shim's symbols are global
        return ShimAPI(lib, SHIM_FUNCTIONS)
    except (OSError, AttributeError):
        return None


@dataclass
class TkScanner:
    """rv_tk_scan with its output buffer (3 int64 per thread, cap threads), and rv_tk_quiet."""

    fn: Any
    out: Any
    cap: int
    quiet: Any = None
    counters_fn: Any = None

    def counters(self) -> dict[str, int]:
        """What rv_tk_quiet did so far (see rv_tk_counters)."""
        out = (ctypes.c_int64 * 4)()
        if self.counters_fn is not None:
            self.counters_fn(out)
        return dict(zip(("samples", "counts_samples", "ring_samples", "state_reads"), out))


@functools.cache
def tk_library() -> TkAPI:
    """librevati_tk.so from the shim's build folder.

    Raises:
        ShimNotBuiltError: the shim, or this library next to it, is not built.
    """
    path = shim_dir() / TK_NAME
    if not path.exists():
        raise ShimNotBuiltError(f"{path} is missing: build the shim with `make -C shim`")
    return TkAPI(ctypes.CDLL(str(path)), TK_FUNCTIONS)


def tk_scanner(cap: int = 16384) -> TkScanner:
    """A scanner for up to cap threads (one per caller: rv_tk_scan is not thread-safe).

    Raises:
        ShimNotBuiltError: librevati_tk.so is not built.
    """
    lib = tk_library()
    return TkScanner(lib.rv_tk_scan, (ctypes.c_int64 * (3 * cap))(), cap, lib.rv_tk_quiet, lib.rv_tk_counters)
