"""Serving engines as adapters (revati/engines/base.py has the contract).

    engine = engines.get("vllm")            # the default version
    engine = engines.get("vllm", "0.32.0")
"""

from __future__ import annotations

from revati.engines.base import EngineAdapter, UnknownEngineError
from revati.engines.sglang import SglangAdapter
from revati.engines.vllm import VllmAdapter

__all__ = ["DEFAULT_ENGINE", "EngineAdapter", "UnknownEngineError", "get", "supported"]

_ADAPTERS: dict[str, type[EngineAdapter]] = {a.name: a for a in (VllmAdapter, SglangAdapter)}
DEFAULT_ENGINE = "vllm"


def supported() -> dict[str, tuple[str, ...]]:
    """Every engine and its versions, the default version first."""
    return {name: a.versions for name, a in _ADAPTERS.items()}


def _choices() -> str:
    return "; ".join(f"{n} {', '.join(v)}" for n, v in supported().items())


def get(name: str = DEFAULT_ENGINE, version: str | None = None) -> EngineAdapter:
    """The adapter of engine `name` at `version` (None: its default version).

    Raises:
        UnknownEngineError: the engine or the version is not supported; names the supported ones.
    """
    adapter = _ADAPTERS.get(name)
    if adapter is None:
        raise UnknownEngineError(f"unknown engine {name!r}; supported: {_choices()}")
    if version is not None and version not in adapter.versions:
        raise UnknownEngineError(f"{name} {version} is not supported; supported: {_choices()}")
    return adapter(version)
