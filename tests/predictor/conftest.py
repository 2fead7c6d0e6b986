"""Shared fixtures of the predictor tests."""

from __future__ import annotations

import pytest

from revati.predictor import paths


@pytest.fixture(scope="session")
def shared_data():
    root = paths.shared_data_root()
    if not root.is_dir():
        pytest.skip(f"shared profile data not found at {root} (set REVATI_PROFILE_DATA)")
    return root


@pytest.fixture(scope="session")
def h100():
    from revati.predictor import Predictor

    p = Predictor.load("h100-sxm")
    assert p.models, "no shipped models for h100-sxm under profiles/models/"
    return p
