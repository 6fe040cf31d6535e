"""Griffe extension: prepare tinycnn's docstrings for the API pages before Markdown sees them.

* A ``*`` between two word characters (``C*kH*kW`` written as plain text) is a product, not
  the start of italics: it is escaped, so the page shows it.
* A ``Shapes:`` section, written like ``Args:`` (one ``name: shape and meaning`` line per
  array, indented), becomes a table like the one mkdocstrings draws for ``Args:``.

Backward formulas written as ``:math:`...``` (LaTeX) are typeset by the page hook in
``rst_roles.py``; code spans are left as they are.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

CODE_SPAN = re.compile(r"(``.+?``|`[^`\n]+`)")
PRODUCT_STAR = re.compile(r"(?<=[\w)\]])\*(?=[\w(\[])")
SECTION = re.compile(r"^(?P<indent>[ \t]*)Shapes?:[ \t]*$")
ITEM = re.compile(r"^(?P<name>[\w.*\[\]]+)\s*:\s*(?P<text>.*)$")


def escape_products(text: str) -> str:
    """Escape ``*`` between word characters, outside code spans."""
    parts = CODE_SPAN.split(text)
    return "".join(part if i % 2 else PRODUCT_STAR.sub(r"\\*", part)
                   for i, part in enumerate(parts))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").strip()


def shapes_to_table(text: str) -> str:
    """Turn every ``Shapes:`` section into a Markdown table (name, shape and meaning)."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = SECTION.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = len(match["indent"].expandtabs())
        body: list[str] = []
        i += 1
        while i < len(lines) and (not lines[i].strip()
                                  or len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i].strip())
            i += 1
        while body and not body[-1]:
            body.pop()
        rows: list[list[str]] = []
        for line in body:
            item = ITEM.match(line)
            if item and line:
                rows.append([item["name"], item["text"]])
            elif rows and line:  # a continuation line of the previous entry
                rows[-1][1] += " " + line
        pad = " " * indent
        out += [f'{pad}<p><span class="doc-section-title">Shapes:</span></p>', "",
                f"{pad}| Name | Shape |", f"{pad}|---|---|"]
        out += [f"{pad}| `{_cell(name)}` | {_cell(shape)} |" for name, shape in rows]
        out.append("")
    return "\n".join(out)


def prepare(text: str) -> str:
    return escape_products(shapes_to_table(text))


class TinycnnDocstrings(Extension):
    """Applies :func:`prepare` to every docstring griffe loads."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = prepare(obj.docstring.value)
