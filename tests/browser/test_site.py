"""The course's website (``vislearn site``) in a real browser: the index lists the series in order with a
search box that finds pages, and a notebook page shows its figures and formulas, all without network.

The site is ``$VISLEARN_SITE`` (scripts/test.sh builds it from the smoke run of the whole series) or,
when unset, one built here from a smoke run of notebook 01.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
from pathlib import Path

import pytest

from vislearn.course.runner import run_series
from vislearn.course.site import MARKER, build_site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if os.environ.get("VISLEARN_SITE"):
        return Path(os.environ["VISLEARN_SITE"])
    run = tmp_path_factory.mktemp("site-run") / "run"
    summary = run_series(["01"], preset="smoke", device="cpu", out=run, progress=False)
    assert summary.ok, summary.failed
    return build_site(run)


@pytest.fixture(scope="module")
def served(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _page(browser, requests_outside: list[str], errors: list[str]):
    """A page that records requests leaving 127.0.0.1, JavaScript errors and missing files (but the
    favicon, which the browser asks for and a Sphinx site does not have)."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.on("console", lambda m: errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    page.on("request", lambda r: None if r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
            else requests_outside.append(r.url))
    return page


def test_index_lists_the_series_in_order_and_search_finds_pages(browser, served, site, artifacts):
    notebooks = json.loads((site / MARKER).read_text())["notebooks"]
    outside, errors = [], []
    page = _page(browser, outside, errors)
    page.goto(f"{served}/index.html")
    nav = [a.get_attribute("href") for a in page.locator("nav.bd-docs-nav a.reference.internal").all()]
    pages = [h.split("#")[0].removesuffix(".html").split("/")[-1] for h in nav if h and not h.startswith("#")]
    assert [p for p in pages if p[:2].isdigit()] == notebooks, pages
    assert "results" in pages
    page.screenshot(path=str(artifacts / "site-index.png"))
    assert page.locator("input[name=q], .search-button, .search-button-field").count() > 0, "no search box"
    word = max(notebooks[0].split("_")[1:], key=len)       # e.g. "quantization" for 06_product_quantization
    page.goto(f"{served}/search.html?q={word}")
    page.wait_for_function("() => document.querySelectorAll('#search-results li, ul.search li').length > 0",
                           timeout=30_000)
    hits = [a.get_attribute("href") or "" for a in page.locator("#search-results li a, ul.search li a").all()]
    page.screenshot(path=str(artifacts / "site-search.png"))
    assert any(notebooks[0] in h for h in hits), (word, hits)
    assert not outside, f"the site asked the network for: {outside[:5]}"
    assert not errors, errors
    page.close()


def test_a_notebook_page_shows_its_figures_and_formulas(browser, served, site, artifacts):
    first = json.loads((site / MARKER).read_text())["notebooks"][0]
    outside, errors = [], []
    page = _page(browser, outside, errors)
    page.goto(f"{served}/{first}/{first}.html")
    page.wait_for_load_state("networkidle")
    images = page.evaluate("() => Array.from(document.querySelectorAll('main img'))"
                           ".map(i => [i.complete && i.naturalWidth > 0, i.src.slice(0, 60)])")
    assert len(images) >= 3, images
    assert all(ok for ok, _ in images), [src for ok, src in images if not ok]
    page.wait_for_function("() => document.querySelectorAll('mjx-container').length > 0",
                           timeout=30_000)              # the site's own MathJax typeset the formulas
    raw = page.evaluate("() => Array.from(document.querySelectorAll('span.math')).filter(s => !s.querySelector("
                        "'mjx-container')).length")
    assert raw == 0, f"{raw} formulas left as TeX"
    page.screenshot(path=str(artifacts / "site-notebook.png"), full_page=False)
    assert not outside, f"the site asked the network for: {outside[:5]}"
    assert not errors, errors
    page.close()
