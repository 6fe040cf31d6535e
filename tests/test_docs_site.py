"""The documentation site: built with MkDocs, then looked at in a headless browser.

The site is built once (``mkdocs build --strict``) into a temporary folder and served from
127.0.0.1. Without a browser the test checks the HTML: every local link and image resolves,
every notebook page shows its figures, no script comes from another server. With Chromium
(``apt-get install chromium``; ``TINYCNN_CHROMIUM`` names another binary) every page is
rendered, MathJax included, and no formula may be left as raw ``$...$`` or fail to typeset.
``TINYCNN_SITE_SCREENSHOTS=DIR`` also saves a screenshot of a few pages there.

The hooks that prepare docstrings and math are tested directly, without a build.
"""

from __future__ import annotations

import base64
import functools
import html
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ROOT / "docs" / "hooks"
MISSING = [m for m in ("mkdocs", "material", "mkdocstrings", "mkdocs_jupyter", "griffe")
           if importlib.util.find_spec(m) is None]
needs_mkdocs = pytest.mark.skipif(
    bool(MISSING), reason=f"{', '.join(MISSING)} not installed (pip install -e '.[docs]')")


def _chromium() -> str | None:
    given = os.environ.get("TINYCNN_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium not installed (apt-get install chromium, or set TINYCNN_CHROMIUM): "
           "the rendered pages and their math were not checked")


