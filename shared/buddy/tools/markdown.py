"""Markdown that tools write from untrusted strings: text that shows as itself, links that
stay links, and cuts that leave the rest of a document as it was."""

from __future__ import annotations

import re
from urllib.parse import quote

from buddy.domain.sizes import clip_utf8

# What starts Markdown's inline syntax (emphasis, code, links, images, raw HTML, strikethrough)
# wherever it stands; "!" needs a "[" after it, which is escaped.
_INLINE = re.compile(r"([\\`*_\[\]<~])")
# An entity reference ("&lt;") is decoded by Markdown, so "&" before one is escaped.
_ENTITY = re.compile(r"&(?=#?\w+;)")
# What starts a block at the beginning of a line: heading, quote, list item, rule, setext.
_BLOCK = re.compile(r"^(?:([#>+=-])|(\d{1,9})([.)]))")
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^#{1,6}[ \t]+")
_BACKTICKS = re.compile(r"`+")


def markdown_text(text: str) -> str:
    """Untrusted one-line text as Markdown that shows exactly that text: it cannot become a
    link, an image, HTML or a heading."""
    text = _ENTITY.sub(r"\\&", _INLINE.sub(r"\\\1", " ".join(text.split())))
    return _BLOCK.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", text)


def markdown_url(url: str) -> str:
    """A URL as a Markdown link destination: what would end or break it percent-encoded
    (parentheses, spaces, angle brackets, backslashes, non-ASCII)."""
    encoded = quote(url, safe="/:?#[]@!$&'*+,;=%~")
    return _ENTITY.sub(r"\\&", encoded)


def markdown_link(title: str, url: str) -> str:
    """[title](url), the title shown as given (or the URL when there is none)."""
    return f"[{markdown_text(title or url)}]({markdown_url(url)})"


def escaped_lines(text: str) -> str:
    """Plain text of lines as Markdown paragraphs showing exactly those lines."""
    return "\n\n".join(markdown_text(line) for line in text.splitlines() if line.strip())


def fence_for(text: str) -> str:
    """The fence of a code block holding text verbatim: longer than any run of backticks in
    it, so that nothing in the text can close the block."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    return "`" * max(3, longest + 1)


def fenced(text: str) -> str:
    """Text shown verbatim, whitespace and all, as a code block."""
    fence = fence_for(text)
    return f"{fence}text\n{text}\n{fence}"


def _fences(lines: list[str]) -> tuple[list[str | None], str | None]:
    """For each line, the fence of the code block it is part of (None outside); and the
    fence still open after the last line."""
    inside: list[str | None] = []
    open_fence: str | None = None
    for line in lines:
        match = _FENCE.match(line)
        if open_fence is None:
            open_fence = match.group(1) if match else None
            inside.append(open_fence)
            continue
        inside.append(open_fence)
        closing = match.group(1) if match and line.strip() == match.group(1) else ""
        if closing[:1] == open_fence[0] and len(closing) >= len(open_fence):
            open_fence = None
    return inside, open_fence


def demote_headings(markdown: str, level: int = 4) -> str:
    """Headings (outside code blocks) at `level`: a page's "# Intro" under a report's own."""
    lines = markdown.splitlines()
    return "\n".join(
        line if fence is not None else _HEADING.sub("#" * level + " ", line)
        for line, fence in zip(lines, _fences(lines)[0], strict=True)
    )


def clip_markdown(markdown: str, max_bytes: int) -> tuple[str, bool]:
    """Markdown cut to max_bytes of UTF-8 at a line's end, a code block left open by the cut
    closed; and whether it was cut."""
    clipped = clip_utf8(markdown, max_bytes - 8)  # room for a closing fence
    if len(clipped) == len(markdown):
        return markdown, False
    lines = clipped.splitlines()[:-1] or [clipped]  # the last line is likely cut short
    still_open = _fences(lines)[1]
    if still_open is not None:
        lines.append(still_open)
    return "\n".join(lines), True
