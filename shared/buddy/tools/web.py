"""web_extract: fetch a page (and optionally a few same-host pages it links to), keep its text.

Fetching is guarded on every hop, redirects included: the host must be within the mission's
allowed domains, every address it resolves to must be public, and the connection goes to an
address that was checked (so a second, different DNS answer cannot slip in). One deadline bounds
each fetch, redirects included, and bodies are decoded within a size cap (see bounded_http).
"""

from __future__ import annotations

import codecs
import ipaddress
import logging
import math
import re
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar
from urllib.parse import urldefrag, urljoin, urlsplit

import httpx
from pydantic import Field
from selectolax.lexbor import LexborHTMLParser, LexborNode

from buddy.domain.intent import EXTRACT, first_url
from buddy.tools.base import (
    INTEGRAL_FLOATS,
    OutOfScope,
    ToolCancelled,
    ToolContext,
    ToolError,
    ToolInputs,
    ToolOverBudget,
    ToolPaused,
    ToolResult,
)
from buddy.tools.bounded_http import (
    BoundedClient,
    CorruptEncoding,
    TooManyEncodings,
    UnsupportedEncoding,
    is_ip,
    read_body,
    resolve,
)
from buddy.tools.extract import extract_html
from buddy.tools.markdown import (
    clip_markdown,
    escaped_lines,
    fence_for,
    markdown_link,
    markdown_text,
)

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
MAX_PAGES = 10
MAX_CONTENT_CHARS = 500_000
# Strings a hostile page controls are clipped before they reach the result.
MAX_TITLE_CHARS = 300
MAX_LINK_TEXT_CHARS = 200
MAX_PREVIEW_CHARS = 1000
MAX_RESULT_LINKS = 20
MAX_REASON_CHARS = 300
# Links kept per page: plenty to crawl MAX_PAGES from, and a bound on what a page of
# 100,000 anchors leaves behind.
MAX_PAGE_LINKS = 1000
# Past this many elements a page gets the basic extractor (see extract).
MAX_EXTRACT_ELEMENTS = 30_000
USER_AGENT = "BuddyMissions/0.1 (web_extract)"

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_TEXT_TYPES = _HTML_TYPES | {"text/plain"}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata"})
_METADATA_IP = ipaddress.ip_address("169.254.169.254")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # ::a.b.c.d, deprecated by RFC 4291
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix, the IPv4 address last
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: a network's own translators
_DROPPED_TAGS = [
    "script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "svg"
]  # fmt: skip
_BLOCK_TAGS = frozenset({
    "address", "article", "blockquote", "br", "dd", "details", "div", "dl", "dt", "figcaption",
    "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "main", "ol", "p", "pre",
    "section", "summary", "table", "td", "th", "tr", "ul",
})  # fmt: skip

# Python's names for the encodings of the WHATWG Encoding Standard, the ones browsers read.
# Anything else a page declares, from a typo to Python-only codecs such as rot13, base64 or
# punycode, is ignored, as a browser would ignore it.
_WEB_CODECS = frozenset({
    "utf-8", "utf-16-le", "utf-16-be", "cp866", "iso8859-2", "iso8859-3", "iso8859-4",
    "iso8859-5", "iso8859-6", "iso8859-7", "iso8859-8", "iso8859-10", "iso8859-13",
    "iso8859-14", "iso8859-15", "iso8859-16", "koi8-r", "koi8-u", "mac-roman", "mac-cyrillic",
    "cp874", "cp1250", "cp1251", "cp1252", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257",
    "cp1258", "gbk", "gb18030", "big5hkscs", "euc_jp", "iso2022_jp", "cp932", "cp949",
})  # fmt: skip
# Labels browsers read as a superset: an "iso-8859-1" page is decoded as windows-1252.
_READ_AS = {
    "ascii": "cp1252", "iso8859-1": "cp1252", "iso8859-9": "cp1254", "iso8859-11": "cp874",
    "tis-620": "cp874", "gb2312": "gbk", "big5": "big5hkscs", "shift_jis": "cp932",
    "euc_kr": "cp949", "utf-16": "utf-16-le",
}  # fmt: skip
# Common web labels that Python's codec registry does not know.
_WEB_LABELS = {
    "windows-874": "cp874", "x-mac-cyrillic": "mac-cyrillic", "iso-8859-8-i": "iso8859-8",
    "windows-31j": "cp932", "x-sjis": "cp932", "x-gbk": "gbk",
}  # fmt: skip
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_META_SCAN_BYTES = 4096
_WORD = re.compile(r"\S+")
# <meta charset="x"> and <meta http-equiv="Content-Type" content="text/html; charset=x">
_META_CHARSET = re.compile(rb"""<meta\b[^>]*?charset\s*=\s*["']?\s*([\w.:+-]+)""", re.IGNORECASE)


