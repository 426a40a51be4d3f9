"""The built documentation site opens in headless Chromium without errors.

Runs on ``site/`` as ``make docs`` leaves it (``.ci/run`` builds the site, then runs this file);
skips with the reason when the site or Chromium is missing. The site is served over HTTP from
127.0.0.1, as a reader's browser would load it, and every request leaving that server is refused
and reported: the pages must work offline.
"""
from __future__ import annotations

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "site"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TUTORIAL = "generated/tutorials/02_pairwise/"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    if not (SITE / "index.html").is_file():
        pytest.skip(f"{SITE} was not built (run `make docs` first; .ci/run does)")
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} is not installed (make system-deps installs Debian's chromium)")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(SITE)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _visit(base: str, page: str) -> dict:
    """Open ``page``; return console errors, refused requests, failed responses and the images' sizes."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    found: dict = {"errors": [], "external": [], "failed": []}
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.on("console", lambda m: found["errors"].append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: found["errors"].append(str(e)))
            tab.on("response", lambda r: found["failed"].append(f"{r.status} {r.url}") if r.status >= 400 else None)

            def route(r) -> None:
                if r.request.url.startswith((base, "data:")):
                    r.continue_()
                else:
                    found["external"].append(r.request.url)
                    r.abort()

            tab.route("**/*", route)
            tab.goto(base + page, wait_until="networkidle")
            found["title"] = tab.title()
            found["images"] = tab.eval_on_selector_all(
                "article img", "els => els.map(e => [e.complete, e.naturalWidth])")
            found["nav"] = tab.eval_on_selector_all("nav a", "els => els.map(e => e.textContent.trim())")
        finally:
            browser.close()
    return found


def test_start_page_opens_cleanly(server: str) -> None:
    """The start page loads with no console error, no failed or external request, and links every section."""
    found = _visit(server, "")
    assert not found["errors"] and not found["failed"] and not found["external"], found
    assert "torchalign" in found["title"]
    for section in ("Tutorials", "Conventions", "API reference", "Coming from ANTs, deepali, torchreg"):
        assert section in found["nav"], (section, found["nav"])


def test_tutorial_shows_its_executed_figures(server: str) -> None:
    """A tutorial page loads cleanly and its figures (rendered by the build) decode to real images."""
    found = _visit(server, TUTORIAL)
    assert not found["errors"] and not found["failed"] and not found["external"], found
    images = found["images"]
    assert len(images) >= 4 and all(ok and width > 100 for ok, width in images), images
