"""Search providers: DuckDuckGo (the default, key-less), SearXNG, Brave and Tavily.

Each provider turns one query into SearchHits (rank 1.. in the provider's order) with one
bounded request (search_http), and says why not when it cannot: offline, blocked, refused,
rate limited. provider_from_settings builds the configured one; a configuration that
cannot work (an unknown name, a missing key) builds an UnconfiguredProvider that says what
to set, so start-up never fails on it and tool selection tells the owner.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qs, urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

from buddy.tools.base import ToolError
from buddy.tools.search_http import Answer, Service, exchange
from buddy.tools.search_keys import ApiKey, SecretManagerKey, StaticKey, secret_version
from buddy.tools.web import MAX_TITLE_CHARS, MAX_URL_LENGTH, USER_AGENT, clip

log = logging.getLogger(__name__)

MAX_SNIPPET_CHARS = 1000
# One search, connect to last byte. With the step's retries (3 attempts, 1 s and 2 s of
# backoff) three slow answers still end inside web_search's 30 s budget.
SEARCH_TIMEOUT = 7.0

DUCKDUCKGO_URL = "https://html.duckduckgo.com"
BRAVE_URL = "https://api.search.brave.com"
TAVILY_URL = "https://api.tavily.com"

CONFIGURE_ANOTHER = (
    "To search, set BUDDY_SEARCH_PROVIDER=searxng with BUDDY_SEARCH_URL, "
    "or brave/tavily with BUDDY_SEARCH_API_KEY"
)


@dataclass(frozen=True)
class SearchHit:
    url: str
    title: str
    snippet: str
    # The provider's relevance score where it gives one (SearXNG, Tavily), else 0.
    score: float
    # 1-based position in the provider's answer (ads and non-web results left out).
    rank: int


class SearchProvider(Protocol):
    @property
    def name(self) -> str:
        """What artifacts record as their provider: duckduckgo, searxng, brave or tavily."""
        ...

    @property
    def unavailable_reason(self) -> str | None:
        """None when the provider can be asked; otherwise what to configure, in words."""
        ...

    def search(self, query: str, limit: int, deadline: float = math.inf) -> list[SearchHit]:
        """At most limit hits, asked for by deadline (a time.monotonic() value)."""
        ...


class UnconfiguredProvider:
    """A configuration that cannot search; every search fails with the reason."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.unavailable_reason: str | None = reason
        self._reason = reason

    def search(self, query: str, limit: int, deadline: float = math.inf) -> list[SearchHit]:
        raise ToolError(self._reason)


NO_PROVIDER = UnconfiguredProvider("none", "no search provider is configured")


class _HttpProvider:
    """What the providers share: a base URL, one bounded request per search, and hits made
    from untrusted strings (cleaned and clipped)."""

    name: ClassVar[str]
    label: ClassVar[str]
    # The longest query the provider takes; longer ones are cut to it here, as most
    # providers refuse them outright.
    max_query: ClassVar[int] = 400
    # What to tell the owner when the provider cannot be reached.
    hint: ClassVar[str] = ""
    unavailable_reason: str | None = None

    def __init__(self, base_url: str, timeout: float = SEARCH_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        # Bounds the whole search (name lookup, connect, answer), not each socket operation.
        self.timeout = timeout
        self.service = Service.at(self.label, self.base_url, self.hint)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def search(self, query: str, limit: int, deadline: float = math.inf) -> list[SearchHit]:
        deadline = min(time.monotonic() + self.timeout, deadline)
        answer = self._ask(query[: self.max_query].strip(), limit, deadline)
        if answer.status != 200:
            raise self._refusal(answer)
        try:
            found = [hit for hit in self._parse(answer.body) if hit.url]
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise self.service.error("returned an unreadable answer") from e
        return [
            SearchHit(hit.url, hit.title, hit.snippet, hit.score, rank)
            for rank, hit in enumerate(found[:limit], 1)
        ]

    def _ask(self, query: str, limit: int, deadline: float) -> Answer:
        raise NotImplementedError

    def _parse(self, body: bytes) -> list[SearchHit]:
        """The answer's web results in order (rank not yet set); raises ValueError and the
        like for an answer of the wrong shape."""
        raise NotImplementedError

    def _refusal(self, answer: Answer) -> ToolError:
        """Why an answer other than 200 means no results, and whether to try again."""
        status = answer.status
        if status == 429:
            return self.service.error(
                "is limiting how often this machine may search (HTTP 429)", transient=True
            )
        return self.service.error(
            f"answered HTTP {status}", transient=status >= 500 or status == 408
        )

    def _exchange(self, method: str, path: str, deadline: float, **request: Any) -> Answer:
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            **request.pop("headers", {}),
        }
        return exchange(
            self.service,
            method,
            f"{self.base_url}{path}",
            deadline=deadline,
            timeout=self.timeout,
            headers=headers,
            **request,
        )


