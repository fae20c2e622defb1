"""mkdocs hook: each `<!-- parts: KIND -->` marker in a page becomes that kind's table of registered parts, so a new
part's module reaches the docs by itself. Every other line of a page is its own source."""

from __future__ import annotations

from typing import Any

import vaekit  # noqa: F401 (importing the package registers every part of the model)
from vaekit.analysis import samplers
from vaekit.parts import fill_part_tables

samplers.load()  # the samplers register when `vaekit sample` needs them


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return fill_part_tables(markdown)
