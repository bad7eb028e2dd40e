"""Files a campaign writes: metrics.csv, summary.json, the resolved config."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any


def write_metrics_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """One row per iteration; columns are the union of keys in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """metrics.csv back as dicts of floats (empty cells become NaN)."""
    with Path(path).open() as fh:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()} for row in csv.DictReader(fh)]


def write_json(data: dict[str, Any], path: Path) -> None:
    """JSON with NaN written as null (valid JSON for every reader)."""
    path.write_text(json.dumps(_nan_to_none(data), indent=2, sort_keys=False) + "\n")


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value
