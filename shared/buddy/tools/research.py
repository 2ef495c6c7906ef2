"""research: search, read the best sources inside the allowed domains, write one report.

Where it got to is saved after the search and after every source (`ToolContext.save`), and
the runner keeps that state when the mission pauses or fails: a resumed or retried mission
reads what it saved instead of searching or fetching again, and fetches only the sources
it had not read (such as the ones on a host the owner has just allowed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urldefrag

from pydantic import Field

from buddy.domain.intent import RESEARCH
from buddy.tools.base import (
    INTEGRAL_FLOATS,
    ToolCancelled,
    ToolContext,
    ToolError,
    ToolInputs,
    ToolOverBudget,
    ToolPaused,
    ToolResult,
)
from buddy.tools.extract import plain
from buddy.tools.markdown import (
    clip_markdown,
    demote_headings,
    fenced,
    markdown_link,
    markdown_text,
)
from buddy.tools.search import (
    MAX_QUERY_LENGTH,
    NO_PROVIDER,
    OVERFETCH,
    SearchHit,
    SearchProvider,
    query_from_objective,
)
from buddy.tools.web import (
    MAX_TITLE_CHARS,
    HostNotAllowed,
    WebPolicy,
    clip,
    extract,
    fetch,
    host_in_scope,
    host_of,
)

_POLICY = WebPolicy()
MAX_SOURCES = 10
# Each source's text in the report and in the saved state, in UTF-8 bytes: ten of them, the
# search's results and the rest of either fit one Firestore document (1 MiB).
MAX_SOURCE_BYTES = 64 * 1024
# Results listed from outside the allowed domains, and their snippets' length there.
MAX_OUTSIDE = 20
MAX_OUTSIDE_SNIPPET = 300
SUMMARY_SENTENCES = 2  # per source

_LEAD = re.compile(r"^\s*(please\s+)?(research|find\s+out(\s+about)?)\s+", re.I)
# A sentence ends at . ! or ? before a space and a capital, a digit or an opening quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'\u201c(])")
_WORD = re.compile(r"\w+")
# Words of a question that say nothing about what it is about.
_STOPWORDS = frozenset({
    "about", "also", "and", "are", "between", "does", "from", "have", "how", "into", "its",
    "that", "the", "their", "there", "this", "what", "when", "where", "which", "who", "why",
    "will", "with",
})  # fmt: skip


class ResearchInputs(ToolInputs):
    query: Annotated[str | None, Field(min_length=1, max_length=MAX_QUERY_LENGTH)] = None
    max_sources: Annotated[int, Field(ge=1, le=MAX_SOURCES), INTEGRAL_FLOATS] = 3


@dataclass
class Source:
    """A search result the research read, or tried to."""

    n: int
    url: str
    title: str
    snippet: str
    status: Literal["read", "failed"] = "read"
    error: str | None = None
    text: str = ""
    words: int = 0
    site_name: str | None = None
    author: str | None = None
    date: str | None = None


@dataclass
class Research:
    """What a research has done: its search's results, the sources read, the hosts asked for."""

    query: str
    hits: list[SearchHit]
    # By the URL of the result read (a source's own URL is where it led: a redirect's end).
    sources: dict[str, Source] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)  # every host it has paused for

    def state(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "hits": [asdict(h) for h in self.hits],
            "sources": [{"result": url, **asdict(s)} for url, s in self.sources.items()],
            "asked": list(self.asked),
        }

    @classmethod
    def restored(cls, state: Mapping[str, Any] | None) -> Research | None:
        if not state or "hits" not in state:
            return None
        sources = {}
        for saved in state.get("sources", []):
            fields = dict(saved)
            result = str(fields.pop("result", fields["url"]))
            sources[result] = Source(**fields)
        return cls(
            state["query"],
            [SearchHit(**h) for h in state["hits"]],
            sources,
            list(state.get("asked", [])),
        )


def research_query(objective: str) -> str:
    """'Research the Firestore listener limits' → 'the Firestore listener limits'; 'compare
    X and Y' is kept whole (the comparison is the question)."""
    return query_from_objective(_LEAD.sub("", objective, count=1))


def split(
    hits: list[SearchHit], allowed_domains: tuple[str, ...], limit: int
) -> tuple[list[SearchHit], list[SearchHit]]:
    """The first `limit` hits inside the allowed domains, and the hits outside them that
    rank above the last of those (or all of them, if fewer than `limit` are inside)."""
    inside: list[SearchHit] = []
    outside: list[SearchHit] = []
    for hit in hits:
        if len(inside) == limit:
            break
        (inside if host_in_scope(host_of(hit.url), allowed_domains) else outside).append(hit)
    return inside, outside


