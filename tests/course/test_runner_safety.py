"""The batch runner never loses a run: reused folders, failed reruns, broken notebooks, bad arguments,
Ctrl-C and SIGTERM sent to a real ``vislearn run`` process."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vislearn.config import ParameterError
from vislearn.course import cli, runner

from .test_runner import GOOD_CELL, write_notebook

TIMINGS = ("seconds", "started", "finished", "notebook_seconds", "inference_img_per_s")


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def series(tmp_path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "01_first.ipynb", "First", GOOD_CELL)
    write_notebook(folder / "02_second.ipynb", "Second", "from vislearn.results import record\nrecord(second=2)")
    return folder


def run(series, out, names, **kw):
    return runner.run_series(names, preset="smoke", device="cpu", out=out, progress=False, notebooks_dir=series, **kw)


def test_a_used_folder_is_refused_then_merged_with_force(series, tmp_path):
    out = tmp_path / "run"
    run(series, out, ["01"])
    before = folder_bytes(out)
    with pytest.raises(ParameterError, match=r"already holds a run \(01_first\).*--force"):
        run(series, out, ["02"])
    assert folder_bytes(out) == before                                   # refused: nothing touched
    summary = run(series, out, ["02"], force=True)                       # added: the earlier notebook stays
    assert list(summary.results["notebooks"]) == ["01_first", "02_second"] and summary.ok
    report = (out / "report.md").read_text()
    assert "01_first: First" in report and "02_second: Second" in report and "| answer | 42 |" in report
    assert folder_bytes(out / "01_first") == {k[len("01_first/"):]: v for k, v in before.items()
                                              if k.startswith("01_first/")}


def test_a_failed_rerun_keeps_the_good_run(series, tmp_path):
    out = tmp_path / "run"
    run(series, out, ["01"])
    good = folder_bytes(out / "01_first")
    assert "figures/line.png" in good and json.loads(good["results.json"])["answer"] == 42
    write_notebook(series / "01_first.ipynb", "First", 'raise RuntimeError("broken since")')
    summary = run(series, out, ["01"], force=True)
    assert folder_bytes(out / "01_first") == good                        # the good run, untouched
    entry = summary.results["notebooks"]["01_first"]
    assert entry["status"] == "failed" and entry["notebook"] == "01_first.failed/01_first.ipynb"
    assert "previous successful run" in entry["kept"] and (out / entry["notebook"]).exists()
    report = (out / "report.md").read_text()
    assert "(01_first/ holds the previous successful run of this notebook)" in report
    write_notebook(series / "01_first.ipynb", "First", GOOD_CELL)        # fixed: a success replaces it
    summary = run(series, out, ["01"], force=True)
    assert summary.ok and summary.results["notebooks"]["01_first"]["notebook"] == "01_first/01_first.ipynb"
    assert not (out / ".running").exists()                         # the staging area is cleaned up


@pytest.mark.parametrize("content", ["", "{not json", '{"cells": "nope"}'])
def test_a_broken_notebook_is_recorded_and_the_others_still_run(series, tmp_path, content):
    (series / "00_broken.ipynb").write_text(content)
    summary = run(series, tmp_path / "run", None)
    assert summary.failed == ["00_broken"] and summary.results["notebooks"]["01_first"]["status"] == "ok"
    assert summary.results["notebooks"]["00_broken"]["title"] == "00_broken"
    assert (tmp_path / "run" / "report.html").exists()


@pytest.mark.parametrize("timeout", [2.5, 0, -3, math.nan, math.inf, True, "10"])
def test_bad_timeouts(series, tmp_path, timeout):
    with pytest.raises(ParameterError, match="must be a positive whole number of seconds"):
        run(series, tmp_path / "run", ["01"], timeout=timeout)
    assert not (tmp_path / "run").exists()


def test_an_out_that_is_a_file(series, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    with pytest.raises(ParameterError, match="is a file, not a folder"):
        run(series, tmp_path / "afile", ["01"])
    assert cli.main(["run", "01", "--out", str(tmp_path / "afile"), "--notebooks-dir", str(series)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("args, words", [
    (["run", "--timeout", "2.5"], "timeout=2.5 must be a positive whole number"),
    (["run", "--timeout", "nan"], "must be a positive whole number"),
    (["run", "--timeout", "soon"], "--timeout='soon' must be a positive whole number"),
    (["list", "--notebooks-dir", "/no/such/folder"], "is not a folder"),
])
def test_cli_usage_errors_are_one_line(args, words, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1


def test_list_on_an_empty_folder_is_an_error(tmp_path, capsys):
    assert cli.main(["list", "--notebooks-dir", str(tmp_path)]) == 2
    assert "no notebooks matching" in capsys.readouterr().err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_a_running_series_writes_results_and_report(series, tmp_path, sig):
    """A real ``vislearn run`` process, signalled while its second notebook sleeps in a cell."""
    write_notebook(series / "02_second.ipynb", "Second",
                   "import pathlib, time\npathlib.Path('started').write_text('1')\ntime.sleep(120)")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(runner.__file__).parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "vislearn", "run", "--preset", "smoke", "--device", "cpu", "--out",
                             str(out), "--notebooks-dir", str(series), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (series / "started").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert (series / "started").exists(), proc.communicate(timeout=10)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    results = json.loads((out / "results.json").read_text())
    assert results["interrupted"] and results["notebooks"]["01_first"]["status"] == "ok"
    assert results["notebooks"]["02_second"]["status"] == "interrupted"
    assert "interrupted" in (out / "report.md").read_text() and (out / "report.html").exists()
    (series / "started").unlink()


def test_two_smoke_runs_of_notebook_01_agree_apart_from_timings(tmp_path):
    """The course is reproducible: the same preset and seed record the same numbers, twice."""
    results = []
    for i in range(2):
        summary = runner.run_series(["01"], preset="smoke", device="cpu", out=tmp_path / f"run{i}", progress=False)
        assert summary.ok, summary.results["notebooks"]
        recorded = summary.results["notebooks"]["01_vit_from_scratch"]["results"]
        results.append({k: v for k, v in recorded.items() if k not in TIMINGS})
    assert results[0] == results[1] and results[0]["test_accuracy"] > 0.8
