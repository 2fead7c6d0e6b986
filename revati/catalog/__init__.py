"""The device catalog: virtual GPUs the emulator can present (see gpus.toml)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

CATALOG_PATH = Path(__file__).with_name("gpus.toml")
DEFAULT_GPU = "h100-sxm"


@dataclass(frozen=True)
class GpuSpec:
    """One catalog entry. Field names and units mirror gpus.toml."""

    key: str
    name: str
    memory_mib: int
    sm_count: int
    cc_major: int
    cc_minor: int
    l2_bytes: int
    sm_clock_mhz: int
    mem_clock_mhz: int
    mem_bus_width_bits: int
    smem_per_block_optin_bytes: int
    smem_per_sm_bytes: int
    max_threads_per_sm: int
    regs_per_sm: int
    power_limit_w: int
    pcie_gen: int
    nvlink: bool
    interconnect_gbps: float
    peak_tflops_bf16: float
    peak_tflops_fp8: float
    peak_tflops_fp32: float
    peak_tflops_tf32: float
    mem_bw_gbps: float
    max_gpus_per_node: int

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024 * 1024


@cache
def load_catalog() -> dict[str, GpuSpec]:
    """Returns every catalog entry by key, in file order."""
    raw = tomllib.loads(CATALOG_PATH.read_text())
    names = {f.name for f in fields(GpuSpec)} - {"key"}
    out: dict[str, GpuSpec] = {}
    for key, table in raw.items():
        missing = names - table.keys()
        extra = table.keys() - names
        if missing or extra:
            raise ValueError(f"gpus.toml [{key}]: missing {sorted(missing)}, unknown {sorted(extra)}")
        out[key] = GpuSpec(key=key, **table)
    return out


def get_gpu(key: str) -> GpuSpec:
    """Looks up one GPU by catalog key, with an error that lists the choices."""
    catalog = load_catalog()
    if key not in catalog:
        raise KeyError(f"unknown GPU {key!r}; the catalog has: {', '.join(catalog)}")
    return catalog[key]
