"""The registry site opened in a real browser: Debian's chromium, headless, driven through
chromedriver with Selenium. `crawl` follows every link of every page it reaches."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin

from tests.conftest import ROOT

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def artifacts_dir() -> Path:
    """Where tests keep what a person may want to look at afterwards (screenshots):
    $GOLDENIMAGE_TEST_ARTIFACTS, else test-artifacts/ in the checkout."""
    out = Path(os.environ.get("GOLDENIMAGE_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextmanager
def chromium() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for tool in (CHROMIUM, CHROMEDRIVER):
        assert Path(tool).exists(), f"{tool} missing: scripts/bootstrap installs chromium and chromium-driver"
    profile = tempfile.mkdtemp(prefix="goldenimage-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1600", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def crawl(driver: Any, index: Path) -> dict[str, dict[str, Any]]:
    """Open `index` and every page linked from the pages reached (file:// URLs inside the
    site's directory), in the browser. Returns {url: {"title", "text", "links"}}; a link to
    a file that does not exist fails the crawl, naming both pages."""
    from selenium.webdriver.common.by import By

    root = index.parent.resolve().as_uri() + "/"
    seen: dict[str, dict[str, Any]] = {}
    todo = [index.resolve().as_uri()]
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        path = Path(url.removeprefix("file://"))
        assert path.is_file(), f"link to a missing page: {url}"
        driver.get(url)
        # the attribute as written, resolved against the page (an SVG anchor has no string `href` property)
        links = [urldefrag(urljoin(url, a.get_dom_attribute("href") or ""))[0]
                 for a in driver.find_elements(By.CSS_SELECTOR, "a[href]")]
        seen[url] = {"title": driver.title, "text": driver.find_element(By.TAG_NAME, "body").text, "links": links}
        for link in links:
            assert link.startswith(root), f"{url} links outside the site: {link}"
            if link.endswith(".html") and link not in seen:
                todo.append(link)
            elif not link.endswith(".html"):
                assert Path(link.removeprefix("file://")).is_file(), f"{url}: missing {link}"
    return seen