class WebExtractInputs(ToolInputs):
    url: Annotated[
        str | None, Field(max_length=MAX_URL_LENGTH, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://")
    ] = None
    max_pages: Annotated[int, Field(ge=1, le=MAX_PAGES), INTEGRAL_FLOATS] = 1


@dataclass(frozen=True)
class WebPolicy:
    """How far a fetch may go; allow_loopback is for local development and tests only."""

    allow_loopback: bool = False
    connect_timeout: float = 5
    read_timeout: float = 10
    max_bytes: int = 2 * 1024 * 1024
    max_redirects: int = 5
    # The timeouts above bound each socket operation; this bounds a whole fetch, name lookup,
    # headers, body and redirects included (a server can trickle a byte at a time).
    total_timeout: float = 30

    def client(self) -> BoundedClient:
        timeout = httpx.Timeout(
            connect=self.connect_timeout,
            read=self.read_timeout,
            write=self.read_timeout,
            pool=self.connect_timeout,
        )
        return BoundedClient(timeout, headers={"User-Agent": USER_AGENT})


@dataclass(frozen=True)
class FetchedPage:
    url: str
    status: int
    content_type: str
    text: str
    truncated: bool = False


@dataclass(frozen=True)
class Link:
    url: str
    text: str


@dataclass(frozen=True)
class PageContent:
    """A page's title, main content (Markdown for HTML pages), links and metadata."""

    title: str
    text: str
    links: tuple[Link, ...]
    author: str | None = None
    date: str | None = None
    site_name: str | None = None
    language: str | None = None
    words: int = 0
    # False for a text/plain page: its text is shown verbatim, not read as Markdown.
    markdown: bool = True

    def metadata(self) -> dict[str, str | None]:
        return {
            "title": self.title or None,
            "author": self.author,
            "date": self.date,
            "site_name": self.site_name,
            "language": self.language,
        }


@dataclass(frozen=True)
class ReadPage:
    """A page the crawl kept: its final URL and what it says (its HTML is let go)."""

    url: str
    content: PageContent
    words: int
    truncated: bool


@dataclass(frozen=True)
class SkippedPage:
    url: str
    reason: str


def clip(text: str, limit: int) -> str:
    """text, or its first limit - 1 characters and an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size(n: int) -> str:
    """2097152 → '2 MiB'."""
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.3g} MiB"
    return f"{n / 1024:.3g} KiB" if n >= 1024 else f"{n} bytes"


def host_in_scope(host: str, allowed_domains: Iterable[str]) -> bool:
    """True when host is an allowed domain or a subdomain of one; no domains allow nothing."""
    host = host.lower().rstrip(".")
    for domain in (d.lower().rstrip(".") for d in allowed_domains):
        if host == domain:
            return True
        # "127.0.0.1" must not count as a "subdomain" of "0.0.1".
        if domain and not is_ip(host) and host.endswith("." + domain):
            return True
    return False


class HostNotAllowed(ToolError, OutOfScope):
    """A page (or a redirect) on a host outside the mission's allowed domains."""

    def __init__(self, host: str, allowed_domains: tuple[str, ...]) -> None:
        allowed = ", ".join(allowed_domains) or "none were given"
        super().__init__(f"{host} is outside the mission's allowed domains ({allowed})")
        self.host = host


def _out_of_scope(host: str, allowed_domains: tuple[str, ...]) -> ToolError:
    return HostNotAllowed(host, allowed_domains)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...] | None:
    """Where a tunnel or translation address leads (6to4, Teredo, NAT64); None for others."""
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo  # (server, client)
    if ip in _NAT64:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF),)
    return None


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool) -> bool:
    """True for an address anyone on the internet could reach, loopback when allowed."""
    if ip.is_loopback:
        return allow_loopback
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped, allow_loopback)
        # Packets to these go on to an IPv4 address, which decides; never a loopback one.
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return all(is_public(v4, allow_loopback=False) for v4 in embedded)
        # Deprecated or local-only forms that can lead anywhere.
        if ip in _IPV4_COMPATIBLE or ip in _NAT64_LOCAL or ip.is_site_local:
            return False
    if ip == _METADATA_IP:
        return False
    # is_global is False for private, link-local, unspecified, shared (100.64/10) and most
    # reserved ranges; multicast and the rest of reserved are refused explicitly.
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def check_address(host: str, port: int, policy: WebPolicy, deadline: float = math.inf) -> list[str]:
    """The addresses host resolves to; refuses the host if any one of them is not public.

    Raises TimeoutError when the name is not resolved by deadline.
    """
    if host.lower().rstrip(".") in _METADATA_HOSTS:
        raise ToolError(f"{host} is the cloud metadata server, which cannot be fetched")
    try:
        resolved = resolve(host, port, deadline)
    except TimeoutError:
        raise  # whose deadline it was, the caller knows
    except (OSError, UnicodeError) as e:
        raise ToolError(f"Cannot resolve {host}", transient=True) from e
    addresses: list[str] = []
    for address in resolved:
        ip = ipaddress.ip_address(address.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if not is_public(ip, policy.allow_loopback):
            raise ToolError(
                f"{host} resolves to a private/loopback address ({ip}), which cannot be fetched"
            )
        if str(ip) not in addresses:
            addresses.append(str(ip))
    if not addresses:
        raise ToolError(f"Cannot resolve {host}")
    return addresses


def _parse_url(url: str) -> httpx.URL:
    if len(url) > MAX_URL_LENGTH:
        raise ToolError(f"URLs longer than {MAX_URL_LENGTH} characters cannot be fetched")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise ToolError(f"Not a valid URL: {url}") from e
    if parsed.scheme not in ("http", "https"):
        raise ToolError(f"Only http and https URLs can be fetched, not {url}")
    if not parsed.raw_host:
        raise ToolError(f"Not a valid URL: {url}")
    return parsed


def _redirect_target(url: httpx.URL, location: str) -> httpx.URL:
    try:
        target = urljoin(str(url), location)
    except ValueError as e:  # e.g. "http://[oops/", an unclosed IPv6 literal
        raise ToolError(f"{url} redirected to an invalid URL") from e
    return _parse_url(target)


@contextmanager
def _network_errors(host: str, context: ToolContext) -> Iterator[None]:
    """Network failures as ToolErrors; a timeout once the tool's budget is spent ends the tool."""
    try:
        yield
    except (httpx.TimeoutException, TimeoutError) as e:
        if context.seconds_left() <= 0:  # the tool's deadline, not just this fetch's
            raise ToolOverBudget("it ran out of its time budget") from e
        raise ToolError("Connection timeout", transient=True) from e
    except httpx.ProtocolError as e:  # garbage, or a body shorter than its Content-Length
        raise ToolError(f"Cannot read the answer from {host}", transient=True) from e
    except httpx.TransportError as e:
        raise ToolError(f"Cannot connect to {host}", transient=True) from e


def _send(
    client: BoundedClient, url: httpx.URL, host: str, addresses: list[str], deadline: float
) -> httpx.Response:
    """GET url from one of the checked addresses, keeping the name for Host and TLS."""
    headers = {"Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    error: httpx.ConnectError | None = None
    for address in addresses:
        request = client.build_request(
            "GET", url.copy_with(host=address), headers=headers, extensions=extensions
        )
        try:
            return client.send(request, deadline=deadline)
        except httpx.ConnectError as e:  # try the next address, as a resolver-driven connect would
            error = e
    assert error is not None  # addresses is never empty
    raise error


def _declared_charset(content_type: str) -> str | None:
    """The charset parameter of a Content-Type header, as written."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value
    return None


def _web_codec(label: str | None) -> str | None:
    """The codec for a charset label, if it names an encoding browsers read."""
    label = (label or "").strip().strip("\"'").strip().lower()
    try:
        name = codecs.lookup(_WEB_LABELS.get(label, label)).name
    except (LookupError, ValueError):  # ValueError: a NUL in the label
        return None
    name = _READ_AS.get(name, name)
    return name if name in _WEB_CODECS else None


def _meta_codec(body: bytes) -> str | None:
    match = _META_CHARSET.search(body[:_META_SCAN_BYTES])
    codec = _web_codec(match.group(1).decode("ascii")) if match else None
    # A declaration readable as ASCII cannot be in UTF-16, whatever it says (WHATWG).
    return "utf-8" if codec in ("utf-16-le", "utf-16-be") else codec


def decode_text(body: bytes, declared_charset: str | None) -> str:
    """A page's text: by its BOM, its declared charset, a <meta> charset, else as UTF-8.

    Never fails: labels that name no web encoding are ignored and bad bytes become U+FFFD.
    A BOM wins over declarations, as in browsers: it cannot be there by accident.
    """
    for bom, codec in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(codec, errors="replace")
    codec = _web_codec(declared_charset) or _meta_codec(body) or "utf-8"
    return body.decode(codec, errors="replace")


def _read(
    response: httpx.Response, url: httpx.URL, policy: WebPolicy, context: ToolContext
) -> FetchedPage:
    status = response.status_code
    if not 200 <= status < 300:
        # A busy or broken server may recover; a 404 will not.
        raise ToolError(f"{url} answered HTTP {status}", transient=status >= 500 or status == 429)
    content_type_header = response.headers.get("content-type", "")
    content_type = content_type_header.split(";")[0].strip().lower()
    if content_type not in _TEXT_TYPES:
        raise ToolError(
            f"{url} is {clip(content_type, 100) or 'of unknown type'}, not a web page "
            "(only HTML and plain text can be extracted)"
        )
    try:
        # A cancel is noticed between network reads, however slowly the body comes.
        # A cancel is noticed between network reads; a pause waits for the page to be read
        # (the crawl pauses between pages, so that no page is fetched twice).
        body = read_body(response, policy.max_bytes, between_reads=context.check_stopped)
    except UnsupportedEncoding as e:
        raise ToolError(
            f"{url} uses the content encoding '{clip(e.encoding, 40)}', "
            "which web_extract cannot read"
        ) from e
    except TooManyEncodings as e:
        raise ToolError(
            f"{url} stacks more content encodings than web_extract reads ({clip(e.encoding, 100)})"
        ) from e
    except CorruptEncoding as e:
        raise ToolError(f"{url} sent {e.encoding} data that does not decompress") from e
    text = decode_text(body.data, _declared_charset(content_type_header))
    return FetchedPage(str(url), status, content_type, text, body.truncated)


def fetch(client: BoundedClient, url: str, context: ToolContext, policy: WebPolicy) -> FetchedPage:
    """GET url, following redirects by hand so every hop is scope- and address-checked.

    One deadline covers the whole fetch, every hop included: policy.total_timeout from now,
    or the tool's own deadline if that comes first.
    """
    deadline = min(time.monotonic() + policy.total_timeout, context.deadline)
    allowed = context.allowed_domains
    current = _parse_url(url)
    for _ in range(policy.max_redirects + 1):
        host = current.raw_host.decode("ascii").lower()
        if not host_in_scope(host, allowed):
            raise _out_of_scope(host, allowed)
        port = current.port or (443 if current.scheme == "https" else 80)
        with _network_errors(host, context):
            addresses = check_address(host, port, policy, deadline)
            response = _send(client, current, host, addresses, deadline)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    current = _redirect_target(current, location)
                    continue
                return _read(response, current, policy, context)
            finally:
                response.close()
    raise ToolError(f"{url} redirected more than {policy.max_redirects} times")


def _collapse(text: str | None) -> str:
    return " ".join((text or "").split())


def _node_text(node: LexborNode | None) -> str:
    return _collapse(node.text(separator=" ")) if node else ""


def _block_text(root: LexborNode) -> str:
    """The text under root, one line per block element, whitespace collapsed."""
    parts: list[str] = []
    # A stack instead of recursion: deeply nested markup must not hit the recursion limit.
    stack: list[LexborNode | str] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            parts.append(item)
        elif item.is_text_node:
            parts.append(item.text_content or "")
        elif item.is_element_node:
            block = item.tag in _BLOCK_TAGS
            if block:
                parts.append("\n")
                stack.append("\n")
            stack.extend(reversed(list(item.iter(include_text=True))))
    lines = (_collapse(line) for line in "".join(parts).split("\n"))
    return "\n".join(line for line in lines if line)


def _absolute(base: str, href: str) -> str | None:
    """The http(s) URL href points to, without its fragment; None if it is anything else."""
    if len(href) > MAX_URL_LENGTH:
        return None
    try:
        url = urldefrag(urljoin(base, href.strip())).url
        scheme = urlsplit(url).scheme
    except ValueError:  # e.g. "http://[oops/", an unclosed IPv6 literal
        return None
    return url if scheme in ("http", "https") and len(url) <= MAX_URL_LENGTH else None


def _links(tree: LexborHTMLParser, page_url: str) -> tuple[Link, ...]:
    base = page_url
    if base_tag := tree.css_first("base[href]"):
        with suppress(ValueError):  # an unparseable <base> is ignored
            base = urljoin(page_url, base_tag.attributes.get("href") or "")
    links: dict[str, Link] = {}
    for anchor in tree.css("a[href]"):
        if len(links) >= MAX_PAGE_LINKS:
            break
        url = _absolute(base, anchor.attributes.get("href") or "")
        if url is not None and url not in links:
            links[url] = Link(url, clip(_node_text(anchor), MAX_LINK_TEXT_CHARS))
    return tuple(links.values())


def _shown(content: PageContent, limit: int) -> str:
    """A page's text as Markdown, at most `limit` characters of it: a text/plain page's
    verbatim, in a code block (one copy of it: pages are up to 2 MiB)."""
    text = content.text[:limit]
    if content.markdown:
        return text
    fence = fence_for(text)
    return f"{fence}text\n{text}\n{fence}"


def basic_text(tree: LexborHTMLParser) -> str:
    """The text of <main>, <article> or <body>, without navigation, header and footer: the
    extractor before trafilatura, kept for pages that one cannot read (see extract)."""
    tree.strip_tags(_DROPPED_TAGS, recursive=True)
    root = tree.css_first("main") or tree.css_first("article") or tree.body
    return _block_text(root) if root else ""


def extract(page: FetchedPage) -> PageContent:
    """Title, main content as Markdown, metadata and links of a fetched page; plain text is
    kept as it is.

    Pages of more than MAX_EXTRACT_ELEMENTS elements (trafilatura takes about 0.15 ms for
    each: a hostile 2 MiB page of empty paragraphs would hold the step for a minute), pages
    it finds no content in, and markup nested past its recursion get the basic extractor.
    """
    if page.content_type == "text/plain":
        words = _word_count(page.text)
        return PageContent(title="", text=page.text, links=(), words=words, markdown=False)
    tree = LexborHTMLParser(page.text)
    title = next((t for t in (_node_text(tree.css_first(tag)) for tag in ("title", "h1")) if t), "")
    # Links come from the whole page, navigation included: that is where the next pages are.
    links = _links(tree, page.url)
    html = tree.css_first("html")
    lang = html.attributes.get("lang") if html else None
    found = None
    if _element_count(tree) <= MAX_EXTRACT_ELEMENTS:
        found = extract_html(page.text, page.url, lang)
    if found is None:
        text = basic_text(tree)
        # Lines of the page's text, each shown as it is: no character of it can be Markdown.
        words = _word_count(text)
        return PageContent(clip(title, MAX_TITLE_CHARS), escaped_lines(text), links, words=words)
    return PageContent(
        title=clip(title or found.title, MAX_TITLE_CHARS),
        text=found.markdown,
        links=links,
        author=clip(found.author, MAX_TITLE_CHARS) if found.author else None,
        date=found.date,
        site_name=clip(found.site_name, MAX_TITLE_CHARS) if found.site_name else None,
        language=found.language,
        words=_word_count(found.text),
    )


def _element_count(tree: LexborHTMLParser) -> int:
    """How many elements the page has, counting no further than one past the limit."""
    count = 0
    root = tree.root
    if root is None:
        return 0
    for _ in root.traverse(include_text=False):
        count += 1
        if count > MAX_EXTRACT_ELEMENTS:
            break
    return count


def host_of(url: str) -> str:
    """The host a fetch of url checks and connects to (an IDN in its ASCII form), lower
    case; "" for what is not a URL with a host."""
    try:
        return httpx.URL(url).raw_host.decode("ascii").lower()
    except (httpx.InvalidURL, UnicodeError, TypeError):
        return ""


def _word_count(text: str) -> int:
    return sum(1 for _ in _WORD.finditer(text))  # text.split() would copy every word


def _preview_lines(text: str) -> list[str]:
    """The first lines with something on them; a prefix suffices for an 800-character preview."""
    return [line for line in text[:20_000].splitlines() if line.strip()][:8]


def _skip_reason(error: Exception) -> str:
    if isinstance(error, ToolError):
        return clip(str(error), MAX_REASON_CHARS)
    return f"unexpected {type(error).__name__}"


_METADATA = ("author", "date", "site_name", "language", "markdown")
# A crawl's saved state keeps this much of its pages' text: it must fit one document.
CHECKPOINT_TEXT_BYTES = 700 * 1024


@dataclass
class Crawl:
    """Where a crawl is: the pages read and skipped, and the links still to follow."""

    pages: list[ReadPage]
    skipped: list[SkippedPage]
    queue: deque[str]
    seen: set[str]
    attempts_left: int
    total: int

    @classmethod
    def starting(cls, url: str, max_pages: int) -> Crawl:
        # Linked pages may fail (a PDF, a 404); bound the attempts so a page of dead links
        # cannot turn into hundreds of requests.
        return cls([], [], deque([url]), {urldefrag(url).url}, max_pages * 3, max_pages)

    def read(self, page: ReadPage) -> None:
        self.pages.append(page)
        self.seen.add(urldefrag(page.url).url)
        # Same host as the first page, which passed the scope check; fetch re-checks anyway.
        start_host = host_of(self.pages[0].url)
        for link in page.content.links:
            if link.url not in self.seen and host_of(link.url) == start_host:
                self.seen.add(link.url)
                self.queue.append(link.url)

    def state(self) -> dict[str, Any]:
        """Plain data (maps in lists, never lists in lists: Firestore stores no such thing)
        that fits one document: the pages' text cut to CHECKPOINT_TEXT_BYTES together, the
        links a result shows of each page, and only the queue the attempts left can reach
        (ten pages of a thousand links each would be megabytes)."""
        room = CHECKPOINT_TEXT_BYTES
        pages = []
        for page in self.pages:
            text, _ = clip_markdown(page.content.text, max(room, 0))
            room -= len(text.encode("utf-8"))
            links = page.content.links[:MAX_RESULT_LINKS]
            pages.append(
                {
                    "url": page.url,
                    "title": page.content.title,
                    "text": text,
                    "links": [{"url": k.url, "text": k.text} for k in links],
                    **{key: getattr(page.content, key) for key in _METADATA},
                    "words": page.words,
                    "truncated": page.truncated,
                }
            )
        queue = list(self.queue)[: max(self.attempts_left, 0)]
        return {
            "pages": pages,
            "skipped": [{"url": s.url, "reason": s.reason} for s in self.skipped],
            "queue": queue,
            # What must not be queued again: what was read, skipped or is queued.
            "seen": sorted(
                {urldefrag(p.url).url for p in self.pages}
                | {s.url for s in self.skipped}
                | set(queue)
            ),
            "attempts_left": self.attempts_left,
            "total": self.total,
        }

    @classmethod
    def restored(cls, state: Mapping[str, Any] | None) -> Crawl | None:
        if not state:
            return None
        pages = [
            ReadPage(
                p["url"],
                PageContent(
                    p["title"],
                    p["text"],
                    tuple(Link(**k) for k in p["links"]),
                    # Checkpoints saved before pages had metadata have none.
                    **{key: p[key] for key in _METADATA if key in p},
                    words=p["words"],
                ),
                p["words"],
                p["truncated"],
            )
            for p in state["pages"]
        ]
        return cls(
            pages,
            [SkippedPage(**s) for s in state["skipped"]],
            deque(state["queue"]),
            set(state["seen"]),
            int(state["attempts_left"]),
            int(state["total"]),
        )


class WebExtractTool:
    name = "web_extract"
    description = (
        "Fetches a web page within the mission's allowed domains and extracts its title, "
        "main text and links; can follow up to 10 same-site links."
    )
    intents = frozenset({EXTRACT})
    input_model: ClassVar[type[ToolInputs]] = WebExtractInputs
    unavailable_reason = None
    time_budget_seconds: ClassVar[float] = 180.0
    isolated: ClassVar[bool] = False

    def __init__(self, policy: WebPolicy = WebPolicy(), cost_per_page: float = 0.001) -> None:
        self.policy = policy
        self.cost_per_page = cost_per_page

    def estimate_cost(self, inputs: ToolInputs) -> float:
        pages = inputs.max_pages if isinstance(inputs, WebExtractInputs) else 1
        return self.cost_per_page * pages

    def run(self, context: ToolContext) -> ToolResult:
        inputs = WebExtractInputs.model_validate(context.inputs)
        url = inputs.url or first_url(context.objective)
        if not url:
            raise ToolError("No URL to extract: give inputs.url or put a URL in the objective")
        with self.policy.client() as client:
            pages, skipped = self._crawl(client, url, inputs.max_pages, context)
        return self._result(pages, skipped)

    def _crawl(
        self, client: BoundedClient, url: str, max_pages: int, context: ToolContext
    ) -> tuple[list[ReadPage], list[SkippedPage]]:
        """Breadth-first over same-host links until max_pages pages are read or links run out.

        Only the first page must work: a linked page that fails, for whatever reason, is
        skipped and noted. After each page the crawl saves where it is, so that a mission
        paused between pages resumes with the pages it read, fetching none of them again.
        """
        crawl = Crawl.restored(context.checkpoint) or Crawl.starting(url, max_pages)
        while crawl.queue and len(crawl.pages) < max_pages and crawl.attempts_left:
            context.check_cancelled()  # a pause stops here, with the last page saved
            next_url = crawl.queue.popleft()
            crawl.attempts_left -= 1
            try:
                page = fetch(client, next_url, context, self.policy)
                final_url = urldefrag(page.url).url
                if any(urldefrag(p.url).url == final_url for p in crawl.pages):
                    continue  # a link that redirected to a page already read
                content = extract(page)
            except (ToolCancelled, ToolOverBudget, ToolPaused):
                raise
            except Exception as e:
                if isinstance(e, HostNotAllowed) and context.on_limit == "ask":
                    # The owner may allow the host: wait for them, to fetch this page again.
                    crawl.queue.appendleft(next_url)
                    crawl.attempts_left += 1
                    context.save(crawl.state())
                    raise ToolPaused(host=e.host) from e
                if not crawl.pages:  # the page the owner asked for must work
                    raise
                if not isinstance(e, ToolError):
                    log.warning("skipped a linked page", extra={"url": next_url}, exc_info=True)
                crawl.skipped.append(SkippedPage(next_url, _skip_reason(e)))
                context.save(crawl.state())
                continue
            crawl.read(ReadPage(page.url, content, content.words, page.truncated))
            if not crawl.queue or not crawl.attempts_left:
                crawl.total = len(crawl.pages)
            context.report(
                len(crawl.pages), crawl.total, "pages", f"pages {len(crawl.pages)}/{crawl.total}"
            )
            context.save(crawl.state())
        total = len(crawl.pages)
        if crawl.total > total:  # the last links failed: end on how many pages there were
            context.report(total, total, "pages", f"pages {total}/{total}")
        return crawl.pages, crawl.skipped

    def _result(self, pages: list[ReadPage], skipped: list[SkippedPage]) -> ToolResult:
        first = pages[0]
        title = first.content.title or clip(first.url, MAX_TITLE_CHARS)
        words = sum(p.words for p in pages)
        page_cut = f"(truncated at {_size(self.policy.max_bytes)})"
        skipped_lines = "".join(f"\n- {s.url}: {s.reason}" for s in skipped)
        skipped_note = f"\n\nSkipped pages:{skipped_lines}" if skipped else ""
        room = MAX_CONTENT_CHARS - len(skipped_note)  # the note must survive the cut
        sections = [
            # Each text clipped first: no page's whole text is copied just to be cut.
            f"## {markdown_text(p.content.title or p.url)}\n{markdown_link(p.url, p.url)}\n\n"
            + _shown(p.content, room)
            + (f"\n\n{page_cut}" if p.truncated else "")
            for p in pages
        ]
        content = "\n\n".join(sections)
        cuts = [page_cut] if any(p.truncated for p in pages) else []
        if len(content) > room:
            content_cut = f"(truncated at {MAX_CONTENT_CHARS:,} characters)"
            content = content[: room - len(content_cut) - 2] + "\n\n" + content_cut
            cuts.append(content_cut)
        summary = " ".join([f"{title}: {words} words from {len(pages)} page(s)", *cuts])
        if skipped:
            summary += f", {len(skipped)} skipped"
        links = list({link.url: link for p in pages for link in p.content.links}.values())
        preview = "\n".join(_preview_lines(first.content.text))[:800]
        if links:
            top = "\n".join(f"- {link.text or link.url} — {link.url}" for link in links[:5])
            preview = f"{preview}\n\nTop links:\n{top}".strip()
        return ToolResult(
            title=title,
            summary=summary,
            content=content + skipped_note,
            type="web_page",
            format="markdown",
            preview=clip(preview, MAX_PREVIEW_CHARS),
            data={
                "url": first.url,
                "metadata": first.content.metadata(),
                "pages": [{"url": p.url, **p.content.metadata(), "words": p.words} for p in pages],
                "links": [
                    {"url": link.url, "text": link.text} for link in links[:MAX_RESULT_LINKS]
                ],
                "truncated": bool(cuts),
                "skipped": [{"url": s.url, "reason": s.reason} for s in skipped],
            },
            cost_usd=self.cost_per_page * len(pages),
        )
