"""Engineered features of each op family, vectorised over numpy columns.

Each family's features, ideal time, monotone constraints and size columns live in its
module (families/<name>.py); this module is the learned families' view of the registry:
SPECS maps a learned family to its `Family`, whose build() gives the features, monotone the
LightGBM monotone constraint of each feature, size_columns the columns whose training range
is recorded (queries outside it are clipped and rescaled by the roofline, see inference.py),
and ideal() the ideal time used for that rescaling.

NOTE: the models predict log(duration); every feature of a size is a non-decreasing function of
it and carries a +1 monotone constraint, so a prediction never decreases when an op grows
(a bigger GEMM is never faster). Features that are not monotone in size (wave efficiency, say)
are left out on purpose.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from revati.predictor.families import FAMILIES, LEARNED
from revati.predictor.families.base import Family

LEARNED_FAMILIES: tuple[str, ...] = LEARNED
SPECS: dict[str, Family] = {f: FAMILIES[f] for f in LEARNED}


def columns_from_keys(spec: Family, keys: Sequence[tuple]) -> dict[str, np.ndarray]:
    """Turns a list of key tuples (values in spec.columns order) into numpy columns."""
    return spec.columns_of(keys)


def key_of_row(spec: Family, row: dict) -> tuple:
    """The key tuple of a profile row (same layout the descriptor normaliser produces)."""
    return spec.key_of_row(row)
