"""vislearn site: builds offline from a run folder, in series order, and never replaces what it should not."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pytest

from vislearn.config import ParameterError
from vislearn.course import site


def _png() -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(buf.getvalue()).decode(), "text/plain": "<Figure>"}}


def _fake_run(folder: Path, stems: list[str], failed: tuple[str, ...] = ()) -> Path:
    """A run folder as ``vislearn run`` leaves it: results.json, report.md, NN_name/NN_name.ipynb."""
    notebooks = {}
    for stem in stems:
        (folder / stem).mkdir(parents=True)
        nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3",
              "display_name": "Python 3", "language": "python"}},
              "cells": [{"cell_type": "markdown", "id": "a", "metadata": {},
                         "source": f"# {stem[:2]} · Title of {stem}\nThe cone $|x^\\top a| > \\|x\\| \\cos\\theta$."},
                        {"cell_type": "code", "id": "b", "metadata": {}, "execution_count": 1,
                         "source": "plot()", "outputs": [_png()]}]}
        (folder / stem / f"{stem}.ipynb").write_text(json.dumps(nb))
        notebooks[stem] = {"status": "failed" if stem in failed else "ok", "seconds": 1.0,
                           "notebook": f"{stem}/{stem}.ipynb", "title": stem, "results": {}}
    (folder / "results.json").write_text(json.dumps({"preset": "smoke", "device": "cpu", "started": "now",
                                                     "notebooks": notebooks}))
    rows = "\n".join(f"| [{s}](#{s}) | ok |" for s in stems)
    (folder / "report.md").write_text(f"# vislearn run report\n\n| notebook | status |\n|---|---|\n{rows}\n")
    return folder


def test_builds_the_series_in_order_with_figures_math_and_search(tmp_path):
    run = _fake_run(tmp_path / "run", ["02_second", "01_first", "03_broken"], failed=("03_broken",))
    out = site.build_site(run)
    assert out == run / "site" and (out / site.MARKER).is_file()
    assert json.loads((out / site.MARKER).read_text())["notebooks"] == ["01_first", "02_second"]  # no failed one
    index = (out / "index.html").read_text()
    assert index.index("01_first/01_first.html") < index.index("02_second/02_second.html")
    assert "03_broken" not in index
    page = (out / "01_first" / "01_first.html").read_text()
    assert "<img" in page and list((out / "_images").glob("*.png"))
    assert "mathjax/tex-chtml.js" in page and (out / "mathjax" / "tex-chtml.js").is_file()
    assert "cdn" not in page.lower() and "unpkg" not in page.lower()       # nothing loaded from the web
    assert (out / "searchindex.js").is_file() and "search" in (out / "search.html").read_text()
    assert "01_first/01_first.html" in (out / "results.html").read_text()  # the report's rows link to pages


def test_rebuild_replaces_its_own_site_but_never_another_folder(tmp_path):
    run = _fake_run(tmp_path / "run", ["01_first"])
    first = site.build_site(run)
    (first / "stale.txt").write_text("from the last build")
    site.build_site(run)
    assert not (first / "stale.txt").exists() and (first / "index.html").is_file()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(ParameterError, match="not a site built by"):
        site.build_site(run, other)
    assert (other / "mine.txt").read_text() == "keep"


def test_a_failed_build_keeps_the_last_good_site(tmp_path, monkeypatch):
    run = _fake_run(tmp_path / "run", ["01_first"])
    good = site.build_site(run)
    before = (good / "index.html").read_text()
    monkeypatch.setattr(site, "MATHJAX_FILE", "no-such-file.js")            # the build breaks while copying
    with pytest.raises(FileNotFoundError):
        site.build_site(run)
    assert (good / "index.html").read_text() == before
    assert not [p for p in good.parent.iterdir() if p.name.startswith(".site-")]   # no half-built folder left


def test_latest_run_and_clear_errors(tmp_path):
    with pytest.raises(ParameterError, match="no run folder"):
        site.latest_run(tmp_path)
    older = _fake_run(tmp_path / "a", ["01_first"])
    newer = _fake_run(tmp_path / "b", ["01_first"])
    os.utime(older / "results.json", (1, 1))
    assert site.latest_run(tmp_path) == newer
    with pytest.raises(ParameterError, match="no results.json"):
        site.build_site(tmp_path / "nothing-here")
    with pytest.raises(ParameterError, match="nothing to publish"):
        site.build_site(_fake_run(tmp_path / "c", ["01_first"], failed=("01_first",)))