def _load_hook(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", HOOKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- the hooks, without a build

@needs_mkdocs
def test_products_in_docstrings_keep_their_stars() -> None:
    prepare = _load_hook("griffe_docstrings").prepare
    assert prepare("a row of C*kH*kW values") == "a row of C\\*kH\\*kW values"
    assert prepare("(N*OH*OW) rows") == "(N\\*OH\\*OW) rows"
    # code spans, emphasis, bold and **kwargs are left alone
    assert prepare("``C*kH*kW`` and `a*b`") == "``C*kH*kW`` and `a*b`"
    assert prepare("*really* **bold** f(**kwargs)") == "*really* **bold** f(**kwargs)"


@needs_mkdocs
def test_a_shapes_section_becomes_a_table() -> None:
    prepare = _load_hook("griffe_docstrings").prepare
    text = ("Conv.\n\nShapes:\n    x: ``(N, C, H, W)``, the input.\n"
            "    y: ``(N, O, OH, OW)``, with\n        ``OH = H - kH + 1``.\n\nArgs:\n    k: size.")
    out = prepare(text)
    assert "| Name | Shape |" in out
    assert "| `x` | ``(N, C, H, W)``, the input. |" in out
    assert "| `y` | ``(N, O, OH, OW)``, with ``OH = H - kH + 1``. |" in out
    assert out.endswith("Args:\n    k: size.")  # the next section is untouched


def test_roles_become_links_and_math() -> None:
    hook = _load_hook("rst_roles")
    page = hook.on_page_content(
        '<h2 id="tinycnn.trainer.History">History</h2>'
        "<p>see :class:<code>~tinycnn.trainer.History</code> and :func:<code>fit</code>; "
        "backward :math:<code>\\partial L/\\partial x = g W^\\top</code></p>")
    assert '<autoref identifier="tinycnn.trainer.History" optional data-short-ref>' \
           "<code>History</code></autoref>" in page
    assert '<span class="arithmatex">\\(\\partial L/\\partial x = g W^\\top\\)</span>' in page
    anchors = {"tinycnn.trainer.History", "tinycnn.trainer.Trainer.fit", "tinycnn.optim.SGD"}
    assert hook.resolve("fit", anchors) == "tinycnn.trainer.Trainer.fit"
    assert hook.resolve("tinycnn.SGD", anchors) == "tinycnn.optim.SGD"
    assert hook.resolve("nowhere", anchors) == "nowhere"


# ---------------------------------------------------------------- the built site

class _Page(HTMLParser):
    """Links, image sources, script sources and element ids of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.scripts: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag == "link" and "href" in a and a.get("rel") != "canonical":
            self.links.append(a["href"])
        elif tag == "img" and "src" in a:
            self.images.append(a["src"])
        elif tag == "script" and "src" in a:
            self.scripts.append(a["src"])


@pytest.fixture(scope="module")
def site() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tinycnn-site-") as tmp:
        out = Path(tmp) / "site"
        env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
        result = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-3000:]}"
        yield out


def _pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("index.html") if "assets" not in p.parts)


def _url(site: Path, page: Path) -> str:
    return "/" + page.relative_to(site).as_posix()


@functools.cache
def _parse(page: Path) -> _Page:
    parser = _Page()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@needs_mkdocs
def test_every_local_link_and_image_resolves(site: Path) -> None:
    broken = []
    for page in _pages(site):
        parsed = _parse(page)
        base = "http://site" + _url(site, page)
        for ref in parsed.links + parsed.images + parsed.scripts:
            if ref.startswith(("data:", "mailto:", "javascript:")):
                continue
            target = urlsplit(urljoin(base, ref))
            if target.netloc != "site":
                continue
            path = site / unquote(target.path).lstrip("/")
            if path.is_dir():
                path = path / "index.html"
            if not path.is_file():
                broken.append(f"{_url(site, page)} -> {ref}")
            elif target.fragment and path.suffix == ".html" and \
                    target.fragment not in _parse(path).ids:
                broken.append(f"{_url(site, page)} -> {ref} (no such anchor)")
    assert not broken, f"{len(broken)} broken links, e.g.:\n" + "\n".join(broken[:20])


@needs_mkdocs
def test_scripts_are_served_with_the_site(site: Path) -> None:
    # MathJax included: the site works offline and does not depend on a CDN.
    outside = {(_url(site, p), s) for p in _pages(site) for s in _parse(p).scripts
               if urlsplit(s).netloc}
    assert not outside, f"scripts loaded from other servers: {sorted(outside)[:5]}"


@needs_mkdocs
def test_notebook_pages_show_their_figures(site: Path) -> None:
    for source in sorted((ROOT / "docs" / "notebooks").glob("*.ipynb")):
        nb = json.loads(source.read_text(encoding="utf-8"))
        figures = sum("image/png" in o.get("data", {}) for c in nb["cells"]
                      for o in c.get("outputs", []))
        page = site / "notebooks" / source.stem / "index.html"
        images = [s for s in _parse(page).images if s.startswith("data:image/png;base64,")]
        assert len(images) >= figures, f"{source.stem}: {len(images)} of {figures} figures shown"
        for src in images:
            assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
        text = page.read_text(encoding="utf-8")
        assert f'href="{source.stem}.ipynb"' in text, f"{source.stem}: no download link"
        assert "MathJax.Hub.Config" not in text, f"{source.stem}: MathJax 2 configuration left"


@needs_mkdocs
def test_api_pages_link_their_references(site: Path) -> None:
    pages = sorted((site / "api").rglob("index.html"))
    text = {p.parent.name: p.read_text(encoding="utf-8") for p in pages}
    left = [name for name, page in text.items() if ROLE_LEFT.search(page)]
    assert not left, f"API pages with a raw :class:/:func: role: {left}"
    links = sum(len(LINKED_NAME.findall(page)) for page in text.values())
    assert links > 0, "no docstring reference became a link"
    assert all("Source code in" in page for name, page in text.items() if name != "api"), \
        "an API page shows no source"


ROLE_LEFT = re.compile(r":(?:class|func|meth|mod|attr|exc|math):<code>")
LINKED_NAME = re.compile(r'<a class="autorefs autorefs-internal"[^>]*><code>\w+</code></a>')


@needs_mkdocs
def test_the_home_page_has_a_picture(site: Path) -> None:
    images = _parse(site / "index.html").images
    assert any(src.endswith(".png") for src in images), f"home page images: {images}"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _chromium_run(args: list[str], url: str) -> str:
    with tempfile.TemporaryDirectory(prefix="tinycnn-chromium-") as profile:
        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                   "--no-first-run", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync",
                   f"--user-data-dir={profile}", "--virtual-time-budget=20000", *args, url]
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, f"chromium failed on {url}: {result.stderr[-1500:]}"
        return result.stdout


def render(url: str) -> str:
    """The page's DOM after its scripts (MathJax included) have run."""
    return _chromium_run(["--dump-dom"], url)


HIDDEN = re.compile(r"<(script|style|code|pre|mjx-container|textarea|svg)\b.*?</\1>",
                    re.DOTALL | re.IGNORECASE)
TAG = re.compile(r"<[^>]+>")
STYLES = re.compile(r"<(script|style)\b.*?</\1>", re.DOTALL | re.IGNORECASE)
RAW_MATH = re.compile(r"\$[^$\s][^$]*?\$|\\\(|\\\[|\\(?:frac|partial|lfloor|sum|begin|top)\b")


def _raw_math(dom: str) -> list[str]:
    text = html.unescape(TAG.sub(" ", HIDDEN.sub(" ", dom)))
    return [m.group(0)[:60] for m in RAW_MATH.finditer(text)]


@needs_mkdocs
@needs_chromium
def test_math_is_typeset_on_every_page(site: Path, served: str) -> None:
    pages = _pages(site)

    def check(page: Path) -> tuple[str, list[str], int, int]:
        dom = render(served + _url(site, page))
        shown = STYLES.sub(" ", dom)  # MathJax's own stylesheet names merror too
        # a TeX error, or an unknown macro (MathJax shows its name in red)
        errors = sum(shown.count(mark) for mark in (
            'data-mml-node="merror"', "<mjx-merror", '<mtext mathcolor="red">'))
        return _url(site, page), _raw_math(dom), dom.count("<mjx-container"), errors

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(check, pages))
    raw = [f"{url}: {found[:3]}" for url, found, _, _ in results if found]
    assert not raw, "raw math left on pages:\n" + "\n".join(raw)
    errors = [url for url, _, _, merror in results if merror]
    assert not errors, f"MathJax could not typeset formulas on {errors}"
    typeset = {url: count for url, _, count, _ in results}
    for url in ("/notebooks/01_convolution_by_hand/index.html", "/tutorial/index.html"):
        assert typeset[url] > 0, f"{url}: no formula was typeset (is MathJax loading?)"
    screenshots = os.environ.get("TINYCNN_SITE_SCREENSHOTS")
    if screenshots:
        Path(screenshots).mkdir(parents=True, exist_ok=True)
        for name in ("index.html", "api/layers/index.html",
                     "notebooks/01_convolution_by_hand/index.html",
                     "notebooks/06_cnn_on_mnist/index.html"):
            png = Path(screenshots) / (name.replace("/", "_").removesuffix("_index.html")
                                       .removesuffix(".html") + ".png")
            _chromium_run([f"--screenshot={png}", "--window-size=1280,2400",
                           "--hide-scrollbars"], f"{served}/{name}")
