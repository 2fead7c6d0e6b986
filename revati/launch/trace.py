"""The merge of the per-process trace parts (REVATI_TRACE) into one Perfetto trace."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def merge_trace(path: str | os.PathLike) -> int:
    """Merges <path>.parts/*.jsonl into one Chrome trace at path. Returns the event count."""
    path = Path(path)
    parts = path.with_name(path.name + ".parts")
    events = []
    for f in sorted(parts.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a process killed mid-write leaves a truncated last line
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ns"}))
    shutil.rmtree(parts, ignore_errors=True)
    return len(events)
