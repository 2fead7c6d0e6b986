"""revati/envs.py lists every REVATI_* variable that the code reads or sets, and Python reads
them through it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from revati import envs

REPO = Path(__file__).resolve().parent.parent
SOURCES = ["revati", "sidecar", "operator", "shim/src", "charts", "images", "scripts"]
SUFFIXES = {".py", ".c", ".h", ".def", ".sh", ".yaml", ".tpl", ".txt", ""}
NAME = re.compile(r"\bREVATI_[A-Z0-9_]*[A-Z0-9]\b")
#: Words of the REVATI_ prefix that are not variables.
NOT_VARIABLES = {
    "REVATI_REPORT",  # the prefix of the loadgen pod's last log line, which the operator parses
}


def _names() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for root in SOURCES:
        base = REPO / root
        files = [base] if base.is_file() else sorted(base.rglob("*"))
        for f in files:
            if not f.is_file() or f.suffix not in SUFFIXES or "__pycache__" in f.parts or "build" in f.parts:
                continue
            try:
                text = f.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            for m in NAME.finditer(text):
                name = m.group(0)
                if name.endswith("_H") or name in NOT_VARIABLES:  # C include guards
                    continue
                found.setdefault(name, []).append(str(f.relative_to(REPO)))
    return found


def test_every_variable_in_the_code_is_registered():
    found = _names()
    assert "REVATI_TIMEWARP" in found and "REVATI_ZMQ_LIB" in found  # the scan reads C and Python
    missing = {n: sorted(set(where))[:3] for n, where in found.items() if n not in envs.ENV_VARS}
    assert not missing, f"register these in revati/envs.py: {missing}"


def test_python_reads_revati_variables_only_through_envs():
    direct = re.compile(r"""(os\.environ\.get|os\.getenv|os\.environ\[)\(?\s*["']REVATI_""")
    offenders = []
    for f in sorted((REPO / "revati").rglob("*.py")) + sorted((REPO / "operator").rglob("*.py")):
        if f.name == "envs.py":
            continue
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if direct.search(line):
                offenders.append(f"{f.relative_to(REPO)}:{i}: {line.strip()}")
    assert not offenders, "read these through revati.envs.get:\n" + "\n".join(offenders)


def test_unregistered_names_are_an_error(monkeypatch):
    monkeypatch.setenv("REVATI_SEED", "7")
    assert envs.get("REVATI_SEED") == "7"
    with pytest.raises(KeyError, match="REVATI_NOT_A_VARIABLE is not a registered"):
        envs.get("REVATI_NOT_A_VARIABLE")