class DuckDuckGoProvider(_HttpProvider):
    """DuckDuckGo's page for browsers without JavaScript (html.duckduckgo.com/html/), read
    with selectolax: no key, no account.

    It is a page, not an API: DuckDuckGo asks busy addresses (cloud servers among them) to
    prove they are human, which is said plainly, with the providers to configure instead.
    Only the first page is asked for: later pages need a token DuckDuckGo ties to a browser,
    and asking for them without it gets the address blocked.
    """

    name = "duckduckgo"
    label = "DuckDuckGo"
    max_query = 499  # DuckDuckGo refuses 500 characters and more
    hint = CONFIGURE_ANOTHER
    # DuckDuckGo's bot filter turns away clients that do not look like a browser (as
    # SearXNG's engine notes), so this one asks as the no-JavaScript page's browsers do.
    user_agent = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"

    def __init__(self, base_url: str = DUCKDUCKGO_URL, timeout: float = SEARCH_TIMEOUT) -> None:
        super().__init__(base_url, timeout)

    def _ask(self, query: str, limit: int, deadline: float) -> Answer:
        # The form the page itself submits: b="" asks for the first page, kl the region
        # (wt-wt: no region).
        return self._exchange(
            "POST",
            "/html/",
            deadline,
            data={"q": query, "b": "", "kl": "wt-wt"},
            headers={
                "User-Agent": self.user_agent,
                "Accept": "text/html,application/xhtml+xml",
                "Accept-Language": "en-US,en;q=0.8",
                "Referer": f"{self.base_url}/",
            },
        )

    def _refusal(self, answer: Answer) -> ToolError:
        # 202 is how DuckDuckGo answers with its "are you a bot" challenge; 403 and 418 are
        # its blocks. Trying again within seconds only makes them last longer.
        if answer.status in (202, 403, 418):
            return self._challenged(f"HTTP {answer.status}")
        if answer.status == 429:
            return self._challenged("HTTP 429, too many searches")
        if answer.status in (301, 302, 303):
            return self.service.error(
                f"sent this query elsewhere (HTTP {answer.status}): a word starting with ! is "
                "one of its shortcuts (a !bang); leave the ! out"
            )
        return super()._refusal(answer)

    def _challenged(self, how: str) -> ToolError:
        return self.service.error(
            f"refused this search as automated traffic ({how}); it does that to busy or "
            f"shared addresses, such as cloud servers. {CONFIGURE_ANOTHER}"
        )

    def _parse(self, body: bytes) -> list[SearchHit]:
        page = LexborHTMLParser(body.decode("utf-8", errors="replace"))
        if page.css_first("form#challenge-form") or page.css_first(".anomaly-modal"):
            raise self._challenged("a bot challenge")
        results = page.css("div.result")
        if not results and not (page.css_first("#links") or page.css_first(".no-results")):
            raise ValueError("not a page of DuckDuckGo results")
        hits: list[SearchHit] = []
        for result in results:
            if "result--ad" in (result.attributes.get("class") or "").split():
                continue
            anchor = result.css_first("a.result__a") or result.css_first("h2 a")
            url = _duckduckgo_target(anchor.attributes.get("href") or "") if anchor else None
            if anchor is None or url is None:
                continue
            snippet = result.css_first(".result__snippet")
            hits.append(_hit(url, _text(anchor), _text(snippet) if snippet else "", 0.0))
        return hits