class ResearchTool:
    name = "research"
    description = (
        "Searches the web, reads the best results inside the allowed domains and writes a "
        "report: a summary, a section per source and numbered citations."
    )
    intents = frozenset({RESEARCH})
    input_model: ClassVar[type[ToolInputs]] = ResearchInputs
    time_budget_seconds: ClassVar[float] = 240.0
    isolated: ClassVar[bool] = False

    def __init__(
        self,
        provider: SearchProvider | None,
        policy: WebPolicy = _POLICY,
        cost_per_query: float = 0.002,
        cost_per_page: float = 0.001,
    ) -> None:
        self.provider: SearchProvider = provider or NO_PROVIDER
        self.policy = policy
        self.cost_per_query = cost_per_query
        self.cost_per_page = cost_per_page

    @property
    def unavailable_reason(self) -> str | None:
        reason = self.provider.unavailable_reason
        return f"{self.name} is not available: {reason}" if reason else None

    def estimate_cost(self, inputs: ToolInputs) -> float:
        sources = inputs.max_sources if isinstance(inputs, ResearchInputs) else 3
        return self.cost_per_query + self.cost_per_page * sources

    def run(self, context: ToolContext) -> ToolResult:
        inputs = ResearchInputs.model_validate(context.inputs)
        if (reason := self.unavailable_reason) is not None:
            raise ToolError(reason)
        research = Research.restored(context.checkpoint) or self._search(inputs, context)
        inside, outside = split(research.hits, context.allowed_domains, inputs.max_sources)
        hosts = dict.fromkeys(host_of(h.url) for h in outside[: inputs.max_sources])
        self._ask(research, [h for h in hosts if h not in research.asked], context)
        self._read(research, inside, context)
        return self._report(research, inside, outside)

    def _ask(self, research: Research, hosts: list[str], context: ToolContext) -> None:
        """With on_limit "ask", pauses for hosts it has not asked about before: resumed
        without allowing them, it goes on without them."""
        if context.on_limit != "ask" or not hosts:
            return
        research.asked.extend(hosts)
        context.save(research.state())
        raise ToolPaused(hosts=tuple(hosts))

    def _search(self, inputs: ResearchInputs, context: ToolContext) -> Research:
        query = (inputs.query or "").strip() or research_query(context.objective)
        if not query:
            raise ToolError("Nothing to research: give inputs.query or say what to find out")
        context.check_cancelled()
        try:
            found = self.provider.search(
                query, inputs.max_sources * OVERFETCH * 2, deadline=context.deadline
            )
        except ToolError:
            context.check_stopped()  # a spent budget says so, rather than "timed out"
            raise
        # One per page (a fragment names no other page), the first and best of each kept; a
        # result with no host it could be fetched from is no source.
        hits: dict[str, SearchHit] = {}
        for hit in found:
            if host_of(hit.url):
                hits.setdefault(urldefrag(hit.url).url, hit)
        research = Research(query, list(hits.values()))
        context.save(research.state())
        return research

    def _read(self, research: Research, inside: list[SearchHit], context: ToolContext) -> None:
        """Fetches each source not read yet. One that fails is noted, and tried again by a
        resumed or retried mission; a redirect off the allowed domains asks, as a result
        there would."""
        total = len(inside)
        done = sum(1 for h in inside if self._read_already(research, h))
        context.report(done, total, "sources", f"sources {done}/{total}")
        with self.policy.client() as client:
            for hit in inside:
                if self._read_already(research, hit):
                    continue
                context.check_cancelled()  # a pause stops here, with the sources read saved
                source = self._source(client, hit, research, context)
                research.sources[hit.url] = source
                done += 1
                context.report(done, total, "sources", f"sources {done}/{total}: {source.title}")
                context.save(research.state())

    @staticmethod
    def _read_already(research: Research, hit: SearchHit) -> bool:
        source = research.sources.get(hit.url)
        return source is not None and source.status == "read"

    def _source(
        self, client: Any, hit: SearchHit, research: Research, context: ToolContext
    ) -> Source:
        n = len(research.sources) + 1
        try:
            page = fetch(client, hit.url, context, self.policy)
            final = urldefrag(page.url).url
            read = (s for s in research.sources.values() if s.status == "read")
            if any(urldefrag(s.url).url == final for s in read):
                raise ToolError(f"the same page as another source ({final})")
            content = extract(page)
        except (ToolCancelled, ToolOverBudget, ToolPaused):
            raise
        except HostNotAllowed as e:  # a redirect off the allowed domains
            if e.host not in research.asked:
                self._ask(research, [e.host], context)
            return Source(n, hit.url, hit.title, hit.snippet, "failed", clip(str(e), 300))
        except ToolError as e:
            return Source(n, hit.url, hit.title, hit.snippet, "failed", clip(str(e), 300))
        text, _ = clip_markdown(content.text, MAX_SOURCE_BYTES)
        if not content.markdown:  # a text/plain page, shown verbatim
            text = fenced(text)
        return Source(
            n,
            page.url,
            clip(content.title, MAX_TITLE_CHARS) or hit.title,
            hit.snippet,
            text=text,
            words=content.words,
            site_name=content.site_name,
            author=content.author,
            date=content.date,
        )

    def _report(
        self, research: Research, inside: list[SearchHit], outside: list[SearchHit]
    ) -> ToolResult:
        sources = [research.sources[h.url] for h in inside]
        # Numbered in the report's order, whatever order they were read in.
        for number, source in enumerate(sources, 1):
            source.n = number
        read = [s for s in sources if s.status == "read"]
        summary = _summary(research.query, read, len(sources), len(outside))
        content = _markdown(research.query, summary, sources, outside)
        pages = len(sources)
        return ToolResult(
            title=clip(f"Research: {research.query}", MAX_TITLE_CHARS),
            summary=f"{len(read)} of {len(sources)} sources read for '{research.query}'"
            + (f", {len(outside)} outside the allowed domains" if outside else ""),
            content=content,
            type="research_report",
            format="markdown",
            preview=summary[:1000],
            data={
                "query": research.query,
                "summary": summary,
                "sources": [{k: v for k, v in asdict(s).items() if k != "text"} for s in sources],
                # The first of them: all are in the content; the data stays small.
                "out_of_scope": [
                    {
                        "rank": h.rank,
                        "url": h.url,
                        "title": h.title,
                        "snippet": clip(h.snippet, MAX_OUTSIDE_SNIPPET),
                        "host": host_of(h.url),
                    }
                    for h in outside[:MAX_OUTSIDE]
                ],
            },
            cost_usd=self.cost_per_query + self.cost_per_page * pages,
        )


