"""Griffe extension for the docs build: read ``Example:`` sections as ``Examples:``.

suimseg's docstrings use the Google-style ``Example:`` heading (accepted by Sphinx's
napoleon). Griffe only recognises ``Examples:`` as the examples section and would render
``Example:`` as an admonition whose ``>>>`` lines become Markdown block quotes. This
extension renames the heading before the docstring is parsed, so the examples render as
Python code. It only runs while ``mkdocs build`` loads the API (see ``mkdocs.yml``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` section headings to ``Examples:`` in every docstring."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the docstring of ``obj`` in place (before it is parsed)."""
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE_HEADING.sub(r"\g<indent>Examples:", obj.docstring.value)
