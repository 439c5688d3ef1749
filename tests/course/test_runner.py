"""Tests for vislearn.course.runner: the papermill batch runner, its results.json and its reports.

Executing a notebook starts a Jupyter kernel (seconds each), so one module-scoped run executes the
two tiny notebooks once and most tests only read what it wrote.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from vislearn.config import ParameterError
from vislearn.course import runner
from vislearn.results import OUTPUT_DIR_ENV

PARAMETERS = 'PRESET = "auto"\nDEVICE = "auto"\nSEED = 0'

GOOD_CELL = """\
import os
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from vislearn.results import record, save_figure

fig, ax = plt.subplots(figsize=(2, 2))
ax.plot([0, 1], [0, 1])
save_figure(fig, "line")
record(answer=42, preset=PRESET, device=DEVICE, env_preset=os.environ["VISLEARN_PRESET"], note="<b>&")
"""


def write_notebook(path: Path, title: str, *sources: str) -> Path:
    """A notebook: a title, a ``parameters`` cell with PRESET/DEVICE/SEED, then the code cells."""
    nb = new_notebook(cells=[
        new_markdown_cell(f"# {title}\n\nWhat you will learn."),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        *(new_code_cell(source) for source in sources),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, path)
    return path


def write_series(folder: Path) -> Path:
    """``01_broken`` fails in its fourth cell (index 3); ``02_good`` records results and a figure."""
    folder.mkdir(parents=True, exist_ok=True)
    write_notebook(folder / "01_broken.ipynb", "A broken notebook",
                   "from vislearn.results import record\nrecord(before_error=1)",
                   'raise ValueError("boom")',
                   "record(after_error=1)")
    write_notebook(folder / "02_good.ipynb", "A good notebook", GOOD_CELL)
    (folder / "scratch.ipynb").write_text((folder / "02_good.ipynb").read_text())  # not in the series
    return folder


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    return write_series(tmp_path_factory.mktemp("notebooks"))


@pytest.fixture(scope="module")
def run(series, tmp_path_factory):
    """Run the whole series once, with preset auto resolved through $VISLEARN_PRESET."""
    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VISLEARN_PRESET", "smoke")
        mp.delenv(OUTPUT_DIR_ENV, raising=False)
        summary = runner.run_series(preset="auto", device="cpu", out=out, progress=False,
                                    notebooks_dir=series)
        env_after = {key: os.environ.get(key) for key in (OUTPUT_DIR_ENV, "VISLEARN_PRESET")}
    return summary, env_after


# --------------------------------------------------------------------------- one real run


def test_summary_reports_the_failure(run):
    summary, _ = run
    assert not summary.ok
    assert summary.failed == ["01_broken"]
    assert list(summary.results["notebooks"]) == ["01_broken", "02_good"]  # course order


def test_results_json_records_the_run(run):
    summary, _ = run
    data = json.loads((summary.out / "results.json").read_text())
    assert data == summary.results
    assert data["preset"] == "smoke"  # auto resolved before the run
    assert data["device"] == "cpu"
    assert data["finished"] and data["started"] <= data["finished"]
    assert {"python", "torch", "timm", "vislearn", "platform", "cuda"} <= set(data["versions"])


def test_good_notebook_results_and_figures(run):
    summary, _ = run
    entry = summary.results["notebooks"]["02_good"]
    assert entry["status"] == "ok" and entry["error"] is None
    assert entry["title"] == "A good notebook"
    assert entry["results"] == {"answer": 42, "preset": "smoke", "device": "cpu", "env_preset": "smoke",
                                "note": "<b>&"}
    assert entry["figures"] == ["02_good/figures/line.png"]
    assert (summary.out / entry["figures"][0]).stat().st_size > 0
    assert entry["seconds"] > 0


def test_executed_notebook_has_the_injected_parameters(run):
    summary, _ = run
    nb = nbformat.read(summary.out / "02_good" / "02_good.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert 'PRESET = "smoke"' in injected[0].source
    assert 'DEVICE = "cpu"' in injected[0].source


def test_failing_notebook_is_recorded_and_stops_there(run):
    summary, _ = run
    entry = summary.results["notebooks"]["01_broken"]
    assert entry["status"] == "failed"
    error = entry["error"]
    assert error["ename"] == "ValueError"
    assert error["evalue"] == "boom"
    assert error["cell_index"] == 3  # counted in the stored notebook, not papermill's copy
    assert "boom" in error["traceback"]
    assert entry["results"] == {"before_error": 1}  # recorded before the error; later cells did not run
    assert (summary.out / "01_broken" / "01_broken.ipynb").exists()


def test_environment_is_restored(run):
    _, env_after = run
    assert env_after == {OUTPUT_DIR_ENV: None, "VISLEARN_PRESET": "smoke"}


def test_reports_show_results_figures_and_errors(run):
    summary, _ = run
    md = summary.report_md.read_text()
    assert "| answer | 42 |" in md
    assert "![line](02_good/figures/line.png)" in md
    assert "ValueError in cell 3: boom" in md
    assert "preset smoke" in md
    page = summary.report_html.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<td>answer</td>" in page and ">42</td>" in page
    assert '<img src="02_good/figures/line.png"' in page
    assert "&lt;b&gt;&amp;" in page and "<b>&" not in page  # values are escaped
    assert "ValueError in cell 3: boom" in page


# --------------------------------------------------------------------------- without a kernel


def test_resolve_notebooks_accepts_numbers_stems_files_and_paths(series):
    good = series / "02_good.ipynb"
    for name in ("02", "02_good", "02_good.ipynb", str(good), good):
        assert runner.resolve_notebooks([name], series) == [good]
    assert runner.resolve_notebooks(None, series) == [series / "01_broken.ipynb", good]
    assert runner.resolve_notebooks(["02", "01", "02_good"], series) == [good, series / "01_broken.ipynb"]
    scratch = series / "scratch.ipynb"
    assert runner.resolve_notebooks([scratch], series) == [scratch]  # any path, even outside the series


def test_unknown_notebook_names_the_available_ones(series):
    with pytest.raises(ParameterError, match=r"'07' not found; available notebooks: 01_broken, 02_good"):
        runner.resolve_notebooks(["07"], series)


def test_ambiguous_number_and_empty_folder(tmp_path):
    for name in ("03_a.ipynb", "03_b.ipynb"):
        (tmp_path / name).write_text("{}")
    with pytest.raises(ParameterError, match="ambiguous.*03_a, 03_b"):
        runner.resolve_notebooks(["03"], tmp_path)
    with pytest.raises(ParameterError, match="no notebooks"):
        runner.resolve_notebooks(None, tmp_path / "empty")


@pytest.mark.parametrize("kwargs, match", [
    (dict(preset="fast"), r"preset='fast' is not allowed; choose one of: 'auto', 'smoke'"),
    (dict(device="tpu"), r"device='tpu' is not allowed"),
    (dict(timeout=0), r"timeout=0 must be a positive whole number of seconds"),
    (dict(notebooks=["nope"]), r"'nope' not found"),
])
def test_bad_arguments_fail_before_running(series, tmp_path, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        runner.run_series(**kwargs, out=tmp_path / "out", progress=False, notebooks_dir=series)
    assert not (tmp_path / "out").exists()


def test_default_out_folder_and_bookkeeping(series, tmp_path, monkeypatch):
    """Without a kernel: run_notebook is replaced, so this checks only the runner's own work."""
    calls = []

    def fake_run_notebook(path, out, *, preset, device, timeout=None, progress=False):
        calls.append((path.stem, preset, device, timeout))
        return {"status": "ok", "seconds": 0.5, "title": path.stem, "notebook": f"{path.stem}/{path.name}",
                "results": {}, "figures": [], "error": None}

    monkeypatch.setattr(runner, "run_notebook", fake_run_notebook)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    summary = runner.run_series(["02"], preset="classroom", timeout=30, progress=False, notebooks_dir=series)
    assert summary.ok
    assert calls == [("02_good", "classroom", "cpu", 30)]  # "auto" is resolved once, for every notebook
    assert json.loads((summary.out / "results.json").read_text())["device"] == "cpu"
    assert summary.out.parent == tmp_path / "runs"
    assert re.fullmatch(r"\d{8}-\d{6}-classroom", summary.out.name)
    assert "No results recorded." in summary.report_md.read_text()


def test_notebook_title(series, tmp_path):
    assert runner.notebook_title(series / "02_good.ipynb") == "A good notebook"
    untitled = tmp_path / "05_untitled.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("x = 1")]), untitled)
    assert runner.notebook_title(untitled) == "05_untitled"
