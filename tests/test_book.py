"""The Jupyter Book builds with warnings as errors, every chapter has its page and its
figures, and a headless Chromium renders the math and the figures."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import ROOT, toc_files

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--virtual-time-budget=15000",
]


def _html(book_copy: Path, page: str) -> Path:
    return book_copy / "_build" / "html" / f"{page}.html"


def test_book_builds_without_warnings(built_book):
    assert built_book.returncode == 0, built_book.stdout[-4000:] + built_book.stderr[-4000:]
    assert "WARNING" not in built_book.stderr


@pytest.mark.parametrize("page", toc_files())
def test_every_chapter_has_a_page(page, book_copy, built_book):
    html = _html(book_copy, page)
    assert html.is_file(), f"no page for {page}"
    text = html.read_text()
    assert re.search(r"<h1[^>]*>", text), f"{page} has no title"
    if page.startswith("notebooks/"):
        images = re.findall(r'<img[^>]+src="([^"]+)"', text)
        figures = [src for src in images if "_images/" in src or src.startswith("data:image")]
        assert figures, f"{page} shows no figure"
        for src in figures:
            if not src.startswith("data:"):
                assert (html.parent / src).resolve().is_file(), f"{page}: missing image {src}"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (.ci/run installs it)")
@pytest.mark.parametrize("page", ["book/method", "notebooks/02_polarization_dynamics"])
def test_page_renders_in_headless_chromium(page, book_copy, built_book, tmp_path):
    url = _html(book_copy, page).as_uri()
    common = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "<title>" in dom and "consensus" in dom.lower()
    if page == "book/method":
        assert dom.count("<mjx-container") > 20, "MathJax did not typeset the equations"
        assert "<svg" in dom
    shot = tmp_path / "page.png"
    subprocess.run([*common, "--window-size=1200,1600", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 20, "the screenshot is (nearly) blank"
    if page.startswith("notebooks/"):
        assert re.search(r'<img[^>]+src="[^"]*_images/', dom), "the rendered page has no figure"


def test_every_install_cell_and_badge_uses_the_configured_repository():
    """The repository URL is set once, in _config.yml (scripts/sync_repository_url.py copies it)."""
    import json
    import re

    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "assignments").rglob("*.ipynb"))
    installs = {}
    for path in notebooks:
        cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]
        installs[path.name] = [m for c in cells for m in re.findall(r"git\+(\S+?)\"", c)]
    assert all(found == [url] for found in installs.values()), installs
    badges = re.findall(r"colab\.research\.google\.com/github/(\S+?)/blob/", (ROOT / "README.md").read_text())
    assert badges and all(b == url.removeprefix("https://github.com/") for b in badges)


OVERFLOW_PROBE = """<script>
window.addEventListener('load', function () {
  setTimeout(function () {
    var bad = [];
    document.querySelectorAll('main table, main pre').forEach(function (el) {
      var limit = el.tagName === 'PRE' ? el.clientWidth : el.parentElement.clientWidth;
      if (el.offsetParent !== null && el.scrollWidth > limit + 1)
        bad.push(el.tagName + ' ' + el.scrollWidth + ' px in ' + limit + ' px: '
                 + el.textContent.trim().replace(/\\s+/g, ' ').slice(0, 60));
    });
    document.body.setAttribute('data-overflow', JSON.stringify(bad));
  }, 300);
});
</script>"""


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (.ci/run installs it)")
@pytest.mark.parametrize("page", toc_files())
def test_no_table_or_code_block_overflows_at_1280_px(page, book_copy, built_book, tmp_path):
    """Every table and code block of every page fits the text column of a 1280 px window."""
    import html
    import json

    original = _html(book_copy, page)
    probe = original.with_name(original.stem + ".overflow-probe.html")
    probe.write_text(original.read_text().replace("</body>", OVERFLOW_PROBE + "</body>"))
    common = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"]
    dom = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'data-overflow="([^"]*)"', dom)
    assert found, "the probe did not run"
    overflowing = json.loads(html.unescape(found.group(1)))
    assert not overflowing, f"{page}: " + "; ".join(overflowing)
