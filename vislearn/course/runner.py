"""The batch runner behind ``vislearn run``: execute the notebook series and report every result.

An instructor runs the whole course with one command. Each notebook is executed by papermill
with the resolved preset and device injected into its ``parameters`` cell; the numbers it records
with ``vislearn.results.record`` and the figures it saves with ``save_figure`` land in its own
folder, because the runner points ``$VISLEARN_OUTPUT_DIR`` there. One run folder looks like::

    runs/20250101-120000-classroom/
        results.json            # run info + every notebook's status, seconds, results, figures
        report.md, report.html  # the same data, readable
        01_vit_from_scratch/
            01_vit_from_scratch.ipynb   # the executed notebook, outputs included
            results.json                # what the notebook recorded
            figures/*.png               # what the notebook saved

A notebook that fails is recorded with its error and the run goes on with the next one.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import PRESET_ENV, ParameterError, resolve_device, resolve_preset
from ..results import OUTPUT_DIR_ENV, STATIC_ENV, write_json_atomic
from .report import error_line, render_html, render_markdown

NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
KERNEL_NAME = "python3"


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
    cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
    for cell in cells:
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


# --------------------------------------------------------------------------- running


@dataclass
class RunSummary:
    """What ``run_series`` did: the run folder, the content of its results.json, the failed stems."""

    out: Path
    results: dict[str, Any]
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every notebook ran to the end."""
        return not self.failed

    @property
    def report_md(self) -> Path:
        return self.out / "report.md"

    @property
    def report_html(self) -> Path:
        return self.out / "report.html"


def run_series(notebooks: Iterable[str | Path] | None = None, preset: str = "auto", device: str = "auto",
               out: str | Path | None = None, timeout: float | None = None, progress: bool = True, *,
               notebooks_dir: str | Path | None = None) -> RunSummary:
    """Execute notebooks with papermill and write ``results.json`` and a report into ``out``.

    Args:
        notebooks: names or paths (see ``resolve_notebooks``); default: the whole series in order.
        preset: ``auto``, ``smoke``, ``classroom`` or ``full``. ``auto`` is resolved here (see
            ``vislearn.config.resolve_preset``) so the run records, and every notebook gets, the
            concrete preset.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``; resolved here (``auto`` becomes the device it picks)
            and passed to every notebook, so the run records the concrete device. A device
            this machine lacks is an error before any notebook starts.
        out: the run folder; default ``runs/<YYYYmmdd-HHMMSS>-<preset>/`` under the current folder.
        timeout: seconds any single cell may run before the notebook counts as failed; None: no limit.
        progress: show a progress bar and one line per notebook.
        notebooks_dir: where the series lives; default: the repository's ``notebooks/``.

    Returns:
        A RunSummary; ``summary.ok`` is False when any notebook failed.
    """
    resolved = resolve_preset(preset)
    device = resolve_device(device).type  # checks the name (a missing GPU fails here), records what "auto" chose
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout <= 0):
        raise ParameterError(f"timeout={timeout!r} must be a positive number of seconds (or None)")
    paths = resolve_notebooks(notebooks, notebooks_dir)
    out = Path(out) if out is not None else Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{resolved}"
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    run: dict[str, Any] = {
        "preset": resolved, "device": device, "started": _now(), "finished": None, "seconds": None,
        "versions": collect_versions(), "notebooks": {},
    }
    start = time.perf_counter()
    bar = _progress_bar(paths, progress)
    for path in bar:
        bar.set_postfix_str(path.stem)
        entry = run_notebook(path, out, preset=resolved, device=device, timeout=timeout, progress=progress)
        run["notebooks"][path.stem] = entry
        if progress:
            _write_line(_status_line(path.stem, entry))
        _save(run, out)  # after every notebook, so an interrupted run still leaves its results
    run["finished"] = _now()
    run["seconds"] = round(time.perf_counter() - start, 2)
    _save(run, out)
    failed = [stem for stem, entry in run["notebooks"].items() if entry["status"] != "ok"]
    return RunSummary(out=out, results=run, failed=failed)