def _duckduckgo_target(href: str) -> str | None:
    """Where a result link goes: DuckDuckGo's redirect (//duckduckgo.com/l/?uddg=<url>)
    unwrapped; None for its ads (duckduckgo.com/y.js?...) and its own pages."""
    if href.startswith("//"):
        href = "https:" + href
    try:
        split = urlsplit(href)
    except ValueError:
        return None
    host = (split.hostname or "").lower()
    if href.startswith("/") or host == "duckduckgo.com" or host.endswith(".duckduckgo.com"):
        if split.path.rstrip("/") == "/l":
            return next(iter(parse_qs(split.query).get("uddg", [])), None)
        return None
    return href


def _text(node: LexborNode) -> str:
    return node.text(deep=True, separator="", strip=False)


class SearxngProvider(_HttpProvider):
    """A SearXNG instance with the JSON output format enabled (search.formats: [json])."""

    name = "searxng"
    label = "SearXNG"
    max_query = 1000
    hint = "Check BUDDY_SEARCH_URL"

    def _ask(self, query: str, limit: int, deadline: float) -> Answer:
        return self._exchange("GET", "/search", deadline, params={"q": query, "format": "json"})

    def _refusal(self, answer: Answer) -> ToolError:
        if answer.status == 403:
            # SearXNG's answer to format=json when its settings do not list json.
            return self.service.error(
                "refused the JSON format (HTTP 403): add json to search.formats in its settings.yml"
            )
        return super()._refusal(answer)

    def _parse(self, body: bytes) -> list[SearchHit]:
        return _scored_results(body)


class _KeyedProvider(_HttpProvider):
    """A provider that needs an API key (BUDDY_SEARCH_API_KEY, or its usual variable)."""

    key_variable: ClassVar[str]
    hint = "Check the network, or set BUDDY_SEARCH_PROVIDER to another provider"

    def __init__(self, key: ApiKey | str, base_url: str, timeout: float = SEARCH_TIMEOUT) -> None:
        super().__init__(base_url, timeout)
        self.key = StaticKey(key) if isinstance(key, str) else key

    def _key_refused(self, status: int) -> ToolError:
        return self.service.error(
            f"refused the API key (HTTP {status}): check BUDDY_SEARCH_API_KEY "
            f"(or {self.key_variable})"
        )


class BraveProvider(_KeyedProvider):
    """Brave Search's Web Search API: GET /res/v1/web/search, the key in X-Subscription-Token."""

    name = "brave"
    label = "Brave Search"
    key_variable = "BRAVE_API_KEY"
    max_results = 20  # its `count` goes up to 20

    def _ask(self, query: str, limit: int, deadline: float) -> Answer:
        return self._exchange(
            "GET",
            "/res/v1/web/search",
            deadline,
            params={
                "q": query,
                "count": str(max(1, min(limit, self.max_results))),
                "result_filter": "web",
                "text_decorations": "false",
            },
            headers={"X-Subscription-Token": self.key.get(deadline)},
        )

    def _refusal(self, answer: Answer) -> ToolError:
        # Brave answers a bad or unsubscribed token with 401, 403 or 422 ("SUBSCRIPTION_
        # TOKEN_INVALID"); 422 otherwise means a query it will not take.
        if answer.status in (401, 403) or (
            answer.status == 422 and b"TOKEN" in answer.body.upper()
        ):
            return self._key_refused(answer.status)
        return super()._refusal(answer)

    def _parse(self, body: bytes) -> list[SearchHit]:
        answer = json.loads(body)
        if not isinstance(answer, dict):
            raise TypeError("not an object")
        # No "web" section means no web results.
        results = (answer.get("web") or {}).get("results") or []
        # Titles and descriptions may carry markup (<strong> around the words asked for).
        return [
            _hit(
                item.get("url"),
                _html_text(item.get("title")),
                _html_text(item.get("description")),
                None,
            )
            for item in results
        ]


