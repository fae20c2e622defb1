"""The one exception type a user should ever see from vaekit.

A `VaekitError` carries a single line that names the problem and the fix. The CLI prints it and exits with code 2;
anything else escaping is a bug, and shows a traceback so it can be reported.

Messages quote what they were given (a file's key, a library's own error text), and that text may hold line breaks
or terminal control characters: the message is made one line here, once, rather than by every caller.
"""

from __future__ import annotations

import re

_BREAKS = re.compile(r"\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+\s*")  # what str.splitlines() breaks at


def one_line(text: str) -> str:
    """`text` as one printable line: line breaks become a space, other unprintable characters their escapes."""
    text = _BREAKS.sub(" ", text).strip()
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


class VaekitError(Exception):
    """Bad input or an unusable run folder, described in one line for a person to act on."""

    def __init__(self, message: object = "", *rest: object) -> None:
        super().__init__(one_line(str(message)), *rest)
