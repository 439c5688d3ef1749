"""The executed course as a static website: ``vislearn site``.

Takes a run folder of ``vislearn run`` (the newest under ``runs/`` by default) and builds, offline, a
website of the series: a home page with the README's introduction and its table of notebooks, one page
per notebook that ran (its stored outputs and figures; nothing is executed again), in series order with
previous/next links and a sidebar, the run's report as a "Measured results" page, and a search box
(Sphinx's search: its index is built into the site, so searching needs no server).

The tool is Jupyter Book 1's own engine, configured directly: Sphinx, myst-nb (reads notebooks and
MyST markdown) and the sphinx-book-theme, all from PyPI. Why not the ``jupyter-book`` command itself:
Jupyter Book 2 builds with the mystmd Node.js tool, which fetches its site theme from the web at build
time, and Jupyter Book 1's command adds sphinx-thebe's script twice with today's versions (a JavaScript
error on every page) and pulls in launch buttons a closed network cannot use. Sphinx loads MathJax
from a CDN by default, so the site carries its own copy (MathJax 3, from the ``django-static-mathjax``
package, used without Django) and the formulas render offline too.

Widgets show their static fallback: the runner executes notebooks with ``VISLEARN_STATIC=1``, so an
explorer's outputs are its static figures. The site goes to ``<run>/site`` by default; it is built
in a temporary folder and moved into place only when the build succeeded, so a failed build never
removes the last good site, and a folder that is not a site built by this command is never replaced.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..config import ParameterError
from .notebooks import default_notebooks_dir

MARKER = ".vislearn-site"
SITE_PACKAGES = "pip install sphinx myst-nb sphinx-book-theme django-static-mathjax"
MATHJAX_FILE = "tex-chtml.js"


def latest_run(runs: Path = Path("runs")) -> Path:
    """The newest run folder under ``runs`` (by its results.json's time) in which a notebook ran."""
    candidates = []
    for results in Path(runs).glob("*/results.json"):
        try:
            run = json.loads(results.read_text())
        except (OSError, ValueError):
            continue
        if any(entry.get("status") == "ok" for entry in run.get("notebooks", {}).values()):
            candidates.append((results.stat().st_mtime, results.parent))
    if not candidates:
        raise ParameterError(f"no run folder with an executed notebook under {Path(runs).resolve()}; "
                             "run the series first (vislearn run --preset smoke) or pass --run DIR")
    return max(candidates)[1]


def build_site(run: str | Path | None = None, out: str | Path | None = None, *, readme: str | Path | None = None,
               quiet: bool = True) -> Path:
    """Build the website of the run folder ``run`` into ``out`` (default ``<run>/site``); returns ``out``.

    Raises:
        ParameterError: no usable run folder, the site's packages missing, ``out`` holds something that is not a
            site built here, or the build failed (its log is named).
    """
    run = Path(run) if run is not None else latest_run()
    results_path = run / "results.json"
    if not results_path.is_file():
        raise ParameterError(f"{run} is not a run folder of `vislearn run` (no results.json)")
    results = json.loads(results_path.read_text())
    notebooks = {stem: entry for stem, entry in sorted(results.get("notebooks", {}).items())
                 if entry.get("status") == "ok" and (run / entry["notebook"]).is_file()}
    if not notebooks:
        raise ParameterError(f"no notebook ran to the end in {run}: nothing to publish")
    out = Path(out) if out is not None else run / "site"
    if out.exists() and not (out / MARKER).is_file():
        raise ParameterError(f"{out} exists and is not a site built by `vislearn site`; choose another --out")
    mathjax = _mathjax_dir()
    readme = Path(readme) if readme is not None else default_notebooks_dir().parent / "README.md"

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".site-", dir=out.parent) as tmp:
        src, build = Path(tmp) / "src", Path(tmp) / "build"
        _write_book(src, run, results, notebooks, readme, mathjax)
        log = out.parent / f"{out.name}-build.log"
        cmd = [sys.executable, "-m", "sphinx", "-b", "html", "--keep-going", "-q", str(src), str(build)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        log.write_text(done.stdout + done.stderr)
        if done.returncode != 0 or not (build / "index.html").is_file() or "WARNING" in done.stderr:
            raise ParameterError(f"the site did not build (exit {done.returncode}); see {log}")
        (build / MARKER).write_text(json.dumps({"run": str(run.resolve()), "notebooks": list(notebooks)}) + "\n")
        old = Path(tmp) / "old"
        if out.exists():
            out.rename(old)          # the previous site leaves only once the new one is complete
        try:
            build.rename(out)
        except OSError:
            if old.exists():
                old.rename(out)
            raise
    if not quiet:
        print(f"site: {out / 'index.html'} ({len(notebooks)} notebooks; build log {log})")
    return out


def _mathjax_dir() -> Path:
    try:
        import mathjax  # the django-static-mathjax package: MathJax 3 files, no Django needed
        import myst_nb  # noqa: F401  (only checked here: the build runs Sphinx in a subprocess)
        import sphinx_book_theme  # noqa: F401
    except ImportError as err:
        raise ParameterError(f"building the site needs Sphinx, myst-nb, the book theme and a local MathJax: "
                             f"{SITE_PACKAGES} "
                             f"(missing: {err.name})") from None
    return Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"


def _copy_mathjax(es5: Path, dest: Path) -> None:
    """The TeX-to-HTML component and what it loads on demand (fonts, TeX extensions, menu, a11y): 7 MB
    of MathJax's 24 (no SVG output, no speech engine)."""
    dest.mkdir(parents=True)
    shutil.copy2(es5 / MATHJAX_FILE, dest / MATHJAX_FILE)
    for part in ("output", "input", "ui", "a11y", "adaptors"):
        if (es5 / part).is_dir():
            shutil.copytree(es5 / part, dest / part)


def _write_book(src: Path, run: Path, results: dict[str, Any], notebooks: dict[str, dict], readme: Path,
                mathjax: Path) -> None:
    src.mkdir(parents=True)
    for stem, entry in notebooks.items():           # the run folder's layout, so the report's links hold
        folder = (run / entry["notebook"]).parent
        shutil.copytree(folder, src / stem, ignore=shutil.ignore_patterns("*.json", ".*"))
    _copy_mathjax(mathjax, src / "_extra" / "mathjax")     # copied as is, next to _static
    report = run / "report.md"
    body = report.read_text() if report.is_file() else "No report in this run folder.\n"
    body = re.sub(r"^# .*\n", "", body, count=1)                       # the page has its own title
    body = re.sub(r"\]\(#(\d\d_\w+)\)", r"](\1/\1.ipynb)", body)       # a notebook's row links to its page
    published = {f"{Path(entry['notebook']).as_posix()}" for entry in notebooks.values()}
    body = re.sub(r"\[([^\]]*)\]\(([^)\s]+\.ipynb)\)",                  # ... when it has one: else plain text
                  lambda m: m.group(0) if m.group(2) in published else m.group(1), body)
    (src / "results.md").write_text("# Measured results\n\n" + body)
    pages = [Path(entry["notebook"]).with_suffix("").as_posix() for entry in notebooks.values()] + ["results"]
    (src / "index.md").write_text(_intro(readme, results, notebooks)
                                  + "\n```{toctree}\n:hidden:\n:maxdepth: 1\n\n" + "\n".join(pages) + "\n```\n")
    settings = {
        "project": "vislearn", "author": "the vislearn course", "root_doc": "index",
        "extensions": ["myst_nb"], "html_theme": "sphinx_book_theme", "html_title": "vislearn",
        "exclude_patterns": ["_extra", "**/.ipynb_checkpoints"],
        "nb_execution_mode": "off", "nb_merge_streams": True,
        # Progress bars are the only widgets a batch run stores, without their state: show their text, and
        # load no widget JavaScript (myst-nb would fetch it from a CDN).
        "nb_ipywidgets_js": {}, "nb_mime_priority_overrides": [("html", "application/vnd.jupyter.widget-view+json",
                                                                  None)],
        "myst_enable_extensions": ["dollarmath", "amsmath", "colon_fence", "html_image"],
        "mathjax_path": f"../mathjax/{MATHJAX_FILE}",      # relative to _static: the site's own copy
        "html_extra_path": ["_extra"], "html_show_sourcelink": False, "html_copy_source": False,
        "html_context": {"default_mode": "light"},
        "html_theme_options": {"home_page_in_toc": True, "show_navbar_depth": 1, "use_download_button": True},
    }
    (src / "conf.py").write_text("# written by vislearn.course.site\n"
                                 + "".join(f"{key} = {value!r}\n" for key, value in settings.items()))


def _intro(readme: Path, results: dict[str, Any], notebooks: dict[str, dict]) -> str:
    """The README's opening paragraphs and its table of notebooks, linked to the site's pages."""
    text = readme.read_text() if readme.is_file() else "# vislearn\n"
    title, _, rest = text.partition("\n")
    opening = rest.split("\n## ", 1)[0].strip()
    table = ""
    if "\n## The notebooks\n" in text:
        table = text.split("\n## The notebooks\n", 1)[1].split("\n## ", 1)[0].strip()
        table = re.sub(r"\]\(notebooks/(\d\d_[\w]+)\.ipynb\)",
                       lambda m: f"]({m.group(1)}/{m.group(1)}.ipynb)" if m.group(1) in notebooks else "]",
                       table)
    run_line = (f"This site shows the run of {results.get('started', '?')}: preset **{results.get('preset')}**, "
                f"device **{results.get('device')}**, {len(notebooks)} notebooks executed"
                f" ({', '.join(notebooks)}). Widgets appear as their static figures; open the notebooks in "
                "JupyterLab for the live explorers. The measured numbers of this run are on the "
                "[Measured results](results.md) page.")
    return f"{title}\n\n{opening}\n\n{run_line}\n\n## The notebooks\n\n{table}\n"
