"""The profile schema: one row is one measured op timing on one GPU.

The schema is versioned (``SCHEMA_VERSION``) and documented in docs/predictor.md. Profiles are
stored as plain CSV under ``profiles/<gpu>/<family>.csv``: every file has the common columns
first, then the feature columns of its family. Durations are always microseconds.

NOTE: reading profiles uses the standard library (csv), so it needs neither pandas nor
pyarrow; the columns come from the family registry (revati.predictor.families).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from revati.predictor.families import FAMILIES as _FAMILIES
from revati.predictor.families.base import column_type

SCHEMA_VERSION = 1

# Common columns, in file order. Duration statistics are microseconds; count is the number of
# repeated measurements behind the statistics (empty where the source does not say).
COMMON_COLUMNS: tuple[str, ...] = (
    "schema_version",
    "gpu",
    "family",
    "op",
    "dur_us_median",
    "dur_us_mean",
    "dur_us_min",
    "dur_us_max",
    "dur_us_std",
    "count",
    "source",
    "source_version",
    "source_path",
    "model",
    "date",
    "torch_version",
    "cuda_version",
    "driver_version",
)

# Feature columns of each family: the fields of its key (families/<name>.py, where each
# column is described), in order. The op descriptor (see revati.predictor.descriptor) uses the
# same names where it can.
FAMILY_COLUMNS: dict[str, tuple[str, ...]] = {n: f.columns for n, f in _FAMILIES.items()}

FAMILIES: tuple[str, ...] = tuple(FAMILY_COLUMNS)

# Column types: the common integer and float columns, and each key field by its annotation.
INT_COLUMNS = frozenset({"schema_version", "count"} | {
    c for f in _FAMILIES.values() for c in f.columns if column_type(f.key, c) == "int"})
FLOAT_COLUMNS = frozenset({
    "dur_us_median", "dur_us_mean", "dur_us_min", "dur_us_max", "dur_us_std"} | {
    c for f in _FAMILIES.values() for c in f.columns if column_type(f.key, c) == "float"})


class SchemaError(ValueError):
    """A profile row or file does not follow the schema."""


def columns_for(family: str) -> tuple[str, ...]:
    """Returns the full column list (common, then family features) of one family."""
    if family not in FAMILY_COLUMNS:
        raise SchemaError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return COMMON_COLUMNS + FAMILY_COLUMNS[family]


@dataclass(frozen=True)
class Provenance:
    """Where a batch of rows came from. Empty strings where the source does not say."""

    source: str
    source_version: str = ""
    source_path: str = ""
    date: str = ""
    torch_version: str = ""
    cuda_version: str = ""
    driver_version: str = ""


def make_row(gpu: str, family: str, op: str, features: dict[str, Any],
             stats_us: dict[str, float | None], prov: Provenance, model: str = "",
             count: int | None = None) -> dict[str, Any]:
    """Builds one schema row and validates it.

    Args:
        gpu: catalog key (h100-sxm, a100-80gb-sxm, ...) or another GPU key such as a40.
        family: one of FAMILIES.
        op: the source's own name of the op (e.g. attn_pre_proj), for traceability.
        features: the family's feature columns.
        stats_us: median (required), mean, min, max, std in microseconds.
        prov: provenance.
        model: the model config the row was measured for, where there is one.
        count: repetitions behind the statistics, where known.
    Returns:
        A dict with exactly the family's columns.
    """
    row: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "gpu": gpu, "family": family, "op": op,
        "dur_us_median": stats_us.get("median"), "dur_us_mean": stats_us.get("mean"),
        "dur_us_min": stats_us.get("min"), "dur_us_max": stats_us.get("max"),
        "dur_us_std": stats_us.get("std"), "count": count,
        "source": prov.source, "source_version": prov.source_version,
        "source_path": prov.source_path, "model": model, "date": prov.date,
        "torch_version": prov.torch_version, "cuda_version": prov.cuda_version,
        "driver_version": prov.driver_version,
    }
    row.update(features)
    validate_row(row)
    return row


def validate_row(row: dict[str, Any]) -> None:
    """Raises SchemaError naming the offending column if `row` breaks the schema."""
    family = row.get("family")
    cols = columns_for(str(family))
    missing = [c for c in cols if c not in row]
    if missing:
        raise SchemaError(f"{family} row lacks columns {missing}")
    extra = [c for c in row if c not in cols]
    if extra:
        raise SchemaError(f"{family} row has unknown columns {extra}")
    if row["schema_version"] != SCHEMA_VERSION:
        raise SchemaError(f"schema_version {row['schema_version']} != {SCHEMA_VERSION}")
    med = row["dur_us_median"]
    if med is None or not math.isfinite(float(med)) or float(med) < 0:
        raise SchemaError(f"dur_us_median must be a finite non-negative number, got {med!r}")
    for c in FAMILY_COLUMNS[family]:
        if c in INT_COLUMNS and (row[c] is None or int(row[c]) < 0):
            raise SchemaError(f"{family}.{c} must be a non-negative integer, got {row[c]!r}")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return f"{value:.6g}"
    return str(value)


def _parse(col: str, text: str) -> Any:
    if text == "":
        return None
    if col in INT_COLUMNS:
        return int(float(text)) if ("." in text or "e" in text) else int(text)
    if col in FLOAT_COLUMNS:
        return float(text)
    return text


def _open(path: Path, mode: str) -> io.TextIOBase:
    # NOTE: shipped profiles are gzip-compressed CSV (.csv.gz): the provenance columns repeat on
    # every row, so compression takes the data from ~60 MB to a few MB. Plain .csv works too.
    if path.suffix == ".gz":
        # mtime=0 keeps the compressed bytes, and so the data hash, reproducible.
        raw = gzip.GzipFile(path, mode + "b", mtime=0) if mode == "w" else gzip.open(path, "rb")
        return io.TextIOWrapper(raw, newline="", encoding="utf-8")
    return path.open(mode, newline="", encoding="utf-8")


def write_profile(path: str | Path, family: str, rows: Iterable[dict[str, Any]]) -> int:
    """Writes rows of one family to a CSV file; returns the row count."""
    cols = columns_for(family)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with _open(path, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for row in rows:
            if row.get("family") != family:
                raise SchemaError(f"row of family {row.get('family')!r} written to {family} file")
            w.writerow([_fmt(row.get(c)) for c in cols])
            n += 1
    return n


def read_profile(path: str | Path) -> list[dict[str, Any]]:
    """Reads one profile CSV, checking its header and converting column types."""
    path = Path(path)
    with _open(path, "r") as f:
        r = csv.reader(f)
        header = next(r, None)
        if header is None:
            raise SchemaError(f"{path}: empty file")
        if tuple(header[: len(COMMON_COLUMNS)]) != COMMON_COLUMNS:
            raise SchemaError(f"{path}: header does not start with the common columns")
        rows = []
        for line_no, values in enumerate(r, start=2):
            if len(values) != len(header):
                raise SchemaError(f"{path}:{line_no}: {len(values)} values, {len(header)} columns")
            row = {c: _parse(c, v) for c, v in zip(header, values)}
            if row["schema_version"] != SCHEMA_VERSION:
                raise SchemaError(f"{path}:{line_no}: schema_version {row['schema_version']}")
            rows.append(row)
    return rows


def profile_path(root: str | Path, gpu: str, family: str) -> Path:
    """Where the profile of one (gpu, family) lives under a profiles root.

    An existing plain <family>.csv wins (e.g. one written by `revati profile`); otherwise the
    shipped <family>.csv.gz.
    """
    plain = Path(root) / gpu / f"{family}.csv"
    return plain if plain.exists() else plain.with_suffix(".csv.gz")
