"""Finding the notebooks of the series: ``NN_topic.ipynb`` in course order, by number, name or path."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..config import ParameterError

NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"


def default_notebooks_dir() -> Path:
    """The course's ``notebooks/`` folder, next to the ``vislearn`` package in the repository."""
    return Path(__file__).resolve().parents[2] / "notebooks"


# --------------------------------------------------------------------------- finding notebooks


def available_notebooks(notebooks_dir: str | Path | None = None) -> list[Path]:
    """The numbered notebooks ``NN_topic.ipynb`` of the series, in course order."""
    folder = Path(notebooks_dir) if notebooks_dir is not None else default_notebooks_dir()
    return sorted(folder.glob(NOTEBOOK_PATTERN))


def notebook_title(path: str | Path) -> str:
    """The first markdown heading of a notebook (without the ``#``), or its file stem if none."""
    try:
        cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):   # unreadable, not JSON, or not a notebook: no title
        return Path(path).stem
    for cell in cells if isinstance(cells, list) else []:
        if not isinstance(cell, dict):
            continue
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        for line in source.splitlines():
            match = re.match(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", line)
            if match:
                return match.group(1)
    return Path(path).stem


def resolve_notebooks(names: Iterable[str | Path] | None = None,
                      notebooks_dir: str | Path | None = None) -> list[Path]:
    """Turn notebook names into paths, keeping the given order and dropping repeats.

    Args:
        names: each one of ``01``, ``01_vit_from_scratch``, ``01_vit_from_scratch.ipynb``, or a
            path to any ``.ipynb`` file. None (or empty) means the whole series.
        notebooks_dir: where the series lives; default: the repository's ``notebooks/``.

    Raises:
        ParameterError: a name matches no notebook (or several), or there are no notebooks at all.
    """
    folder = Path(notebooks_dir) if notebooks_dir is not None else default_notebooks_dir()
    series = available_notebooks(folder)
    if not names:
        if not series:
            raise ParameterError(f"no notebooks matching {NOTEBOOK_PATTERN} in {folder}")
        return series
    paths: list[Path] = []
    for name in names:
        path = _resolve_one(name, series, folder)
        if path not in paths:
            paths.append(path)
    return paths


def _resolve_one(name: str | Path, series: Sequence[Path], folder: Path) -> Path:
    text = str(name)
    as_path = Path(text).expanduser()
    if as_path.is_file():
        if as_path.suffix != ".ipynb":
            raise ParameterError(f"notebook {text!r} is not a .ipynb file")
        return as_path.resolve()
    stem = text[: -len(".ipynb")] if text.endswith(".ipynb") else text
    matches = [p for p in series if p.stem == stem] or [p for p in series if p.stem.startswith(stem + "_")]
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(p.stem for p in (matches or series)) or f"none (no {NOTEBOOK_PATTERN} in {folder})"
    if matches:
        raise ParameterError(f"notebook {text!r} is ambiguous; it matches: {names}")
    raise ParameterError(f"notebook {text!r} not found; available notebooks: {names}")
