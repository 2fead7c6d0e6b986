import pytest

from revati.predictor.schema import (
    COMMON_COLUMNS, FAMILY_COLUMNS, SCHEMA_VERSION, Provenance, SchemaError, make_row,
    read_profile, write_profile)


def _gemm_row(m=64, med=12.5):
    return make_row("h100-sxm", "gemm", "mm", {"m": m, "n": 4096, "k": 4096, "dtype": "bf16",
                                                "batch": 1},
                    {"median": med, "mean": 12.7, "min": 12.0, "max": 14.0, "std": 0.3},
                    Provenance(source="test", source_version="abc", date="2026-01-01"),
                    model="x/y", count=20)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_round_trip(tmp_path, suffix):
    rows = [_gemm_row(m) for m in (1, 64, 4096)]
    path = tmp_path / f"gemm{suffix}"
    assert write_profile(path, "gemm", rows) == 3
    back = read_profile(path)
    assert len(back) == 3
    for a, b in zip(rows, back):
        assert set(b) == set(COMMON_COLUMNS) | set(FAMILY_COLUMNS["gemm"])
        assert b["m"] == a["m"] and isinstance(b["m"], int)
        assert b["dur_us_median"] == pytest.approx(a["dur_us_median"])
        assert b["count"] == 20 and b["schema_version"] == SCHEMA_VERSION
        assert b["torch_version"] is None  # empty stays empty


def test_rejects_bad_rows(tmp_path):
    with pytest.raises(SchemaError, match="dur_us_median"):
        _gemm_row(med=-1.0)
    with pytest.raises(SchemaError, match="unknown family"):
        make_row("h100-sxm", "nope", "x", {}, {"median": 1.0}, Provenance("t"))
    with pytest.raises(SchemaError, match="lacks columns"):
        make_row("h100-sxm", "gemm", "x", {"m": 1}, {"median": 1.0}, Provenance("t"))
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(SchemaError, match="common columns"):
        read_profile(bad)
