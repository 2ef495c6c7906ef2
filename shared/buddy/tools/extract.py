"""A page's main content as Markdown, and its metadata, by trafilatura.

trafilatura is the reference open-source extractor (bench/extraction.py measures it against
the hand-written one it replaced). It is imported on first use: it costs a third of a second,
which no mission that fetches nothing should pay.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# Markdown that is only markup: what is left of a line after these is its words.
_MARKUP = re.compile(r"^\s*(?:#{1,6}\s|[-*+]\s|\d+\.\s|>\s?)|\*\*|__|`|~~|\|")
_LANG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")
# A Markdown link as trafilatura writes them: [text](target) or [text](<target>), the text
# perhaps with escaped brackets in it (an image, ![alt](src), is a link after its "!").
_MD_LINK = re.compile(r"(?<!\\)\[((?:[^\]\\]|\\.)*)\]\((?:<([^>\n]*)>|([^)\s]*))\)")
_SAFE_SCHEMES = ("http://", "https://", "mailto:")
_SPACES = re.compile(r"(?<=\S) {2,}")
_ESCAPED = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|<>~])")


@dataclass(frozen=True)
class Extracted:
    """What a page says: Markdown (headings, lists, tables, links) and the same as plain text."""

    title: str
    markdown: str
    text: str
    author: str | None = None
    date: str | None = None
    site_name: str | None = None
    language: str | None = None


# Below this much text the page is tried again with MIN_EXTRACTED_SIZE=1, which keeps
# trafilatura from falling back to a baseline that includes navigation on short pages (and
# is worse on long ones: bench/extraction.py measured both, F1 0.958 for this rule).
SHORT_TEXT_CHARS = 1000


def config(min_extracted_size: int | None = None) -> Any:
    """trafilatura's settings as the tool uses them (bench/extraction.py tries others)."""
    from trafilatura.settings import use_config

    config = use_config()
    # A timeout through signals works only on the main thread; the worker runs tools in
    # others. The page is size-capped before it gets here, and the tool has a time budget.
    config.set("DEFAULT", "EXTRACTION_TIMEOUT", "0")
    if min_extracted_size is not None:
        config.set("DEFAULT", "MIN_EXTRACTED_SIZE", str(min_extracted_size))
    return config


@functools.cache
def _configs() -> tuple[Any, Any]:
    return config(), config(min_extracted_size=1)


def document(
    html: str,
    url: str,
    settings: Any,
    favor_precision: bool = False,
    favor_recall: bool = False,
) -> Any:
    """trafilatura's Document for the page (Markdown in .text), or None. The tool uses
    neither focus (bench/extraction.py measures both)."""
    import trafilatura

    return trafilatura.bare_extraction(
        html,
        url=url,
        with_metadata=True,
        include_comments=False,
        include_tables=True,
        include_links=True,
        include_formatting=True,
        config=settings,
        favor_precision=favor_precision,
        favor_recall=favor_recall,
    )


def extract_html(html: str, url: str, lang: str | None = None) -> Extracted | None:
    """The main content of an HTML page, or None when trafilatura finds none.

    lang is the page's declared language (<html lang>), which trafilatura does not read.
    """
    default, short = _configs()
    try:
        found = document(html, url, default)
        if found is None or len(found.text or "") < SHORT_TEXT_CHARS:
            found = document(html, url, short) or found
    except RecursionError:  # markup nested deeper than its recursive walk goes
        log.warning("extraction gave up on deeply nested markup", extra={"url": url})
        return None
    markdown = tidy(safe_links(found.text or "")) if found is not None else ""
    if not markdown:
        return None
    return Extracted(
        title=(found.title or "").strip(),
        markdown=markdown,
        text=plain(markdown),
        author=found.author or None,
        date=found.date or None,
        site_name=found.sitename or None,
        language=language(lang),
    )


def tidy(markdown: str) -> str:
    """Runs of spaces inside lines made one, outside code blocks (HTML collapses them)."""
    lines, code = [], False
    for line in markdown.strip().splitlines():
        if line.lstrip().startswith("```"):
            code = not code
        lines.append(line if code else _SPACES.sub(" ", line).rstrip())
    return "\n".join(lines)


def safe_links(markdown: str) -> str:
    """Links to anything but http(s) and mailto (javascript:, data:, a page's own schemes)
    become their text: a client that renders the Markdown is never handed one."""

    def kept(match: re.Match[str]) -> str:
        target = (match.group(2) or match.group(3) or "").lower()
        return match.group(0) if target.startswith(_SAFE_SCHEMES) else match.group(1)

    return _MD_LINK.sub(kept, markdown)


def plain(markdown: str) -> str:
    """Markdown without its markup or escapes, for counting words and quoting sentences."""
    lines = (_MARKUP.sub(" ", _MD_LINK.sub(r"\1", line)) for line in markdown.splitlines())
    return _ESCAPED.sub(r"\1", "\n".join(lines))


def language(tag: str | None) -> str | None:
    """'en-GB' from a page's lang attribute; None for nothing or nonsense."""
    tag = (tag or "").strip()
    return tag if _LANG.match(tag) else None
