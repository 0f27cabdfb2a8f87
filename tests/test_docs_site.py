"""The documentation site: built strictly, then read in headless Chromium from the folder.

``mkdocs build --strict`` fails on a broken link or anchor, a page missing from the
navigation and a docstring the API reference cannot read. Each built page is then
opened from ``file://`` (as from a download, no server) in a real Chromium that cannot
reach the network: it must show its heading, every link of its navigation must lead to
a built page, it must log no console error and fetch nothing remote, and search must
answer offline.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .browser import HEIGHT, WIDTH, Browser
from .procs import ROOT

DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).with_suffix(".html").as_posix() for p in DOCS.rglob("*.md"))
NAV_LINKS = "[...document.querySelectorAll('nav.md-nav a.md-nav__link[href]')].map(a => a.href)"
CONTENT_LINKS = "[...document.querySelectorAll('article a[href]')].map(a => a.href)"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module with ``mkdocs build --strict``."""
    out = tmp_path_factory.mktemp("site")
    started = time.monotonic()
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )  # fmt: skip
    assert built.returncode == 0, f"mkdocs build --strict failed:\n{built.stdout[-3000:]}\n{built.stderr[-5000:]}"
    print(f"mkdocs build --strict: {time.monotonic() - started:.1f} s")
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    chromium = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield chromium
    finally:
        chromium.close()


def test_the_build_is_strict_and_complete(site: Path) -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert re.search(r"^strict: true$", config, re.M) and re.search(r"^use_directory_urls: false", config, re.M)
    missing = [page for page in PAGES if not (site / page).is_file()]
    assert not missing, f"pages not built: {missing}"
    in_nav = set(_nav_pages(yaml.safe_load(config)["nav"]))
    outside = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if p.relative_to(DOCS).as_posix() not in in_nav)
    assert not outside, f"add these pages to the nav of mkdocs.yml: {outside}"
    assert (site / "search" / "search_index.js").is_file(), "the offline plugin inlines the search index for file://"


def test_nothing_is_fetched_from_the_network(site: Path) -> None:
    """No web fonts, no CDN script, no analytics: every resource a page loads is in the folder."""
    remote = re.compile(r"""(?:src|href)=["'](?:https?:)?//""", re.I)
    for page in site.rglob("*.html"):
        head = page.read_text(encoding="utf-8").split("<body", 1)[0]
        assert not remote.search(head), f"{page.name} loads {remote.search(head)}"
    assert "fonts.googleapis" not in (site / "index.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("page", PAGES)
def test_each_page_renders_offline(site: Path, browser: Browser, page: str) -> None:
    browser.open((site / page).as_uri())
    heading = browser.poll("document.querySelector('article h1')?.innerText ?? ''", bool)
    assert heading, f"{page}: no heading rendered"
    title = browser.evaluate("document.title")
    assert title == "asyncapy" or title.endswith(" - asyncapy"), f"{page}: title {title!r}"
    assert browser.evaluate("document.querySelector('.md-header').getBoundingClientRect().height") > 20  # the theme's CSS applied
    nav = browser.evaluate(NAV_LINKS)
    assert len(nav) >= len(PAGES) - 1, f"{page}: the navigation lists {len(nav)} links"
    broken = [url for url in nav + browser.evaluate(CONTENT_LINKS) if _broken(url, site)]
    assert not broken, f"{page}: links to nothing: {broken}"
    assert not browser.console_errors(), f"{page}: {browser.console_errors()}"
    assert not browser.remote_requests(), f"{page} reached for the network: {browser.remote_requests()}"


def _nav_pages(entry: Any) -> Iterator[str]:
    """The page files of mkdocs.yml's ``nav``, however nested."""
    if isinstance(entry, str):
        yield entry
    elif isinstance(entry, list):
        for item in entry:
            yield from _nav_pages(item)
    elif isinstance(entry, dict):
        for value in entry.values():
            yield from _nav_pages(value)


def _broken(url: str, site: Path) -> bool:
    """A link into the folder that leads to no file (links out of the site are not followed)."""
    if not url.startswith("file://"):
        return False
    path = Path(url[len("file://") :].split("#", 1)[0].split("?", 1)[0])
    return site in path.parents and not path.is_file()


def test_navigation_leads_to_the_page(site: Path, browser: Browser) -> None:
    browser.open((site / "index.html").as_uri())
    browser.evaluate("[...document.querySelectorAll('a.md-nav__link')].find(a => a.innerText.trim() === 'Tutorial').click()")
    title = browser.poll("document.querySelector('article h1')?.innerText ?? ''", lambda t: "Tutorial" in t)
    assert "Tutorial: a notes service" in title
    assert browser.evaluate("location.pathname").endswith("/tutorial.html")
    assert not browser.console_errors(), browser.console_errors()


@pytest.mark.parametrize(("query", "expect"), [("ZiProto", "wire.html"), ("RedisState", "scaling.html"), ("lifespan", "application.html")])
def test_search_answers_offline(site: Path, browser: Browser, query: str, expect: str) -> None:
    """Typed into the search box of a page opened from file://, a word finds its pages."""
    browser.open((site / "index.html").as_uri())
    typed = f"""(() => {{
        const input = document.querySelector('input.md-search__input');
        input.focus();
        input.value = {query!r};
        input.dispatchEvent(new Event('input', {{bubbles: true}}));
        input.dispatchEvent(new KeyboardEvent('keyup', {{bubbles: true, key: 'n'}}));
        return true;
    }})()"""
    results = "[...document.querySelectorAll('.md-search-result__item a')].map(a => a.href)"
    found: list[str] = []
    for _ in range(3):  # the search worker may still be loading its index when the first query is typed
        browser.evaluate(typed)
        found = browser.poll(results, bool, timeout=10)
        if found:
            break
    meta = browser.evaluate("document.querySelector('.md-search-result__meta')?.innerText")
    assert found, f"no results for {query!r}: {meta}"
    assert any(expect in url for url in found), (query, found)
    assert not [url for url in found if _broken(url, site)], found
    assert not browser.console_errors(), browser.console_errors()


def test_the_home_page_screenshot(site: Path, browser: Browser, tmp_path: Path) -> None:
    """Chromium paints the home page; docs/site-home.png is such a picture (python -m tests.browser)."""
    browser.open((site / "index.html").as_uri())
    shot = tmp_path / "home.png"
    browser.screenshot(shot)
    assert _png_size(shot) == (WIDTH, HEIGHT) and shot.stat().st_size > 40_000  # a blank page is a few kB
    kept = DOCS / "site-home.png"
    assert kept.is_file() and _png_size(kept) == (WIDTH, HEIGHT), "make it: see docs/internals.md"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height
