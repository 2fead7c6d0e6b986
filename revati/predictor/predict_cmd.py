"""Logic of `revati predict` and `revati predictor train` (the CLI parses arguments only)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence, TextIO

from revati.predictor.descriptor import DescriptorError
from revati.predictor.predictor import Predictor


def predict_main(gpu: str, json_str: str | None = None, jsonl_path: str | None = None,
                 out: TextIO | None = None, predictor: Predictor | None = None) -> int:
    """`revati predict --gpu G (--json '{...}' | --jsonl FILE)`.

    --json prints {"us": <float>}; --jsonl prints one {"us": ...} line per input line (blank
    lines are skipped). A bad descriptor prints `error: ...` naming the field (and the line) to
    stderr and returns 2.

    Returns:
        Process exit code.
    """
    out = out or sys.stdout
    if (json_str is None) == (jsonl_path is None):
        print("error: give exactly one of --json or --jsonl", file=sys.stderr)
        return 2
    try:
        pred = predictor or Predictor.load(gpu)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    if json_str is not None:
        try:
            op = json.loads(json_str)
        except json.JSONDecodeError as e:
            print(f"error: --json is not valid JSON: {e}", file=sys.stderr)
            return 2
        try:
            us = pred.predict_one(op)
        except DescriptorError as e:
            print(f"error: {str(e).removeprefix('ops[0]: ')}", file=sys.stderr)
            return 2
        print(json.dumps({"us": us}), file=out)
        return 0
    path = Path(jsonl_path)
    if not path.exists():
        print(f"error: --jsonl file {path} does not exist", file=sys.stderr)
        return 2
    ops = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            ops.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            print(f"error: {path}:{n}: not valid JSON: {e}", file=sys.stderr)
            return 2
    results = []
    for n, op in ops:
        try:
            results.append(pred.predict_one(op))
        except DescriptorError as e:
            print(f"error: {path}:{n}: {str(e).removeprefix('ops[0]: ')}", file=sys.stderr)
            return 2
    for us in results:
        print(json.dumps({"us": us}), file=out)
    return 0


def train_main(gpus: Sequence[str], out_dir: str | None = None) -> dict[str, list[str]]:
    """`revati predictor train`: fits every family with a profile, per GPU.

    Args:
        gpus: GPU keys with profiles under profiles/<gpu>/.
        out_dir: models root (default: profiles/models); models land in <out_dir>/<gpu>/.
    Returns:
        Trained families by GPU.
    """
    from revati.predictor import paths
    from revati.predictor.training import train_gpu

    root = Path(out_dir) if out_dir else paths.shipped_models_root()
    done: dict[str, list[str]] = {}
    for gpu in gpus:
        models = train_gpu(gpu, out_dir=root / gpu)
        done[gpu] = sorted(models)
    return done