def _paragraphs(markdown: str) -> list[str]:
    """The prose of a Markdown text, a paragraph to a line: no headings, tables or code."""
    paragraphs: list[str] = []
    lines: list[str] = []
    code = False
    for line in [*markdown.splitlines(), ""]:
        stripped = line.strip()
        prose = stripped and not code and not stripped.startswith(("#", "|", "```"))
        if stripped.startswith("```"):
            code = not code
        if prose:
            lines.append(stripped)
        elif lines:
            paragraphs.append(" ".join(lines))
            lines = []
    return paragraphs


def _sentences(text: str) -> list[str]:
    """A source's sentences, as plain text, in order (the first 200)."""
    sentences: list[str] = []
    for paragraph in _paragraphs(text):
        for sentence in _SENTENCE_END.split(" ".join(plain(paragraph).split())):
            if 20 <= len(sentence) <= 400 and sentence[-1] in ".!?":
                sentences.append(sentence)
        if len(sentences) >= 200:
            break
    return sentences[:200]


def _terms(text: str) -> set[str]:
    """The words of text, lower case, a plural's or possessive's "s" taken off (so that
    "missions" meets "mission"); words of one or two letters left out."""
    words = (w.lower() for w in _WORD.findall(text) if len(w) > 2)
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words}


def _lead(source: Source, terms: set[str]) -> str:
    """The source's sentences that share the most words with the question, in text order,
    as Markdown that shows them as they are."""
    sentences = _sentences(source.text) or ([source.snippet] if source.snippet else [])
    scored = sorted(range(len(sentences)), key=lambda i: -len(terms & _terms(sentences[i])))
    chosen = sorted(scored[:SUMMARY_SENTENCES])
    return " ".join(markdown_text(sentences[i]) for i in chosen)


def _summary(query: str, read: list[Source], tried: int, outside: int) -> str:
    if not read:
        why = "none of the results were inside the allowed domains"
        if tried:
            why = f"the {tried} sources inside the allowed domains could not be read"
        hint = " (clone the mission with their hosts allowed, or ask: on_limit)" if outside else ""
        return f"No source could be read for '{query}': {why}{hint}."
    terms = _terms(query) - _STOPWORDS
    return "\n\n".join(f"{_lead(s, terms)} {markdown_link(f'[{s.n}]', s.url)}" for s in read)


def _markdown(query: str, summary: str, sources: list[Source], outside: list[SearchHit]) -> str:
    parts = [f"# Research: {markdown_text(query)}", "## Summary", summary, "## Sources"]
    if not sources:
        parts.append("No source inside the allowed domains.")
    for s in sources:
        about = " · ".join(x for x in (s.site_name, s.author, s.date) if x)
        parts.append(f"### [{s.n}] {markdown_text(s.title)}")
        parts.append(markdown_link(s.url, s.url) + (f" · {markdown_text(about)}" if about else ""))
        if s.status == "read":
            # The source's own headings under its section's: "# Intro" becomes "#### Intro".
            parts.append(demote_headings(s.text) or "(no text)")
        else:
            parts.append(f"Could not be read: {markdown_text(s.error or 'unknown error')}")
    if outside:
        parts.append("## Other results")
        parts.append("Outside the allowed domains: listed, not read.")
        parts.append(
            "\n".join(
                f"- {markdown_link(h.title, h.url)} ({markdown_text(host_of(h.url))}) — "
                + markdown_text(h.snippet)
                for h in outside
            )
        )
    parts.append("## References")
    references = (f"{s.n}. {markdown_link(s.title, s.url)}" for s in sources)
    parts.append("\n".join(references) or "None.")
    return "\n\n".join(parts) + "\n"