def run_notebook(path: Path, out: Path, *, preset: str, device: str, timeout: float | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Execute one notebook into ``out/<stem>/`` and return its entry for the run's results.json."""
    import papermill  # imported here: it is slow to import and only this function needs it

    path = Path(path).resolve()  # papermill changes into the notebook's folder while it runs
    folder = out / path.stem
    _clear_previous_outputs(folder)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    error = None
    with _environ({OUTPUT_DIR_ENV: str(folder), PRESET_ENV: preset, STATIC_ENV: "1"}):
        try:
            papermill.execute_notebook(
                path, folder / path.name, parameters=dict(PRESET=preset, DEVICE=device),
                kernel_name=KERNEL_NAME, cwd=path.parent, progress_bar=progress, execution_timeout=timeout,
            )
        except Exception as exc:  # a failing notebook is a result to report, not a reason to stop
            error = describe_error(exc, path)
    return {
        "status": "failed" if error else "ok",
        "seconds": round(time.perf_counter() - start, 2),
        "title": notebook_title(path),
        "notebook": f"{path.stem}/{path.name}",
        "results": _read_json(folder / "results.json"),
        "figures": sorted(p.relative_to(out).as_posix() for p in (folder / "figures").glob("*.png")),
        "error": error,
    }


def describe_error(exc: BaseException, path: Path) -> dict[str, Any]:
    """What went wrong in a notebook, as JSON: exception name and value, which cell, traceback.

    ``cell_index`` counts the cells of the notebook as stored (0-based), so a learner can find it;
    ``exec_count`` is the ``In [N]`` number in the executed notebook.
    """
    from papermill.exceptions import PapermillExecutionError, strip_color

    if isinstance(exc, PapermillExecutionError):
        return {
            "ename": exc.ename, "evalue": exc.evalue,
            "cell_index": _source_cell_index(path, exc.source, fallback=exc.cell_index),
            "exec_count": exc.exec_count,
            "traceback": strip_color("\n".join(exc.traceback or [])),
        }
    return {"ename": type(exc).__name__, "evalue": str(exc), "cell_index": None, "exec_count": None,
            "traceback": ""}


def _source_cell_index(path: Path, source: str, fallback: int | None) -> int | None:
    """Index of the cell with this source in the stored notebook (papermill counts its own cells)."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return fallback
    for index, cell in enumerate(cells):
        text = cell.get("source", "")
        if ("".join(text) if isinstance(text, list) else text) == source:
            return index
    return fallback


def collect_versions() -> dict[str, Any]:
    """Versions that make a run reproducible: Python, torch, timm, vislearn, the OS and the GPU."""
    import torch

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": version("timm"),
        "vislearn": version("vislearn"),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


@contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables (the papermill kernel inherits them), restore them afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _clear_previous_outputs(folder: Path) -> None:
    """Remove what an earlier run into the same folder recorded, so the report shows only this run."""
    (folder / "results.json").unlink(missing_ok=True)
    for png in (folder / "figures").glob("*.png"):
        png.unlink()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        return {"unreadable_results_json": str(exc)}


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _progress_bar(paths: list[Path], progress: bool):
    from tqdm.auto import tqdm

    return tqdm(paths, desc="notebooks", unit="nb", disable=not progress)


def _write_line(text: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(text)


def _status_line(stem: str, entry: Mapping[str, Any]) -> str:
    line = f"{stem}: {entry['status']} in {entry['seconds']:.1f} s"
    return line + (f" ({error_line(entry['error'])})" if entry["error"] else "")


def _save(run: dict[str, Any], out: Path) -> None:
    write_json_atomic(out / "results.json", run)
    (out / "report.md").write_text(render_markdown(run), encoding="utf-8")
    (out / "report.html").write_text(render_html(run), encoding="utf-8")