class TavilyProvider(_KeyedProvider):
    """Tavily's Search API: POST /search with a JSON body, the key as a Bearer token."""

    name = "tavily"
    label = "Tavily"
    key_variable = "TAVILY_API_KEY"
    max_results = 20

    def _ask(self, query: str, limit: int, deadline: float) -> Answer:
        return self._exchange(
            "POST",
            "/search",
            deadline,
            json={
                "query": query,
                "max_results": max(1, min(limit, self.max_results)),
                "search_depth": "basic",
                "include_answer": False,
                "include_raw_content": False,
            },
            headers={"Authorization": f"Bearer {self.key.get(deadline)}"},
        )

    def _refusal(self, answer: Answer) -> ToolError:
        status = answer.status
        if status == 401:
            return self._key_refused(status)
        # 432: the plan's monthly credits are used up; 433: the pay-as-you-go limit.
        if status in (432, 433):
            return self.service.error(
                f"refused the search: the account's usage limit is reached (HTTP {status})"
            )
        if status in (400, 403):
            detail = _tavily_detail(answer.body)
            return self.service.error(f"refused the search (HTTP {status}){detail}")
        return super()._refusal(answer)

    def _parse(self, body: bytes) -> list[SearchHit]:
        return _scored_results(body)


def _tavily_detail(body: bytes) -> str:
    """Tavily's own words from {"detail": {"error": ...}}, after a colon; or nothing."""
    try:
        error = json.loads(body)["detail"]["error"]
    except (KeyError, TypeError, ValueError):
        return ""
    return f": {clip(_clean(str(error)), 200)}" if error else ""


# Characters that change how text reads without being seen: bidirectional overrides and
# isolates (a title spoofing its own direction), besides control characters.
_INVISIBLE = re.compile("[\u202a-\u202e\u2066-\u2069]")


def _clean(text: str) -> str:
    """One line of plain text: controls and direction overrides dropped, spaces collapsed."""
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in _INVISIBLE.sub("", text))
    return " ".join(text.split())


def _html_text(value: Any) -> str:
    if not value:
        return ""
    fragment = LexborHTMLParser(f"<body>{value}</body>").body
    return fragment.text(deep=True, separator="", strip=False) if fragment else ""


def _scored_results(body: bytes) -> list[SearchHit]:
    """The hits of an answer shaped {"results": [{url, title, content, score}]} (SearXNG's
    and Tavily's alike)."""
    return [
        _hit(item.get("url"), item.get("title"), item.get("content"), item.get("score"))
        for item in json.loads(body)["results"]
    ]


def _score(value: Any) -> float:
    """The provider's score when it is a finite number, else 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    try:
        score = float(value)  # an int past a float's range (10**400) raises
    except OverflowError:
        return 0.0
    return score if math.isfinite(score) else 0.0


def _is_web_url(url: str) -> bool:
    try:
        return len(url) <= MAX_URL_LENGTH and urlsplit(url).scheme in ("http", "https")
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False


def _hit(url: Any, title: Any, snippet: Any, score: Any) -> SearchHit:
    """One result from untrusted strings, its rank not yet known; its url is "" (and the hit
    dropped) unless it is a web page's."""
    url = str(url or "").strip()
    if not _is_web_url(url):
        url = ""
    return SearchHit(
        url=url,
        title=clip(_clean(str(title or "")) or url, MAX_TITLE_CHARS),
        snippet=clip(_clean(str(snippet or "")), MAX_SNIPPET_CHARS),
        score=_score(score),
        rank=0,
    )


