"""web_extract: fetch a page (and optionally a few same-host pages it links to), keep its text.

Fetching is guarded on every hop, redirects included: the host must be within the mission's
allowed domains, every address it resolves to must be public, and the connection goes to an
address that was checked (so a second, different DNS answer cannot slip in).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urldefrag, urljoin, urlsplit

import httpx
from pydantic import Field
from selectolax.lexbor import LexborHTMLParser, LexborNode

from buddy.domain.intent import EXTRACT, first_url
from buddy.tools.base import INTEGRAL_FLOATS, ToolContext, ToolError, ToolInputs, ToolResult

MAX_URL_LENGTH = 2048
MAX_PAGES = 10
MAX_CONTENT_CHARS = 500_000
USER_AGENT = "BuddyMissions/0.1 (web_extract)"

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_TEXT_TYPES = _HTML_TYPES | {"text/plain"}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata"})
_METADATA_IP = ipaddress.ip_address("169.254.169.254")
_DROPPED_TAGS = [
    "script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "svg"
]  # fmt: skip
_BLOCK_TAGS = frozenset({
    "address", "article", "blockquote", "br", "dd", "details", "div", "dl", "dt", "figcaption",
    "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "main", "ol", "p", "pre",
    "section", "summary", "table", "td", "th", "tr", "ul",
})  # fmt: skip


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
    # read_timeout bounds each read; this bounds a body trickled out a byte at a time.
    total_timeout: float = 30

    def client(self, transport: httpx.BaseTransport | None = None) -> httpx.Client:
        timeout = httpx.Timeout(
            connect=self.connect_timeout,
            read=self.read_timeout,
            write=self.read_timeout,
            pool=self.connect_timeout,
        )
        # trust_env=False: a proxy from the environment would resolve names behind our checks.
        return httpx.Client(
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
        )


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
    title: str
    text: str
    links: tuple[Link, ...]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_in_scope(host: str, allowed_domains: Iterable[str]) -> bool:
    """True when host is an allowed domain or a subdomain of one; no domains allow nothing."""
    host = host.lower().rstrip(".")
    for domain in (d.lower().rstrip(".") for d in allowed_domains):
        if host == domain:
            return True
        # "127.0.0.1" must not count as a "subdomain" of "0.0.1".
        if domain and not _is_ip(host) and host.endswith("." + domain):
            return True
    return False


def _out_of_scope(host: str, allowed_domains: tuple[str, ...]) -> ToolError:
    allowed = ", ".join(allowed_domains) or "none were given"
    return ToolError(f"{host} is outside the mission's allowed domains ({allowed})")


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: WebPolicy) -> bool:
    if ip.is_loopback:
        return policy.allow_loopback
    if ip == _METADATA_IP:
        return False
    # is_global is False for private, link-local, unspecified, shared (100.64/10) and most
    # reserved ranges; multicast and the rest of reserved are refused explicitly.
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def check_address(host: str, port: int, policy: WebPolicy) -> list[str]:
    """The addresses host resolves to; refuses the host if any one of them is not public."""
    if host.lower().rstrip(".") in _METADATA_HOSTS:
        raise ToolError(f"{host} is the cloud metadata server, which cannot be fetched")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise ToolError(f"Cannot resolve {host}", transient=True) from e
    addresses: list[str] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if not _public(ip, policy):
            raise ToolError(
                f"{host} resolves to a private/loopback address ({ip}), which cannot be fetched"
            )
        if str(ip) not in addresses:
            addresses.append(str(ip))
    if not addresses:
        raise ToolError(f"Cannot resolve {host}")
    return addresses


def _parse_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise ToolError(f"Not a valid URL: {url}") from e
    if parsed.scheme not in ("http", "https"):
        raise ToolError(f"Only http and https URLs can be fetched, not {url}")
    if not parsed.raw_host:
        raise ToolError(f"Not a valid URL: {url}")
    return parsed


@contextmanager
def _transport_errors(host: str) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as e:
        raise ToolError("Connection timeout", transient=True) from e
    except httpx.TransportError as e:
        raise ToolError(f"Cannot connect to {host}", transient=True) from e
    except httpx.RequestError as e:  # e.g. a body that does not decompress
        raise ToolError(f"Cannot read the answer from {host}", transient=True) from e


def _send(client: httpx.Client, url: httpx.URL, host: str, addresses: list[str]) -> httpx.Response:
    """GET url from one of the checked addresses, keeping the name for Host and TLS."""
    headers = {"Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    error: httpx.ConnectError | None = None
    for address in addresses:
        request = client.build_request(
            "GET", url.copy_with(host=address), headers=headers, extensions=extensions
        )
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError as e:  # try the next address, as a resolver-driven connect would
            error = e
    assert error is not None  # addresses is never empty
    raise error


def _read(response: httpx.Response, url: httpx.URL, policy: WebPolicy) -> FetchedPage:
    status = response.status_code
    if not 200 <= status < 300:
        # A busy or broken server may recover; a 404 will not.
        raise ToolError(f"{url} answered HTTP {status}", transient=status >= 500 or status == 429)
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _TEXT_TYPES:
        raise ToolError(
            f"{url} is {content_type or 'of unknown type'}, not a web page "
            "(only HTML and plain text can be extracted)"
        )
    body = bytearray()
    truncated = False
    deadline = time.monotonic() + policy.total_timeout
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > policy.max_bytes or time.monotonic() > deadline:
            del body[policy.max_bytes :]
            truncated = True
            break
    text = body.decode(response.encoding or "utf-8", errors="replace")
    return FetchedPage(str(url), status, content_type, text, truncated)


def fetch(
    client: httpx.Client, url: str, allowed_domains: Iterable[str], policy: WebPolicy
) -> FetchedPage:
    """GET url, following redirects by hand so every hop is scope- and address-checked."""
    allowed = tuple(allowed_domains)
    current = _parse_url(url)
    for _ in range(policy.max_redirects + 1):
        host = current.raw_host.decode("ascii").lower()
        if not host_in_scope(host, allowed):
            raise _out_of_scope(host, allowed)
        port = current.port or (443 if current.scheme == "https" else 80)
        addresses = check_address(host, port, policy)
        with _transport_errors(host):
            response = _send(client, current, host, addresses)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    current = _parse_url(urljoin(str(current), location))
                    continue
                return _read(response, current, policy)
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


def _links(tree: LexborHTMLParser, page_url: str) -> tuple[Link, ...]:
    base_tag = tree.css_first("base[href]")
    base = urljoin(page_url, base_tag.attributes.get("href") or "") if base_tag else page_url
    links: dict[str, Link] = {}
    for anchor in tree.css("a[href]"):
        href = (anchor.attributes.get("href") or "").strip()
        url = urldefrag(urljoin(base, href)).url
        if urlsplit(url).scheme in ("http", "https") and url not in links:
            links[url] = Link(url, _node_text(anchor))
    return tuple(links.values())


def extract(page: FetchedPage) -> PageContent:
    """Title, main text and links of a fetched page; plain text is kept as it is."""
    if page.content_type == "text/plain":
        return PageContent(title="", text=page.text, links=())
    tree = LexborHTMLParser(page.text)
    title = next((t for t in (_node_text(tree.css_first(tag)) for tag in ("title", "h1")) if t), "")
    # Links come from the whole page, navigation included: that is where the next pages are.
    links = _links(tree, page.url)
    tree.strip_tags(_DROPPED_TAGS, recursive=True)
    root = tree.css_first("main") or tree.css_first("article") or tree.body
    return PageContent(title=title, text=_block_text(root) if root else "", links=links)


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


class WebExtractTool:
    name = "web_extract"
    description = (
        "Fetches a web page within the mission's allowed domains and extracts its title, "
        "main text and links; can follow up to 10 same-site links."
    )
    intents = frozenset({EXTRACT})
    input_model = WebExtractInputs
    unavailable_reason = None

    def __init__(
        self,
        policy: WebPolicy = WebPolicy(),
        cost_per_page: float = 0.001,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.policy = policy
        self.cost_per_page = cost_per_page
        self._transport = transport

    def estimate_cost(self, inputs: ToolInputs) -> float:
        pages = inputs.max_pages if isinstance(inputs, WebExtractInputs) else 1
        return self.cost_per_page * pages

    def run(self, context: ToolContext) -> ToolResult:
        inputs = WebExtractInputs.model_validate(context.inputs)
        url = inputs.url or first_url(context.objective)
        if not url:
            raise ToolError("No URL to extract: give inputs.url or put a URL in the objective")
        with self.policy.client(self._transport) as client:
            pages = self._crawl(client, url, inputs.max_pages, context)
        return self._result(pages)

    def _crawl(
        self, client: httpx.Client, url: str, max_pages: int, context: ToolContext
    ) -> list[tuple[FetchedPage, PageContent]]:
        """Breadth-first over same-host links until max_pages pages are read or links run out."""
        total = max_pages
        pages: list[tuple[FetchedPage, PageContent]] = []
        queue: deque[str] = deque([url])
        seen = {urldefrag(url).url}
        # Linked pages may fail (a PDF, a 404); bound the attempts so a page of dead links
        # cannot turn into hundreds of requests.
        attempts_left = max_pages * 3
        while queue and len(pages) < max_pages and attempts_left:
            context.check_cancelled()
            next_url = queue.popleft()
            attempts_left -= 1
            try:
                page = fetch(client, next_url, context.allowed_domains, self.policy)
            except ToolError:
                if not pages:  # the page the owner asked for must work
                    raise
                continue
            final_url = urldefrag(page.url).url
            if any(urldefrag(p.url).url == final_url for p, _ in pages):
                continue  # a link that redirected to a page already read
            seen.add(final_url)
            content = extract(page)
            pages.append((page, content))
            # Same host as the first page, which passed the scope check; fetch re-checks anyway.
            start_host = _host(pages[0][0].url)
            for link in content.links:
                if link.url not in seen and _host(link.url) == start_host:
                    seen.add(link.url)
                    queue.append(link.url)
            if not queue or not attempts_left:
                total = len(pages)
            context.report(len(pages), total, "pages", f"pages {len(pages)}/{total}")
        if total > len(pages):  # the last links failed: end on how many pages there really were
            total = len(pages)
            context.report(total, total, "pages", f"pages {total}/{total}")
        return pages

    def _result(self, pages: list[tuple[FetchedPage, PageContent]]) -> ToolResult:
        first, first_content = pages[0]
        title = first_content.title or first.url
        words = sum(len(content.text.split()) for _, content in pages)
        sections = [f"## {c.title or p.url}\n{p.url}\n\n{c.text}" for p, c in pages]
        content = "\n\n".join(sections)
        truncated = any(p.truncated for p, _ in pages) or len(content) > MAX_CONTENT_CHARS
        links = list({link.url: link for _, c in pages for link in c.links}.values())
        lines = [line for line in first_content.text.splitlines() if line.strip()][:8]
        preview = "\n".join(lines)[:800]
        if links:
            top = "\n".join(f"- {link.text or link.url} — {link.url}" for link in links[:5])
            preview = f"{preview}\n\nTop links:\n{top}".strip()
        return ToolResult(
            title=title,
            summary=f"{title}: {words} words from {len(pages)} page(s)",
            content=content[:MAX_CONTENT_CHARS],
            type="web_page",
            preview=preview,
            data={
                "url": first.url,
                "pages": [
                    {"url": p.url, "title": c.title, "words": len(c.text.split())} for p, c in pages
                ],
                "links": [{"url": link.url, "text": link.text} for link in links[:20]],
                "truncated": truncated,
            },
            cost_usd=self.cost_per_page * len(pages),
        )
