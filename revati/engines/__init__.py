"""Serving engines as adapters (revati/engines/base.py has the contract).

    engine = engines.get("vllm")            # the default version
    engine = engines.get("vllm", "0.15.1")
"""

from __future__ import annotations

import shutil
from pathlib import Path

from revati.engines.base import EngineAdapter, UnknownEngineError
from revati.engines.sglang import SglangAdapter
from revati.engines.vllm import VllmAdapter

__all__ = ["DEFAULT_ENGINE", "EngineAdapter", "UnknownEngineError", "for_command", "get", "supported"]

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


def for_command(command: list[str]) -> EngineAdapter:
    """The engine a command runs, for `revati exec` without --engine.

    - A program inside an engine version's own environment (`revati engines install`:
      ``<engines dir>/<name>-<version>/bin/...``) runs that version.
    - Otherwise a program or module named after an engine (``sglang``, ``python -m
      sglang.launch_server``; ``vllm serve``) runs that engine's default version.
    - Anything else gets the default engine's switches, as before.
    """
    if not command:
        return get()
    from revati.engines import environments

    program = shutil.which(command[0]) or command[0]
    # Paths as written, not resolved: a venv's bin/python is a link to the base interpreter.
    try:
        rel = Path(program).absolute().relative_to(environments.engines_dir().absolute())
    except ValueError:
        rel = None
    if rel is not None and len(rel.parts) > 1:
        name, _, version = rel.parts[0].partition("-")
        if name in _ADAPTERS and version in _ADAPTERS[name].versions:
            return get(name, version)
    # The program, or the module or script an interpreter runs (`python -m M`, `python X.py`).
    words = [Path(command[0]).name]
    for i, a in enumerate(command[1:3], 1):
        if a == "-m" and i + 1 < len(command):
            words.append(command[i + 1])
        elif not a.startswith("-"):
            words.append(Path(a).name)
            break
    for w in words:
        head = w.split(".", 1)[0].split("-", 1)[0]
        if head in _ADAPTERS:
            return get(head)
    return get()
