"""Fixtures of the real-browser tests: one JupyterLab and one headless chromium for the whole session.

Artifacts (screenshots, ``browser.json`` with per-notebook Run-All times and problems, the lab's log)
go to ``$VISLEARN_BROWSER_OUT`` or ``runs/browser-<time>/``. The tests skip, saying why, only where
chromium is missing (``bash scripts/test.sh`` installs it with apt when it runs as root or with
passwordless sudo) or the playwright package is not installed.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from .lab import CHROMIUM_ARGS, Lab, find_chromium

ROOT = Path(__file__).resolve().parents[2]
RESULTS: dict[str, dict] = {}


@pytest.fixture(scope="session")
def artifacts() -> Path:
    out = Path(os.environ.get("VISLEARN_BROWSER_OUT") or ROOT / "runs" / f"browser-{datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="session")
def browser():
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; scripts/test.sh does it as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in the course's dev extras)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def lab(browser, artifacts):
    with Lab(ROOT, artifacts / "jupyterlab.log") as server:
        yield server


def record(name: str, summary: dict, artifacts: Path) -> None:
    RESULTS[name] = summary
    tmp = artifacts / "browser.json.tmp"
    tmp.write_text(json.dumps(RESULTS, indent=1))
    tmp.replace(artifacts / "browser.json")


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("JupyterLab in chromium: Run All per notebook")
    for name, s in RESULTS.items():
        redraws = [t for e in s["explorers"] for t in e["redraw_s"]]
        redraw = f"{len(redraws)} redraws, max {max(redraws):.1f} s" if redraws else "no explorer"
        tr.write_line(f"{name:34s} {s['run_all_s']:6.1f} s  {len(s['explorers'])} explorers, {redraw}, "
                      f"{s['progress_widgets']} progress widgets, {len(s['problems'])} problems")
