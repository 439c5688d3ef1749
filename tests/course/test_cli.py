"""Tests for vislearn.course.cli: ``vislearn run | list | train`` and ``python -m vislearn``.

Only one test executes a notebook (the failing one, to see exit code 1 end to end); the others
replace ``run_series`` or ``vislearn.train`` with fakes that record how they were called.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from vislearn.config import ParameterError
from vislearn.course import cli, runner


def write_notebook(path: Path, title: str, *sources: str) -> None:
    """A notebook with a title, a ``parameters`` cell and the given code cells."""
    nb = new_notebook(cells=[
        new_markdown_cell(f"# {title}"),
        new_code_cell('PRESET = "auto"\nDEVICE = "auto"\nSEED = 0', metadata={"tags": ["parameters"]}),
        *(new_code_cell(source) for source in sources),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def series(tmp_path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "01_broken.ipynb", "Broken on purpose", 'raise RuntimeError("broken on purpose")')
    write_notebook(folder / "02_fine.ipynb", "Fine", "x = 1")
    return folder


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    """Replace run_series; ``calls`` holds its arguments, ``failed`` decides the outcome."""
    state = types.SimpleNamespace(calls=[], failed=[])

    def run_series(notebooks=None, preset="auto", device="auto", out=None, timeout=None, progress=True,
                   *, notebooks_dir=None, force=False):
        state.calls.append(dict(notebooks=notebooks, preset=preset, device=device, out=out, timeout=timeout,
                                progress=progress, notebooks_dir=notebooks_dir, force=force))
        results = {"preset": "smoke", "seconds": 1.0, "notebooks": {"01_a": {}, "02_b": {}}}
        return runner.RunSummary(out=tmp_path / "run", results=results, failed=list(state.failed))

    monkeypatch.setattr(runner, "run_series", run_series)
    return state


def test_run_end_to_end_with_a_failing_notebook(series, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["run", "01", "--preset", "smoke", "--device", "cpu", "--out", str(out),
                     "--notebooks-dir", str(series), "--quiet"])
    assert code == 1
    printed = capsys.readouterr().out
    assert "failed: 01_broken" in printed
    assert f"report: {out / 'report.html'}" in printed
    assert "RuntimeError" in (out / "report.md").read_text()
    assert (out / "01_broken" / "01_broken.ipynb").exists()


def test_run_forwards_arguments_and_exits_0(fake_run, capsys):
    code = cli.main(["run", "01", "02_b.ipynb", "--preset", "classroom", "--device", "cpu", "--out", "x",
                     "--timeout", "90", "--notebooks-dir", "nbs", "--force"])
    assert code == 0
    assert fake_run.calls == [dict(notebooks=["01", "02_b.ipynb"], preset="classroom", device="cpu", out="x",
                                   timeout=90, progress=True, notebooks_dir="nbs", force=True)]
    assert "report: " in capsys.readouterr().out


def test_run_defaults_to_the_whole_series(fake_run):
    assert cli.main(["run", "--quiet"]) == 0
    assert fake_run.calls[0]["notebooks"] is None
    assert fake_run.calls[0]["preset"] == "auto" and fake_run.calls[0]["progress"] is False


def test_run_exits_1_when_a_notebook_failed(fake_run, capsys):
    fake_run.failed = ["02_b"]
    assert cli.main(["run"]) == 1
    assert "failed: 02_b" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["run", "--preset", "fast"], "invalid choice: 'fast'"),
    (["run", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["run", "--timeout", "soon"], "--timeout='soon' must be a positive whole number of seconds"),
    (["dance"], "invalid choice: 'dance'"),
    ([], "the following arguments are required"),
])
def test_bad_arguments_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_parameter_error_is_one_line_without_traceback(series, tmp_path, capsys):
    code = cli.main(["run", "nope", "--notebooks-dir", str(series), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err == "error: notebook 'nope' not found; available notebooks: 01_broken, 02_fine\n"


def test_list_prints_names_and_titles(series, capsys):
    assert cli.main(["list", "--notebooks-dir", str(series)]) == 0
    assert capsys.readouterr().out.splitlines() == ["01_broken  Broken on purpose", "02_fine    Fine"]


@pytest.fixture
def fake_train(monkeypatch):
    """A stand-in for the recipe command line (vislearn.recipes.cli.main): records its argv and does what
    ``state.action`` says."""
    from vislearn.recipes import cli as recipe_cli

    state = types.SimpleNamespace(argv=None, action=lambda: 0)

    def main(argv):
        state.argv = argv
        return state.action()

    monkeypatch.setattr(recipe_cli, "main", main)
    return state


def test_train_forwards_every_argument(fake_train):
    assert cli.main(["train", "vit_tiny", "--preset", "smoke", "--help"]) == 0
    assert fake_train.argv == ["vit_tiny", "--preset", "smoke", "--help"]


def test_train_exit_codes(fake_train, capsys):
    def exit_3():
        raise SystemExit(3)

    def bad_recipe():
        raise ParameterError("recipe='x' is not allowed; choose one of: 'vit_tiny'")

    fake_train.action = exit_3
    assert cli.main(["train", "x"]) == 3
    fake_train.action = bad_recipe
    assert cli.main(["train", "x"]) == 2
    assert capsys.readouterr().err == "error: recipe='x' is not allowed; choose one of: 'vit_tiny'\n"


def test_python_dash_m_vislearn(series):
    done = subprocess.run([sys.executable, "-m", "vislearn", "list", "--notebooks-dir", str(series)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "02_fine" in done.stdout
