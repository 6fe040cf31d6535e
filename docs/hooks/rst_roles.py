"""MkDocs hook: render the reStructuredText roles used in tinycnn's docstrings.

Docstrings say ``:class:`~tinycnn.trainer.History``` (Sphinx style). mkdocstrings renders
the backticked part as code and leaves the role name in front of it; this hook drops the
role and, for the ``~`` form, keeps only the last dotted component (Sphinx's meaning).
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):<code>(~?)([\w.]+)</code>")


def _replace(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if short else target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    return ROLE.sub(_replace, html)
