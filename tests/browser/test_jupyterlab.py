"""Every notebook, opened in JupyterLab in a real browser, runs with nothing a learner would read as broken.

For each notebook: Run All (smoke preset, live widgets), then no error output, no "Error displaying
widget", no JavaScript console error, every explorer has its controls and redraws when each changes,
tqdm bars are green full widgets, not text, and markdown tables render as tables. A deliberately
broken notebook shows that each of these checks fails when it should.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from .conftest import ROOT, record
from .lab import PROBLEM_KINDS, check_notebook

NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_clean_in_jupyterlab(browser, lab, artifacts, name):
    path = ROOT / "notebooks" / name
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    check = check_notebook(browser, lab, f"notebooks/{name}", artifacts)
    record(check.name, check.summary(), artifacts)
    assert not check.problems, "\n".join(check.problems)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before, "JupyterLab wrote to the committed notebook"
    for explorer in check.explorers:             # every control of every explorer redrew its figure
        assert explorer["controls"] and len(explorer["redraw_s"]) == len(explorer["controls"]), explorer


def _cell(source: str, kind: str = "code") -> dict:
    cell = {"cell_type": kind, "id": hashlib.sha1(source.encode()).hexdigest()[:8], "metadata": {}, "source": source}
    if kind == "code":
        cell.update(outputs=[], execution_count=None)
    return cell


BROKEN_CELLS = [
    # an explorer whose figure breaks on the first change of its control
    _cell("import matplotlib.pyplot as plt\nfrom vislearn.course import viz\n\n"
          "def draw(k):\n    if k != 0:\n        raise RuntimeError('broken on purpose')\n"
          "    fig, ax = plt.subplots(figsize=(2, 2))\n    ax.plot([0, 1], [0, k])\n    return fig\n\n"
          "viz.explorer(draw, {'k': range(3)})"),
    # an explorer that lost its controls
    _cell("import ipywidgets\nfrom IPython.display import display\n"
          "out = ipywidgets.Output()\nbox = ipywidgets.interactive(lambda: None)\nbox.children = (out,)\nbox"),
    # a widget whose front-end code does not exist
    _cell("from traitlets import Unicode\n\nclass Missing(ipywidgets.DOMWidget):\n"
          "    _view_name = Unicode('MissingView').tag(sync=True)\n"
          "    _view_module = Unicode('no-such-widget-module').tag(sync=True)\n"
          "    _view_module_version = Unicode('1.0.0').tag(sync=True)\n\nMissing()"),
    # a tqdm bar written as text, and a widget bar sized to more steps than the run took
    _cell("import sys\nfrom tqdm import tqdm as text_tqdm\nfrom tqdm.auto import tqdm\n"
          "for _ in text_tqdm(range(3), file=sys.stdout):\n    pass\n"
          "bar = tqdm(total=100)\nbar.update(3)\nbar.close()"),
    # a results table whose column name holds an unescaped pipe
    _cell("from IPython.display import Markdown\nMarkdown('| model | max |ours - timm| |\\n|---|---|\\n| ViT | 0 |')"),
    # and a cell that raises, last, since Run All stops there
    _cell("raise ValueError('deliberately broken')"),
]


def test_broken_notebook_fails_each_check(browser, lab, artifacts):
    folder = ROOT / "runs" / "browser-broken"
    folder.mkdir(parents=True, exist_ok=True)
    nb = {"cells": BROKEN_CELLS, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (folder / "00_broken.ipynb").write_text(json.dumps(nb, indent=1))
    check = check_notebook(browser, lab, "runs/browser-broken/00_broken.ipynb", artifacts / "broken",
                           redraw_timeout=15)
    record("00_broken (deliberately)", check.summary(), artifacts)
    print("\n".join(check.problems))
    assert check.kinds() == set(PROBLEM_KINDS), sorted(check.kinds())
    assert any("changing 'k' did not redraw" in p for p in check.problems), check.problems
    assert any("0 controls" in p for p in check.problems), check.problems


def test_a_broken_copy_of_notebook_01_fails_and_names_the_error(browser, lab, artifacts):
    """The real notebook 01 with one plausible bug: its explorer's lookup only knows the opening image."""
    nb = json.loads((ROOT / "notebooks" / "01_vit_from_scratch.ipynb").read_text())
    cells = [c for c in nb["cells"] if "viz.explorer(" in "".join(c["source"])]
    good = "i = explore_ids[data.FASHION_MNIST_CLASSES.index(image)]"
    assert len(cells) == 1 and good in "".join(cells[0]["source"])
    cells[0]["source"] = "".join(cells[0]["source"]).replace(good, 'i = {"Sneaker": explore_ids[7]}[image]')
    folder = ROOT / "runs" / "browser-broken"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "01_broken_copy.ipynb").write_text(json.dumps(nb, indent=1))
    check = check_notebook(browser, lab, "runs/browser-broken/01_broken_copy.ipynb", artifacts / "broken",
                           redraw_timeout=10)
    record("01 (deliberately broken copy)", check.summary(), artifacts)
    print("\n".join(check.problems))
    assert check.kinds() == {"explorer"}, check.problems          # everything else in 01 still works
    assert "changing 'image' did not redraw" in check.problems[0] and "KeyError" in check.problems[0]
