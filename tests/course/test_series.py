"""Every notebook of the series opens the same way: a title with its runtimes, one parameters cell,
and no placeholder left in its text (notebook 02 once showed `RUNTIME_SMOKE` to learners)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PLACEHOLDER = re.compile(r"\b(RUNTIME_[A-Z]+|FULL_CPU|TODO|TBD|FIXME|XXX)\b")


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_opens_with_title_runtime_and_one_parameters_cell(path):
    first = cells(path)[0]
    text = "".join(first["source"])
    assert first["cell_type"] == "markdown" and text.startswith(f"# {path.name[:2]} · "), text[:80]
    assert "**Runtime**" in text and "smoke" in text and "classroom" in text
    tagged = [c for c in cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0]["cell_type"] == "code"
    for name in ("PRESET", "DEVICE", "SEED"):
        assert re.search(rf"^{name} = ", "".join(tagged[0]["source"]), re.M), name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_placeholder_is_left_in_a_notebook(path):
    for i, cell in enumerate(cells(path)):
        found = PLACEHOLDER.findall("".join(cell["source"]))
        assert not found, f"{path.name}, cell {i}: {found}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_exercises_check_themselves_with_hidden_solutions(path):
    """At least three exercises, one of them coding (the learner writes ``answer``), each registered in a
    collapsed cell just above it (hint, reason and solution out of sight), and each checked by name."""
    code = [(c, "".join(c["source"])) for c in cells(path) if c["cell_type"] == "code"]
    hidden = [(c, s) for c, s in code if c["metadata"].get("jupyter", {}).get("source_hidden")]
    added = [m for _, s in hidden for m in re.findall(r'exercises\.add\("([^"]+)"', s)]
    assert len(added) >= 3 and len(set(added)) == len(added), added
    assert all(name.startswith(path.name[:2] + ".") for name in added), added
    for c, s in code:
        if not c["metadata"].get("jupyter", {}).get("source_hidden"):
            assert "exercises.add(" not in s and "solution=" not in s, f"{path.name}: a solution in sight:\n{s[:200]}"
    checked = {name for _, s in code for name in re.findall(r'exercises\.check\("([^"]+)"', s)}
    assert checked == set(added), (sorted(checked), sorted(added))
    coding = [name for _, s in code for name in re.findall(r'exercises\.solve\("([^"]+)"', s)
              if re.search(r"^def answer\(", s, re.M)]
    assert coding, f"{path.name}: no coding exercise (a visible cell that defines `answer`)"
