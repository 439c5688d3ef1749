"""Drive a real JupyterLab in Debian's chromium, the way a student sees the course.

``Lab`` starts ``jupyter lab`` on 127.0.0.1 with a random token, the smoke preset and live widgets
(``VISLEARN_STATIC`` unset), autosave off (the committed notebooks are never written) and windowing
off (every cell is in the page, so every widget can be found). ``check_notebook`` opens one notebook
in a fresh page and workspace, runs all cells, waits for the kernel to be idle with every code cell
executed, and returns a ``NotebookCheck``: the problems a learner would see, each as one line.

What counts as a problem (each is one category, so the broken-notebook test can ask for each):
- ``error output``: a cell's output of type ``error`` (a traceback).
- ``widget error``: "Error displaying widget" anywhere in the page, a widget that failed to build
  (ipywidgets' error box), or one still "Loading widget..." 30 s after the run.
- ``console error``: a JavaScript console message of type error, or an uncaught page error.
- ``explorer``: an explorer (``ipywidgets.interactive``) without controls or figure, or a control
  whose change did not redraw the figure (new image) within ``REDRAW_TIMEOUT_S``.
- ``text progress bar``: a tqdm bar printed as text (``42%|####``) or terminal escape codes,
  instead of a widget.
- ``progress bar``: a progress widget that ended red (bar style ``danger``: stopped early) or not full.
- ``raw table``: a markdown output or cell whose rendered text still holds a table's ``|---|`` row.

Screenshots (the notebook's first screen, the end of the run, each explorer before and after each
change) go to ``out``. The playwright package drives the browser; it never downloads one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/lib/chromium/chromium")
# Chromium on a closed network: no first-run, sync, component updates or background requests.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]
RUN_ALL_TIMEOUT_S = 600
REDRAW_TIMEOUT_S = 60
TEXT_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+|\x1b\[")
RAW_TABLE = re.compile(r"\|\s*:?-{3,}")
PROBLEM_KINDS = ("error output", "widget error", "console error", "explorer", "text progress bar",
                 "progress bar", "raw table")


def find_chromium() -> str | None:
    """Debian's chromium, or None (``$VISLEARN_CHROMIUM`` names another binary)."""
    for candidate in (os.environ.get("VISLEARN_CHROMIUM"), *CHROMIUM_CANDIDATES, shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(folder: Path) -> None:
    """JupyterLab user settings: no autosave, no windowing (all cells in the DOM)."""
    for plugin, values in {"@jupyterlab/docmanager-extension/plugin": {"autosave": False},
                           "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
                           "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                                           "checkForUpdates": False}}.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


class Lab:
    """A JupyterLab server serving ``root``, for the duration of a ``with`` block."""

    def __init__(self, root: Path, log: Path, env: dict[str, str] | None = None):
        self.root, self.log = Path(root), Path(log)
        self.port, self.token = _free_port(), uuid.uuid4().hex
        self._tmp = Path(tempfile.mkdtemp(prefix="vislearn-lab-"))
        _write_settings(self._tmp / "settings")
        (self._tmp / "workspaces").mkdir()
        self.env = {**os.environ, "VISLEARN_PRESET": "smoke", "OMP_NUM_THREADS": "1",
                    "JUPYTERLAB_SETTINGS_DIR": str(self._tmp / "settings"),
                    "JUPYTERLAB_WORKSPACES_DIR": str(self._tmp / "workspaces"), **(env or {})}
        for name in ("VISLEARN_STATIC", "VISLEARN_SOLUTIONS"):   # what a student has: live widgets, no solutions
            self.env.pop(name, None)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Lab:
        cmd = ["jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
               "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=", "--ServerApp.open_browser=False"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError(f"jupyter lab did not answer within 90 s; see {self.log}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "_log_file", None):
            self._log_file.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def notebook_url(self, relpath: str) -> str:
        workspace = uuid.uuid4().hex[:12]               # a fresh workspace: nothing restored from the last page
        return f"{self.url}/lab/workspaces/{workspace}/tree/{relpath}?token={self.token}"


@dataclass
class NotebookCheck:
    name: str
    run_all_s: float = 0.0
    cells: int = 0
    problems: list[str] = field(default_factory=list)
    explorers: list[dict] = field(default_factory=list)   # controls and redraw seconds per explorer
    progress_widgets: int = 0
    screenshots: list[str] = field(default_factory=list)

    def kinds(self) -> set[str]:
        return {p.split(":", 1)[0] for p in self.problems}

    def summary(self) -> dict:
        return {"name": self.name, "run_all_s": round(self.run_all_s, 1), "cells": self.cells,
                "problems": self.problems, "explorers": self.explorers,
                "progress_widgets": self.progress_widgets, "screenshots": self.screenshots}


_KERNEL_READY = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!(k && k.status === 'idle' && w.content && w.content.model); }"""
_RUN_DONE = """() => { const w = window.jupyterapp.shell.currentWidget; const k = w.sessionContext.session.kernel;
  const cells = w.content.model.cells; let pending = 0;
  for (let i = 0; i < cells.length; i++) { const c = cells.get(i);
    if (c.type === 'code' && c.sharedModel.getSource().trim()
        && (c.executionCount === null || c.executionState === 'running')) pending++; }
  return k.status === 'idle' && pending === 0; }"""
_OUTPUTS = """() => { const cells = window.jupyterapp.shell.currentWidget.content.model.cells; const out = [];
  for (let i = 0; i < cells.length; i++) { const j = cells.get(i).toJSON();
    if (j.cell_type === 'code') for (const o of j.outputs) out.push({cell: i, type: o.output_type,
      name: o.ename || o.name || '', text: [].concat(o.text || o.evalue || '').join(''),
      markdown: [].concat((o.data || {})['text/markdown'] || '').join('')}); }
  return {cells: cells.length, outputs: out}; }"""
_IMAGES = """(el) => Array.from(el.querySelectorAll('.widget-output img'))
  .map(i => i.src.length + ':' + i.src.slice(-64)).join('|')"""


def check_notebook(browser, lab: Lab, relpath: str, out: Path,
                   redraw_timeout: float = REDRAW_TIMEOUT_S) -> NotebookCheck:
    """Open ``relpath`` (relative to the lab's root) in a fresh page, Run All, and look at the result."""
    check = NotebookCheck(Path(relpath).stem)
    out.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    logs: list[str] = []
    page.on("console", lambda m: logs.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: logs.append(f"uncaught: {e}"))
    try:
        page.goto(lab.notebook_url(relpath))
        page.wait_for_function(_KERNEL_READY, timeout=120_000, polling=500)
        page.wait_for_timeout(500)
        _shot(page, out / f"{check.name}-0-opened.png", check)
        start = time.monotonic()
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_timeout(1500)
        page.wait_for_function(_RUN_DONE, timeout=RUN_ALL_TIMEOUT_S * 1000, polling=500)
        check.run_all_s = time.monotonic() - start
        page.wait_for_timeout(1000)                      # widget views render after the kernel is idle
        try:
            page.wait_for_function("() => !document.body.innerText.includes('Loading widget...')", timeout=30_000)
        except Exception:
            check.problems.append("widget error: a widget still reads 'Loading widget...' 30 s after the run")
        _look_at_outputs(page, check)
        _look_at_page(page, check)
        _exercise_explorers(page, check, out, redraw_timeout)
        page.locator(".jp-Notebook .jp-Cell").last.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        _shot(page, out / f"{check.name}-9-end.png", check)
        check.problems += [f"console error: {text[:300]}" for text in logs]
        page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
    finally:
        page.close()
    return check


def _shot(target, path: Path, check: NotebookCheck) -> None:
    try:
        target.screenshot(path=str(path))
        check.screenshots.append(path.name)
    except Exception as err:                              # a screenshot is an artifact, not a check
        check.problems.append(f"explorer: screenshot {path.name} failed: {type(err).__name__}")


def _look_at_outputs(page, check: NotebookCheck) -> None:
    state = page.evaluate(_OUTPUTS)
    check.cells = state["cells"]
    for o in state["outputs"]:
        where = f"cell {o['cell']}"
        if o["type"] == "error":
            check.problems.append(f"error output: {where}: {o['name']}: {o['text'][:200]}")
        if o["type"] == "stream" and TEXT_BAR.search(o["text"]):
            line = next(s for s in re.split(r"[\r\n]", o["text"]) if TEXT_BAR.search(s))
            check.problems.append(f"text progress bar: {where}: {line.strip()[:120]!r}")


def _look_at_page(page, check: NotebookCheck) -> None:
    if page.get_by_text("Error displaying widget").count():
        check.problems.append(f"widget error: {page.get_by_text('Error displaying widget').first.inner_text()[:200]}")
    broken = page.locator(".jupyter-widgets-error-widget")     # a view that failed to build: ipywidgets' error box
    if broken.count():
        check.problems.append(f"widget error: {broken.count()} widget(s) show ipywidgets' error box "
                              "('Click to show javascript error.')")
    bars = page.evaluate("""() => Array.from(document.querySelectorAll('.widget-hprogress')).map(el => {
        const bar = el.querySelector('.progress-bar'); const cls = el.className + ' ' + (bar ? bar.className : '');
        return {danger: /danger/.test(cls), width: bar ? parseFloat(bar.style.width || bar.style.height || '0') : 0,
                text: (el.parentElement ? el.parentElement.innerText : '').replace(/\\s+/g, ' ').slice(0, 120)}; })""")
    check.progress_widgets = len(bars)
    for bar in bars:
        if bar["danger"] or bar["width"] < 99.5:
            check.problems.append(f"progress bar: ended {'red' if bar['danger'] else 'short'} at {bar['width']:.0f}%: "
                                  f"{bar['text']!r}")
    for text in page.evaluate("""() => Array.from(document.querySelectorAll('.jp-RenderedMarkdown'))
                                    .map(el => el.innerText)"""):
        for line in text.splitlines():
            if RAW_TABLE.search(line):
                check.problems.append(f"raw table: {line.strip()[:120]!r}")
                break


def _exercise_explorers(page, check: NotebookCheck, out: Path, redraw_timeout: float) -> None:
    """Every ``interactive`` has controls and a figure, and a change of each control draws a new figure."""
    explorers = page.locator(".widget-interact")
    for e in range(explorers.count()):
        box = explorers.nth(e)
        box.scroll_into_view_if_needed()
        controls = box.locator(":scope > .widget-dropdown, :scope > .widget-slider")
        info = {"controls": [], "redraw_s": []}
        check.explorers.append(info)
        if controls.count() == 0 or not box.evaluate(_IMAGES):
            check.problems.append(f"explorer: explorer {e + 1} shows {controls.count()} controls and "
                                  f"{'a' if box.evaluate(_IMAGES) else 'no'} figure")
            continue
        _shot(box, out / f"{check.name}-explorer{e + 1}-0.png", check)
        for c in range(controls.count()):
            control = controls.nth(c)
            label = control.locator("label").first.inner_text().strip() or f"control {c + 1}"
            info["controls"].append(label)
            before = box.evaluate(_IMAGES)
            start = time.monotonic()
            _change(control)
            try:
                page.wait_for_function(f"(el) => ({_IMAGES})(el) !== {json.dumps(before)} && "
                                       "el.querySelectorAll('.widget-output img').length > 0",
                                       arg=box.element_handle(), timeout=redraw_timeout * 1000, polling=200)
                info["redraw_s"].append(round(time.monotonic() - start, 2))
            except Exception:
                shown = box.locator(".widget-output").first.inner_text()     # a traceback, if the draw raised
                last = next((line for line in reversed(shown.splitlines()) if "Error" in line), "")
                shows = f" (it shows: {last.strip()[:160]})" if last else ""
                check.problems.append(f"explorer: explorer {e + 1}: changing {label!r} did not redraw the figure "
                                      f"within {redraw_timeout:g} s{shows}")
                continue
            page.wait_for_timeout(300)
            _shot(box, out / f"{check.name}-explorer{e + 1}-{c + 1}-{_slug(label)}.png", check)


def _change(control) -> None:
    select = control.locator("select")
    if select.count():
        options = select.evaluate("(s) => Array.from(s.options).map(o => o.value)")
        current = select.evaluate("(s) => s.value")
        select.select_option(next((o for o in options if o != current), current))
        return
    handle = control.locator(".noUi-handle").first
    handle.focus()
    at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
    handle.press("ArrowLeft" if at_max else "ArrowRight")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:24] or "control"