class SearchSettings(Protocol):
    """What provider_from_settings reads (buddy.config.Settings has it all)."""

    @property
    def search_provider(self) -> str: ...
    @property
    def search_url(self) -> str | None: ...
    @property
    def search_api_key(self) -> str | None: ...
    @property
    def search_api_key_secret(self) -> str | None: ...
    @property
    def brave_api_key(self) -> str | None: ...
    @property
    def tavily_api_key(self) -> str | None: ...


PROVIDERS = ("duckduckgo", "searxng", "brave", "tavily")
DEFAULT_PROVIDER = "duckduckgo"


def provider_from_settings(
    settings: SearchSettings, *, secret_manager_url: str | None = None
) -> SearchProvider:
    """The provider BUDDY_SEARCH_PROVIDER names (DuckDuckGo when unset), pointed at
    BUDDY_SEARCH_URL when given; an UnconfiguredProvider saying what to set when it cannot
    work. secret_manager_url is for tests (Secret Manager's REST endpoint)."""
    name = (settings.search_provider or DEFAULT_PROVIDER).strip().lower()
    url = (settings.search_url or "").strip() or None
    provider: SearchProvider
    if name == "duckduckgo":
        provider = DuckDuckGoProvider(url or DUCKDUCKGO_URL)
    elif name == "searxng":
        provider = (
            SearxngProvider(url)
            if url
            else UnconfiguredProvider(
                name,
                "BUDDY_SEARCH_PROVIDER=searxng needs BUDDY_SEARCH_URL, the base URL of a "
                "SearXNG instance with the JSON format enabled",
            )
        )
    elif name in ("brave", "tavily"):
        key = _api_key(name, settings, secret_manager_url)
        if isinstance(key, UnconfiguredProvider):
            provider = key
        elif name == "brave":
            provider = BraveProvider(key, url or BRAVE_URL)
        else:
            provider = TavilyProvider(key, url or TAVILY_URL)
    else:
        provider = UnconfiguredProvider(
            name,
            f"BUDDY_SEARCH_PROVIDER={clip(name, 40)!r} is not a search provider: use one of "
            f"{', '.join(PROVIDERS)}",
        )
    if provider.unavailable_reason:
        log.warning("search is not configured: %s", provider.unavailable_reason)
    return provider


def _api_key(
    name: str, settings: SearchSettings, secret_manager_url: str | None
) -> ApiKey | UnconfiguredProvider:
    """BUDDY_SEARCH_API_KEY, else the provider's own variable, else the secret named by
    BUDDY_SEARCH_API_KEY_SECRET."""
    own_variable, own_key = (
        ("BRAVE_API_KEY", settings.brave_api_key)
        if name == "brave"
        else ("TAVILY_API_KEY", settings.tavily_api_key)
    )
    key = (settings.search_api_key or "").strip() or (own_key or "").strip()
    if key:
        return StaticKey(key)
    secret = (settings.search_api_key_secret or "").strip()
    if not secret:
        return UnconfiguredProvider(
            name,
            f"BUDDY_SEARCH_PROVIDER={name} needs an API key: set BUDDY_SEARCH_API_KEY (or "
            f"{own_variable}), or BUDDY_SEARCH_API_KEY_SECRET to the Secret Manager version "
            "that holds it (projects/P/secrets/S/versions/V)",
        )
    version = secret_version(secret)
    if version is None:
        return UnconfiguredProvider(
            name,
            f"BUDDY_SEARCH_API_KEY_SECRET={clip(secret, 120)!r} is not a Secret Manager secret "
            "version: give projects/P/secrets/S/versions/V (or projects/P/secrets/S for the "
            "latest version)",
        )
    if secret_manager_url:
        return SecretManagerKey(version, base_url=secret_manager_url)
    return SecretManagerKey(version)
