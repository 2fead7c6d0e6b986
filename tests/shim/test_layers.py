"""The shim's C files call each other in layers (shim/tools/check_layers.py): a base that calls
nothing, the API files on top, and no loop of calls between files."""

from __future__ import annotations

import importlib.util

import pytest

from revati.launch.paths import REPO_ROOT, shim_dir

_spec = importlib.util.spec_from_file_location("check_layers", REPO_ROOT / "shim" / "tools" / "check_layers.py")
check_layers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_layers)


def test_a_loop_is_found_and_layers_are_ordered():
    g = {"api": {"timeline"}, "timeline": {"base", "trace"}, "trace": {"base"}, "base": set()}
    assert check_layers.find_cycles(g) == []
    assert check_layers.layers(g) == [["base"], ["trace"], ["timeline"], ["api"]]
    g["base"] = {"api"}  # the base calling the top: one loop of all four
    assert check_layers.find_cycles(g) == [["api", "base", "timeline", "trace"]]


def _objects() -> list:
    """The built library's object files: one per shim/src/*.c, and the generated catalog."""
    obj = shim_dir().parent / "obj"
    names = [c.stem for c in (REPO_ROOT / "shim" / "src").glob("*.c")] + ["catalog"]
    objects = [obj / f"{n}.o" for n in names]
    if not all(o.exists() for o in objects):
        pytest.skip(f"the object files are not in {obj} (an installed shim)")
    return objects


def test_the_built_shim_has_no_loop_of_calls():
    graph = check_layers.graph_from_objects(_objects())
    assert check_layers.find_cycles(graph) == []
    levels = check_layers.layers(graph)
    # The base calls nothing of the shim; the entry points are above the timelines.
    assert "base" in levels[0]
    level = {f: k for k, files in enumerate(levels) for f in files}
    assert level["cudart"] > level["graphs"] > level["collectives"] > level["timeline"] > level["trace"]
    assert level["init"] > level["stats"] and level["api"] > level["stats"]


def test_without_the_table_exemption_the_entry_points_make_a_loop():
    """The check is not vacuous: the name table does refer to every entry point."""
    graph = check_layers.graph_from_objects(_objects(), exempt=set())
    cycles = check_layers.find_cycles(graph)
    assert any({"entries", "cudart", "driver"} <= set(c) for c in cycles)
