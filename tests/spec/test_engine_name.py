"""spec.engine.name picks the engine; an absent version is that engine's default."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from revati.spec import SpecError, spec_from_dict

REPO = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((REPO / "examples" / "default.yaml").read_text())


def _engine(**engine) -> dict:
    d = copy.deepcopy(DEFAULT)
    d["spec"]["engine"] = engine
    return d


def test_an_absent_version_is_the_engines_default():
    assert spec_from_dict(_engine()).spec.engine.version == "0.33.0"
    s = spec_from_dict(_engine(name="sglang"))
    assert (s.spec.engine.name, s.spec.engine.version) == ("sglang", "0.5.23")


def test_a_version_of_the_other_engine_is_an_error_naming_the_engines_versions():
    with pytest.raises(SpecError, match=r"spec\.engine\.version.*SGLang 0\.32\.0 is not supported.*supported: 0\.5\.23"):
        spec_from_dict(_engine(name="sglang", version="0.32.0"))
    with pytest.raises(SpecError, match=r"spec\.engine\.name"):
        spec_from_dict(_engine(name="tgi"))


def test_sglangs_parallelism_and_model_flags_are_the_emulators():
    with pytest.raises(SpecError, match=r"tp-size.*set by the emulator"):
        spec_from_dict(_engine(name="sglang", args={"tp-size": 2}))
