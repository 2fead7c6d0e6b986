"""A Timekeeper per time-warp test."""

from __future__ import annotations

import pytest

from revati.timekeeper.timekeeper import Timekeeper


@pytest.fixture
def timekeeper():
    with Timekeeper() as tk:
        yield tk
