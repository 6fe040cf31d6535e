"""MkDocs hook: the reStructuredText roles of tinycnn's docstrings, and the math on every page.

Docstrings say ``:class:`~tinycnn.trainer.History``` (Sphinx style) and write formulas as
``:math:`\\partial L/\\partial x = g W```. mkdocstrings renders the backticked part as code
and leaves the role name in front of it. This hook turns

* ``:class:``, ``:func:``, ``:meth:`` ... into links to the object's API entry (through
  mkdocs-autorefs; the ``~`` form shows only the last dotted component, as in Sphinx, and a
  name that is not fully qualified is looked up by its last component);
* ``:math:`` into inline math for MathJax.

It also removes the MathJax 2 configuration that mkdocs-jupyter writes into notebook pages
(MathJax 3, configured in ``docs/javascripts/mathjax-config.js``, serves every page).
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):<code>(~?)([\w.]+)</code>")
MATH = re.compile(r":math:<code>(.*?)</code>", re.DOTALL)
ANCHOR = re.compile(r'\bid="(tinycnn(?:\.\w+)+)"')
AUTOREF = re.compile(r'<autoref identifier="([\w.]+)" optional data-short-ref>')
JUPYTER_MATHJAX = re.compile(
    r'<!-- Load mathjax -->\s*<script src="[^"]*">\s*</script>\s*'
    r"<!-- MathJax configuration -->.*?<!-- End of mathjax configuration -->",
    re.DOTALL,
)

_anchors: set[str] = set()


def _role(match: re.Match[str]) -> str:
    short, target = match.groups()
    title = target.rsplit(".", 1)[-1] if short else target
    return f'<autoref identifier="{target}" optional data-short-ref><code>{title}</code></autoref>'


def resolve(name: str, anchors: set[str]) -> str:
    """The documented identifier that ``name`` means: itself, or the one name ending in it."""
    if name in anchors:
        return name
    last = name.rsplit(".", 1)[-1]
    found = sorted(a for a in anchors if a.rsplit(".", 1)[-1] == last)
    return found[0] if len(found) == 1 else name


def on_page_content(html: str, **kwargs: Any) -> str:
    _anchors.update(ANCHOR.findall(html))
    html = MATH.sub(lambda m: f'<span class="arithmatex">\\({m.group(1)}\\)</span>', html)
    return ROLE.sub(_role, html)


def on_env(env: Any, *, files: Any, **kwargs: Any) -> Any:
    # Runs before mkdocs-autorefs turns <autoref> tags into links (its on_env is late).
    for file in files:
        page = file.page
        if page is not None and page.content:
            page.content = AUTOREF.sub(
                lambda m: f'<autoref identifier="{resolve(m.group(1), _anchors)}" optional>',
                page.content)
    return env


def on_post_page(output: str, **kwargs: Any) -> str:
    return JUPYTER_MATHJAX.sub("", output)
