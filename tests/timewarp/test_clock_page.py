"""The clock page is ABI: the C header and the Python mirror must agree field by field."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from revati.timekeeper import clock_page as cp

SHIM = Path(__file__).resolve().parents[2] / "shim"


@pytest.fixture(scope="module")
def c_layout() -> dict:
    subprocess.run(["make", "-s", "-C", str(SHIM), "build/tests/clock_page_layout"], check=True)
    out = subprocess.run([str(SHIM / "build/tests/clock_page_layout"), "--json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def test_python_mirror_matches_the_c_header(c_layout):
    assert c_layout["size"] == cp.PAGE_SIZE
    assert c_layout["version"] == cp.LAYOUT_VERSION
    assert c_layout["magic"] == cp.MAGIC
    py = {name: [off, cp.field_size(name)] for name, (off, _) in cp.FIELDS.items()}
    assert py == c_layout["fields"]


def test_create_publish_and_jump(tmp_path):
    page = cp.ClockPage.create(tmp_path / "clock", sock_path="/tmp/x.sock", protocol_version=1)
    try:
        reader = cp.ClockPage(tmp_path / "clock")
        assert reader.get("magic") == cp.MAGIC
        assert reader.get("sock_path") == "/tmp/x.sock"
        assert reader.get("flags") & cp.FLAG_ACTIVE
        # V starts on the real monotonic clock.
        real = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        assert abs(reader.now_ns() - real) < 50_000_000
        before = reader.now_ns()
        skip = page.jump_to(before + 3_000_000_000)
        assert 2_900_000_000 < skip <= 3_000_000_000
        after = reader.now_ns()
        assert after - before >= 3_000_000_000
        assert reader.get("epoch") == 1 and reader.get("jumped_ns") == skip
        assert reader.get("seq") % 2 == 0
        assert page.jump_to(0) == 0  # never backwards
        reader.close()
    finally:
        page.close()
    assert not (tmp_path / "clock").exists()


def test_dilation_scales_real_time():
    s = cp.Snapshot(r0_ns=1000, offset_ns=5000, dilation_ppm=2_000_000)
    assert s.virtual(3000) == 6000
