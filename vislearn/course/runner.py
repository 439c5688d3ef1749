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
import math
import os
import platform
import shutil
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import PRESET_ENV, ParameterError, resolve_device, resolve_preset
from ..results import OUTPUT_DIR_ENV, STATIC_ENV, write_json_atomic
from .notebooks import notebook_title, resolve_notebooks
from .report import error_line, render_html, render_markdown

KERNEL_NAME = "python3"


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
               out: str | Path | None = None, timeout: int | None = None, progress: bool = True, *,
               notebooks_dir: str | Path | None = None, force: bool = False) -> RunSummary:
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
        timeout: whole seconds any single cell may run before the notebook counts as failed; None: no limit.
        progress: show a progress bar and one line per notebook.
        notebooks_dir: where the series lives; default: the repository's ``notebooks/``.
        force: add to (or rerun notebooks in) a folder that already holds a run. Nothing is lost: the
            earlier notebooks stay in results.json and the report; a rerun notebook replaces its folder
            only when it succeeds (a failed attempt is kept beside it, as ``NN_name.failed/``).

    Returns:
        A RunSummary; ``summary.ok`` is False when any notebook failed.

    Raises:
        ParameterError: a bad argument, or ``out`` is a file, not writable, or (without ``force``) holds a run.
        KeyboardInterrupt: Ctrl-C or SIGTERM; results.json and the report are written first, with the
            notebook that was running marked ``interrupted``.
    """
    resolved = resolve_preset(preset)
    device = resolve_device(device).type  # checks the name (a missing GPU fails here), records what "auto" chose
    timeout = check_timeout(timeout)
    paths = resolve_notebooks(notebooks, notebooks_dir)
    out = Path(out) if out is not None else Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{resolved}"
    out = prepare_out(out.resolve(), force)
    run: dict[str, Any] = {
        "preset": resolved, "device": device, "started": _now(), "finished": None, "seconds": None,
        "versions": collect_versions(), "notebooks": _earlier_notebooks(out),
    }
    start = time.perf_counter()
    bar = _progress_bar(paths, progress)
    with _sigterm_as_interrupt():
        for path in bar:
            bar.set_postfix_str(path.stem)
            began = time.perf_counter()
            try:
                entry = run_notebook(path, out, preset=resolved, device=device, timeout=timeout, progress=progress)
            except KeyboardInterrupt:
                run["notebooks"][path.stem] = _settle(path, out, "interrupted", time.perf_counter() - began,
                                                      {"ename": "KeyboardInterrupt", "evalue": "interrupted (Ctrl-C "
                                                       "or SIGTERM)", "cell_index": None, "exec_count": None,
                                                       "traceback": ""})
                run["interrupted"] = True
                _save(run, out)
                raise
            run["notebooks"][path.stem] = entry
            if progress:
                _write_line(_status_line(path.stem, entry))
            _save(run, out)  # after every notebook, so an interrupted run still leaves its results
    run["finished"] = _now()
    run["seconds"] = round(time.perf_counter() - start, 2)
    _save(run, out)
    with suppress(OSError):
        (out / ".running").rmdir()      # every notebook has been moved to its place: the staging area is empty
    failed = [stem for stem, entry in run["notebooks"].items() if entry["status"] != "ok"]
    return RunSummary(out=out, results=run, failed=failed)


def check_timeout(timeout: Any) -> int | None:
    """None, or a positive whole number of seconds (papermill's cell timeout is an integer)."""
    if timeout is None:
        return None
    ok = (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and math.isfinite(timeout)
          and timeout >= 1 and float(timeout).is_integer())
    if not ok:
        raise ParameterError(f"timeout={timeout!r} must be a positive whole number of seconds (or none)")
    return int(timeout)


def prepare_out(out: Path, force: bool) -> Path:
    """The run folder, created; an error if it is a file, not writable, or (without force) holds a run."""
    if out.exists() and not out.is_dir():
        raise ParameterError(f"--out {out} is a file, not a folder: give a folder for the run")
    if out.is_dir() and any(out.iterdir()) and not force:
        held = ", ".join(sorted(_earlier_notebooks(out))) or "files"
        raise ParameterError(f"--out {out} already holds a run ({held}); give a new folder, or --force to add "
                             "to it (earlier results are kept; a notebook is replaced only by a successful rerun)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".vislearn-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ParameterError(f"--out {out} is not writable ({err.strerror or err}); give another folder") from None
    return out


def _earlier_notebooks(out: Path) -> dict[str, Any]:
    """The notebook entries of a run already in ``out`` (kept when more notebooks run there)."""
    previous = _read_json(out / "results.json")
    notebooks = previous.get("notebooks") if isinstance(previous, dict) else None
    return dict(notebooks) if isinstance(notebooks, dict) else {}


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: results.json and the report are written, then the run stops."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_notebook(path: Path, out: Path, *, preset: str, device: str, timeout: int | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Execute one notebook into ``out/<stem>/`` and return its entry for the run's results.json.

    It runs in ``out/.running/<stem>/``; a success then replaces ``out/<stem>/``, and a failure goes
    to ``out/<stem>/`` only if no earlier successful run is there (else to ``out/<stem>.failed/``).
    """
    import papermill  # imported here: it is slow to import and only this function needs it

    path = Path(path).resolve()  # papermill changes into the notebook's folder while it runs
    staging = out / ".running" / path.stem
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    start = time.perf_counter()
    error = None
    with _environ({OUTPUT_DIR_ENV: str(staging), PRESET_ENV: preset, STATIC_ENV: "1"}):
        try:
            papermill.execute_notebook(
                path, staging / path.name, parameters=dict(PRESET=preset, DEVICE=device),
                kernel_name=KERNEL_NAME, cwd=path.parent, progress_bar=progress, execution_timeout=timeout,
                # the kernel's own log (transport warnings, the stack of an interrupted message handler) is
                # noise to a learner: cell errors still come back as outputs and in results.json
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            )
        except Exception as exc:  # a failing notebook is a result to report, not a reason to stop
            error = describe_error(exc, path)
    return _settle(path, out, "failed" if error else "ok", time.perf_counter() - start, error)


def _settle(path: Path, out: Path, status: str, seconds: float, error: dict[str, Any] | None) -> dict[str, Any]:
    """Move a finished (or interrupted) attempt from ``.running/`` to its place; its results.json entry."""
    staging, folder = out / ".running" / path.stem, out / path.stem
    staging.mkdir(parents=True, exist_ok=True)
    recorded = _read_json(folder / ".status.json") or _earlier_notebooks(out).get(path.stem, {})
    previous_ok = folder.is_dir() and recorded.get("status") == "ok"
    target = folder if status == "ok" or not previous_ok else out / f"{path.stem}.{status}"
    (staging / ".status.json").write_text(json.dumps({"status": status}))
    trash = out / ".running" / f"{path.stem}.replaced"
    shutil.rmtree(trash, ignore_errors=True)
    if target.exists():
        target.rename(trash)                              # the new attempt is complete: now it may go
    staging.rename(target)
    shutil.rmtree(trash, ignore_errors=True)
    entry = {
        "status": status, "seconds": round(seconds, 2), "title": notebook_title(path),
        "notebook": f"{target.name}/{path.name}", "results": _read_json(target / "results.json"),
        "figures": sorted(p.relative_to(out).as_posix() for p in (target / "figures").glob("*.png")),
        "error": error,
    }
    if target != folder:
        entry["kept"] = f"{folder.name}/ holds the previous successful run of this notebook"
    return entry


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
