"""Measured results and key figures, recorded for the batch runner.

A notebook calls ``record(...)`` with the numbers it measured and ``save_figure(fig, name)``
for the figures worth putting in the report. When the batch runner (``vislearn run``) executes
the notebook it sets ``$VISLEARN_OUTPUT_DIR``; both calls then also write there
(``results.json`` and ``figures/NAME.png``). Run by hand, they only display.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

OUTPUT_DIR_ENV = "VISLEARN_OUTPUT_DIR"
STATIC_ENV = "VISLEARN_STATIC"  # set under batch execution: widgets fall back to static figures


def output_dir() -> Path | None:
    """The folder the batch runner gave this notebook, or None when run by hand."""
    value = os.environ.get(OUTPUT_DIR_ENV)
    return Path(value) if value else None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def record(**metrics: Any) -> dict[str, Any]:
    """Record measured results by name: ``record(test_accuracy=0.891, params=210_000)``.

    Returns every result recorded so far in this run folder (or just these, run by hand).
    """
    metrics = {k: _jsonable(v) for k, v in metrics.items()}
    folder = output_dir()
    if folder is None:
        return metrics
    path = folder / "results.json"
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing.update(metrics)
    write_json_atomic(path, existing)
    return existing


def save_figure(fig, name: str, *, dpi: int = 110) -> Path | None:
    """Save a matplotlib figure as ``figures/NAME.png`` in the run folder; None when run by hand."""
    folder = output_dir()
    if folder is None:
        return None
    path = folder / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: list[Mapping[str, Any]]) -> str:
    """A markdown table with one column per key (first row's order, then any new keys)."""
    if not rows:
        return ""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(format_value(row.get(c, ""))) for c in columns) + " |")
    return "\n".join(lines)


def _cell(text: Any) -> str:
    """Text safe in a markdown table cell: a pipe (``KL(t || s)``) would end the cell, a newline the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


class Table:
    """A small results table that renders as markdown in Jupyter and as text elsewhere."""

    def __init__(self, rows: list[Mapping[str, Any]]):
        self.rows = [dict(r) for r in rows]

    def _repr_markdown_(self) -> str:
        return markdown_table(self.rows)

    def __repr__(self) -> str:
        return markdown_table(self.rows)
