"""mkdocs hook: the README's sections become pages of the site without a copy, and their links keep working.

A page whose source holds the line `<!-- README: Some heading -->` gets that README section in its place: the heading
and everything up to the next heading of the same or a higher level (the title runs to the first `##`). Every file
the README links to (pictures, reports, the changelog), and every file those Markdown files link to, is published at
its repository path, so the README's links resolve unchanged; a link to a README heading that lives on another page
is pointed at that page. A heading or a linked file that is gone fails the build.
"""

from __future__ import annotations

import re
from pathlib import Path

from markdown.extensions.toc import slugify  # type: ignore[import-untyped]
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from mkdocs.utils import get_relative_url

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DIRECTIVE = re.compile(r"^<!-- README: (.+?) -->$", flags=re.MULTILINE)
HEADING = re.compile(r"^(#{1,6}) +(.+?) *#*$")
LINK = re.compile(r"(\]\()([^)\s]+)(\))")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", flags=re.IGNORECASE)

anchor_pages: dict[str, str] = {}  # README heading anchor -> the src_uri of the page that shows it


def _headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line, level, text) of each heading outside fenced code (a `# comment` in a bash block is no heading)."""
    found, fenced = [], False
    for number, line in enumerate(lines):
        if line.startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (match := HEADING.match(line)):
            found.append((number, len(match[1]), match[2]))
    return found


def _section(title: str) -> list[str]:
    lines = README.read_text(encoding="utf-8").splitlines()
    marks = _headings(lines)
    for index, (start, level, text) in enumerate(marks):
        if text == title:
            stop = next((line for line, deeper, _ in marks[index + 1 :] if deeper <= max(level, 2)), len(lines))
            return lines[start:stop]
    raise PluginError(f"README.md has no heading {title!r}: fix the <!-- README: ... --> line that names it")


def _anchor(text: str) -> str:
    """The id mkdocs' toc gives a heading: slugified after inline code and emphasis marks are gone."""
    return str(slugify(re.sub(r"[`*_]", "", text), "-"))


def _linked(markdown: Path, seen: set[Path]) -> None:
    """Files `markdown` links to by relative path, and theirs in turn, added to `seen`."""
    for _, target, _ in LINK.findall(markdown.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0]
        if not path or EXTERNAL.match(path) or path.startswith("/"):
            continue
        file = (markdown.parent / path).resolve()
        if file.is_file() and file.is_relative_to(ROOT) and file not in seen:
            seen.add(file)
            if file.suffix == ".md":
                _linked(file, seen)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    docs = Path(config.docs_dir).resolve()
    linked: set[Path] = set()
    _linked(README, linked)
    for path in sorted(linked):
        if path.is_relative_to(docs) and (copy := files.get_file_from_path(path.relative_to(docs).as_posix())):
            files.remove(copy)  # published once, at its repository path
        files.append(File(path.relative_to(ROOT).as_posix(), str(ROOT), config.site_dir, config.use_directory_urls))
    anchor_pages.clear()
    for page in files.documentation_pages():
        source = page.abs_src_path
        for title in DIRECTIVE.findall(Path(source).read_text(encoding="utf-8") if source else ""):
            for _, _, text in _headings(_section(title)):
                anchor_pages[_anchor(text)] = page.src_uri
    return files


def _relink(lines: list[str], page: Page) -> str:
    """The README's links, seen from `page`: repository paths made relative to it, anchors sent to their page."""

    def relink(match: re.Match[str]) -> str:
        target = match[2]
        if EXTERNAL.match(target) or target.startswith("/"):
            return match[0]
        if target.startswith("#"):
            home = anchor_pages.get(target[1:], page.file.src_uri)
            target = target if home == page.file.src_uri else get_relative_url(home, page.file.src_uri) + target
        else:
            target = get_relative_url(target, page.file.src_uri)
        return f"{match[1]}{target}{match[3]}"

    return "\n".join(LINK.sub(relink, line) for line in lines)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return DIRECTIVE.sub(lambda match: _relink(_section(match[1]), page), markdown)
