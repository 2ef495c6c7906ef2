"""The search providers against local servers shaped like their APIs (no internet here).

DuckDuckGo's no-JavaScript page, Brave's and Tavily's JSON APIs, and Secret Manager's
`:access` answer for a key kept there; then the ways a search fails: a bot challenge, rate
limits, a server that never answers, a name that does not resolve. SearXNG, the tool and
its artifact are in test_web_search.py.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from buddy.config import Settings
from buddy.tools import ToolError
from buddy.tools.search import (
    BraveProvider,
    DuckDuckGoProvider,
    SearchHit,
    SearchProvider,
    SearxngProvider,
    TavilyProvider,
    WebSearchTool,
    provider_from_settings,
)
from buddy.tools.search_keys import SecretManagerKey

from ..localserver import LocalServer, Received, Reply
from ..rawserver import RawServer, read_request
from .conftest import MakeContext

CONFIGURE = (
    "To search, set BUDDY_SEARCH_PROVIDER=searxng with BUDDY_SEARCH_URL, "
    "or brave/tavily with BUDDY_SEARCH_API_KEY"
)


def urls(hits: list[SearchHit]) -> list[str]:
    return [h.url for h in hits]


# ---- DuckDuckGo --------------------------------------------------------------------------

AD = """
<div class="result results_links results_links_deep result--ad ">
  <div class="links_main links_deep result__body">
    <h2 class="result__title">
      <a rel="nofollow" class="result__a"
         href="https://duckduckgo.com/y.js?ad_domain=learnfast.example&amp;ad_provider=bingv7aa&amp;u3=https%3A%2F%2Fwww.bing.com%2Faclick%3Fld%3Dx">Learn
         Python in 2 Days</a>
      <button class="badge--ad">Ad</button>
    </h2>
    <a class="result__snippet" href="https://duckduckgo.com/y.js?ad_domain=learnfast.example">Sponsored:
      a <b>Python</b> bootcamp.</a>
  </div>
</div>"""


def organic(href: str, title: str, snippet: str | None, shown: str) -> str:
    snippet_html = (
        f'<a class="result__snippet" href="{href}">{snippet}</a>' if snippet is not None else ""
    )
    return f"""
<div class="result results_links results_links_deep web-result ">
  <div class="links_main links_deep result__body">
    <h2 class="result__title">
      <a rel="nofollow" class="result__a" href="{href}">{title}</a>
    </h2>
    <div class="result__extras">
      <div class="result__extras__url">
        <span class="result__icon"><a rel="nofollow" href="{href}"><img
          class="result__icon__img" width="16" height="16" alt=""
          src="//external-content.duckduckgo.com/ip3/x.ico"></a></span>
        <a class="result__url" href="{href}">{shown}</a>
        <span>&nbsp; &nbsp; 2025-11-03T00:00:00.0000000</span>
      </div>
    </div>
    {snippet_html}
    <div class="clear"></div>
  </div>
</div>"""


def ddg_page(*results: str, query: str = "python tutorial") -> str:
    return f"""<!DOCTYPE html>
<html lang="en-US">
<head><meta charset="UTF-8"><meta name="referrer" content="origin">
<title>{query} at DuckDuckGo</title></head>
<body>
<div id="header"><form id="search_form" name="x" action="/html/" method="post">
  <input class="search__input" type="text" name="q" value="{query}">
  <input name="b" type="hidden" value=""><input name="kl" type="hidden" value="wt-wt">
</form></div>
<div class="serp__results"><div id="links" class="results">
{"".join(results)}
<div class="nav-link"><form action="/html/" method="post">
  <input type="submit" class="btn btn--alt" value="Next">
  <input type="hidden" name="q" value="{query}"><input type="hidden" name="s" value="10">
  <input type="hidden" name="nextParams" value=""><input type="hidden" name="v" value="l">
  <input type="hidden" name="o" value="json"><input type="hidden" name="dc" value="11">
  <input type="hidden" name="api" value="d.js"><input type="hidden" name="vqd" value="4-3344">
</form></div>
</div></div>
</body></html>"""


# An ad that links straight to its landing page: only its class says it is one.
DIRECT_AD = AD.replace(
    'href="https://duckduckgo.com/y.js?ad_domain=learnfast.example&amp;ad_provider=bingv7aa'
    '&amp;u3=https%3A%2F%2Fwww.bing.com%2Faclick%3Fld%3Dx"',
    'href="https://ads.example/landing"',
).replace("result--ad ", "result--ad result--ad--small ")

RESULTS_PAGE = ddg_page(
    AD,
    DIRECT_AD,
    organic(
        "//duckduckgo.com/l/?uddg=https%3A%2F%2Fdocs.python.org%2F3%2Ftutorial%2Findex.html"
        "&amp;rut=0a1b2c3d",
        "The Python Tutorial &#8212; Python 3.13 documentation",
        "This <b>tutorial</b> introduces the reader informally to the basic concepts of the"
        "\n      <b>Python</b> language. It&#x27;s best to have a <b>Python</b> interpreter handy.",
        "docs.python.org/3/tutorial/index.html",
    ),
    organic(
        "https://www.w3schools.com/python/",
        "Python Tutorial &amp; Exercises - W3Schools",
        "Well organized and easy to understand <b>Web</b> building tutorials.",
        "www.w3schools.com/python/",
    ),
    organic(
        "//duckduckgo.com/l/?uddg=javascript%3Aalert(1)&amp;rut=ff",
        "Not a web page",
        "A result whose target is not http(s).",
        "javascript",
    ),
    organic(
        "//duckduckgo.com/l/?uddg=https%3A%2F%2Freal.example%2Fguide%3Fa%3D1%26b%3D2&amp;rut=9",
        "A guide with no snippet",
        None,
        "real.example/guide",
    ),
)

NO_RESULTS_PAGE = ddg_page(
    '<div class="result results_links results_links_deep result--no-result">'
    '<div class="no-results">No  results.</div></div>',
    query="zxqv wobble frobnicate",
)

CHALLENGE_PAGE = """<!DOCTYPE html><html><head><title>DuckDuckGo</title></head><body>
<form id="challenge-form" action="//duckduckgo.com/anomaly.js?sv=html&amp;cc=botnet&amp;ti=1"
      method="POST">
<div class="anomaly-modal__mask"><div class="anomaly-modal__modal" data-testid="anomaly-modal">
  <div class="anomaly-modal__title">Unfortunately, bots use DuckDuckGo too.</div>
  <div class="anomaly-modal__description">Please complete the following challenge to confirm
    this search was made by a human.</div>
  <div class="anomaly-modal__instructions">Select all squares containing a duck:</div>
  <div class="anomaly-modal__puzzle">
    <img class="anomaly-modal__image" src="//duckduckgo.com/assets/anomaly/images/1.jpg">
    <img class="anomaly-modal__image" src="//duckduckgo.com/assets/anomaly/images/2.jpg">
  </div>
  <button class="anomaly-modal__submit" type="submit">Submit</button>
</div></div>
</form></body></html>"""


def ddg(server: LocalServer, page: str, status: int = 200) -> DuckDuckGoProvider:
    server.route("POST /html/", Reply(status, page))
    return DuckDuckGoProvider(server.base_url, timeout=2)


def test_duckduckgo_reads_the_organic_results_in_order(server: LocalServer) -> None:
    """Ads and non-web targets are left out, redirect links are unwrapped, markup and
    entities become text, and the ranks count the results kept."""
    hits = ddg(server, RESULTS_PAGE).search("python tutorial", 10)

    assert hits == [
        SearchHit(
            "https://docs.python.org/3/tutorial/index.html",
            "The Python Tutorial — Python 3.13 documentation",
            "This tutorial introduces the reader informally to the basic concepts of the Python "
            "language. It's best to have a Python interpreter handy.",
            0.0,
            1,
        ),
        SearchHit(
            "https://www.w3schools.com/python/",
            "Python Tutorial & Exercises - W3Schools",
            "Well organized and easy to understand Web building tutorials.",
            0.0,
            2,
        ),
        SearchHit("https://real.example/guide?a=1&b=2", "A guide with no snippet", "", 0.0, 3),
    ]


def test_duckduckgo_is_asked_as_its_no_javascript_form_asks(server: LocalServer) -> None:
    """One POST to /html/ with the form's fields (the first page, no region), from a
    browser-like client that says where the form was."""
    ddg(server, RESULTS_PAGE).search("python tutorial", 10)

    [call] = server.requests
    assert (call.method, call.path) == ("POST", "/html/")
    assert call.form() == {"q": "python tutorial", "b": "", "kl": "wt-wt"}
    assert call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert call.headers["referer"] == f"{server.base_url}/"
    assert call.headers["user-agent"].startswith("Mozilla/5.0")


def test_duckduckgo_limit_and_long_queries(server: LocalServer) -> None:
    """At most limit hits; a query past DuckDuckGo's 499 characters is cut to them."""
    hits = ddg(server, RESULTS_PAGE).search("q" * 600, 2)

    assert urls(hits) == [
        "https://docs.python.org/3/tutorial/index.html",
        "https://www.w3schools.com/python/",
    ]
    assert server.requests[0].form()["q"] == "q" * 499


def test_duckduckgo_no_results_is_an_empty_list(server: LocalServer) -> None:
    """DuckDuckGo's "No results." page is no hits, not an error."""
    assert ddg(server, NO_RESULTS_PAGE).search("zxqv wobble frobnicate", 10) == []


@pytest.mark.parametrize(
    ("status", "how"),
    [(202, "HTTP 202"), (200, "a bot challenge"), (403, "HTTP 403"), (429, "HTTP 429")],
    ids=["challenge-202", "challenge-page", "forbidden", "too-many"],
)
def test_duckduckgo_bot_challenge_says_to_configure_another_provider(
    server: LocalServer, status: int, how: str
) -> None:
    """DuckDuckGo's "are you a bot" answer (a 202 with its challenge, or the challenge page
    itself) and its blocks fail at once, not retried, naming the providers to configure."""
    with pytest.raises(ToolError) as error:
        ddg(server, CHALLENGE_PAGE, status).search("python tutorial", 10)

    message = str(error.value)
    assert message.startswith(
        f"The search provider DuckDuckGo refused this search as automated traffic ({how}"
    )
    assert message.endswith(CONFIGURE)
    assert error.value.transient is False


@pytest.mark.parametrize(
    ("reply", "message", "transient"),
    [
        (Reply(503, "busy", "text/plain"), "answered HTTP 503", True),
        (Reply(200, "<html><body>Welcome to nginx!</body></html>"), "unreadable answer", False),
        (
            Reply(303, "", headers={"Location": "https://en.wikipedia.org/wiki/Python"}),
            r"sent this query elsewhere \(HTTP 303\): a word starting with ! is one of its "
            r"shortcuts \(a !bang\); leave the ! out$",
            False,
        ),
    ],
    ids=["http-503", "not-a-results-page", "bang-redirect"],
)
def test_duckduckgo_other_failures(
    server: LocalServer, reply: Reply, message: str, transient: bool
) -> None:
    """A server error may go away (the step retries it); a page that is not DuckDuckGo's
    results page is unreadable, not "no results"; a !bang's redirect is explained."""
    server.route("POST /html/", reply)

    with pytest.raises(ToolError, match=message) as error:
        DuckDuckGoProvider(server.base_url, timeout=2).search("q", 5)

    assert error.value.transient is transient


def test_duckduckgo_through_the_tool_makes_a_markdown_artifact(
    server: LocalServer, make_context: MakeContext
) -> None:
    """web_search on DuckDuckGo: in-scope results as a numbered Markdown list, the provider
    named in the data."""
    tool = WebSearchTool(ddg(server, RESULTS_PAGE))

    result = tool.run(make_context("find python tutorial", allowed_domains=("python.org",)))

    assert result.format == "markdown"
    assert result.content == (
        "1. [The Python Tutorial — Python 3.13 documentation]"
        "(https://docs.python.org/3/tutorial/index.html)\n"
        "   This tutorial introduces the reader informally to the basic concepts of the Python "
        "language. It's best to have a Python interpreter handy."
    )
    assert result.data["provider"] == "duckduckgo"
    assert [(r["rank"], r["url"]) for r in result.data["results"]] == [
        (1, "https://docs.python.org/3/tutorial/index.html")
    ]


# ---- Brave Search ------------------------------------------------------------------------

BRAVE_KEY = "BSA-test-key"

BRAVE_ANSWER = {
    "type": "search",
    "query": {"original": "python tutorial", "more_results_available": True},
    "mixed": {"type": "mixed", "main": [{"type": "web", "index": 0, "all": False}]},
    "web": {
        "type": "search",
        "family_friendly": True,
        "results": [
            {
                "type": "search_result",
                "title": "The Python Tutorial — Python 3.13 documentation",
                "url": "https://docs.python.org/3/tutorial/",
                "is_source_local": False,
                "description": "This <strong>tutorial</strong> introduces the reader "
                "informally to the basic concepts of <strong>Python</strong>. It&#x27;s short.",
                "profile": {"name": "Python documentation", "url": "https://docs.python.org"},
                "language": "en",
                "meta_url": {"scheme": "https", "hostname": "docs.python.org", "path": "\u203a 3"},
            },
            {
                "type": "search_result",
                "title": "Learn <strong>Python</strong> - Free Interactive Tutorial",
                "url": "https://www.learnpython.org/",
                "description": "learnpython.org is a free interactive tutorial.",
                "age": "March 3, 2024",
            },
            {"type": "search_result", "title": "An FTP mirror", "url": "ftp://mirror.example/"},
        ],
    },
}

BRAVE_BAD_TOKEN = {
    "type": "ErrorResponse",
    "error": {
        "id": "8a3f",
        "status": 422,
        "code": "SUBSCRIPTION_TOKEN_INVALID",
        "detail": "The provided subscription token is invalid.",
    },
    "time": 1717000000,
}


def brave_api(call: Received) -> Reply:
    """Brave's answer: the results for the right X-Subscription-Token, 422 otherwise."""
    if call.headers.get("x-subscription-token") != BRAVE_KEY:
        return Reply(422, json.dumps(BRAVE_BAD_TOKEN), "application/json")
    return Reply(200, json.dumps(BRAVE_ANSWER), "application/json")


def test_brave_reads_web_results_with_the_key_in_its_header(server: LocalServer) -> None:
    """GET /res/v1/web/search with the key in X-Subscription-Token; web.results become hits,
    their markup stripped, non-web URLs left out."""
    server.route("GET /res/v1/web/search", brave_api)

    hits = BraveProvider(BRAVE_KEY, server.base_url, timeout=2).search("python tutorial", 30)

    assert hits == [
        SearchHit(
            "https://docs.python.org/3/tutorial/",
            "The Python Tutorial — Python 3.13 documentation",
            "This tutorial introduces the reader informally to the basic concepts of Python. "
            "It's short.",
            0.0,
            1,
        ),
        SearchHit(
            "https://www.learnpython.org/",
            "Learn Python - Free Interactive Tutorial",
            "learnpython.org is a free interactive tutorial.",
            0.0,
            2,
        ),
    ]
    [call] = server.requests
    assert call.query == {
        "q": "python tutorial",
        "count": "20",  # Brave's most
        "result_filter": "web",
        "text_decorations": "false",
    }
    assert call.headers["accept"] == "application/json"


def test_brave_without_web_results_is_an_empty_list(server: LocalServer) -> None:
    """An answer with no "web" section has no hits."""
    server.json("GET /res/v1/web/search", {"type": "search", "query": {"original": "q"}})

    assert BraveProvider(BRAVE_KEY, server.base_url, timeout=2).search("q", 5) == []


@pytest.mark.parametrize(
    ("reply", "message", "transient"),
    [
        (
            None,  # the wrong key: brave_api answers 422 SUBSCRIPTION_TOKEN_INVALID
            r"^The search provider Brave Search refused the API key \(HTTP 422\): check "
            r"BUDDY_SEARCH_API_KEY \(or BRAVE_API_KEY\)$",
            False,
        ),
        (Reply(401, "{}", "application/json"), r"refused the API key \(HTTP 401\)", False),
        (
            Reply(429, '{"type": "ErrorResponse"}', "application/json"),
            r"^The search provider Brave Search is limiting how often this machine may search "
            r"\(HTTP 429\)$",
            True,
        ),
        (Reply(502, "bad gateway", "text/plain"), "answered HTTP 502", True),
    ],
    ids=["wrong-key", "unauthorized", "rate-limited", "http-502"],
)
def test_brave_refusals(
    server: LocalServer, reply: Reply | None, message: str, transient: bool
) -> None:
    """A refused key says which variable to check; a rate limit and a 5xx may go away."""
    server.route("GET /res/v1/web/search", reply or brave_api)

    with pytest.raises(ToolError, match=message) as error:
        BraveProvider("wrong-key", server.base_url, timeout=2).search("q", 5)

    assert error.value.transient is transient


# ---- Tavily ------------------------------------------------------------------------------

TAVILY_KEY = "tvly-test-key"

TAVILY_ANSWER = {
    "query": "python tutorial",
    "follow_up_questions": None,
    "answer": None,
    "images": [],
    "results": [
        {
            "url": "https://www.learnpython.org/",
            "title": "Learn Python - Free Interactive Python Tutorial",
            "content": "Welcome to the LearnPython.org interactive Python tutorial.",
            "score": 0.81,
            "raw_content": None,
        },
        {
            "url": "https://docs.python.org/3/tutorial/",
            "title": "The Python Tutorial",
            "content": "Python is an easy to learn, powerful programming language.",
            "score": 0.93,
            "raw_content": None,
        },
        {"url": "https://odd.example/", "title": "Odd score", "content": "", "score": "high"},
    ],
    "response_time": 1.12,
    "request_id": "123e4567-e89b-12d3-a456-426614174111",
}


def tavily_api(call: Received) -> Reply:
    """Tavily's answer for the right Bearer key, 401 with its error detail otherwise."""
    if call.headers.get("authorization") != f"Bearer {TAVILY_KEY}":
        detail = {"detail": {"error": "Unauthorized: missing or invalid API key."}}
        return Reply(401, json.dumps(detail), "application/json")
    return Reply(200, json.dumps(TAVILY_ANSWER), "application/json")


def test_tavily_posts_the_query_with_the_key_as_a_bearer_token(server: LocalServer) -> None:
    """POST /search with a JSON body and Authorization: Bearer; results keep Tavily's
    order and scores (a score that is not a number counts as 0)."""
    server.route("POST /search", tavily_api)

    hits = TavilyProvider(TAVILY_KEY, server.base_url, timeout=2).search("python tutorial", 15)

    assert [(h.url, h.score, h.rank) for h in hits] == [
        ("https://www.learnpython.org/", 0.81, 1),
        ("https://docs.python.org/3/tutorial/", 0.93, 2),
        ("https://odd.example/", 0.0, 3),
    ]
    assert hits[1].snippet == "Python is an easy to learn, powerful programming language."
    [call] = server.requests
    assert call.headers["content-type"] == "application/json"
    assert call.json() == {
        "query": "python tutorial",
        "max_results": 15,
        "search_depth": "basic",
        "include_answer": False,
        "include_raw_content": False,
    }


def test_tavily_results_through_the_tool_are_ranked_by_score(
    server: LocalServer, make_context: MakeContext
) -> None:
    """The tool puts Tavily's best-scored result first and keeps its provider rank."""
    server.route("POST /search", tavily_api)
    tool = WebSearchTool(TavilyProvider(TAVILY_KEY, server.base_url, timeout=2))

    result = tool.run(make_context(inputs={"query": "python tutorial"}, allowed_domains=()))

    assert [(r["rank"], r["score"]) for r in result.data["results"]] == [
        (2, 0.93),
        (1, 0.81),
        (3, 0.0),
    ]
    assert result.data["provider"] == "tavily"


@pytest.mark.parametrize(
    ("reply", "message", "transient"),
    [
        (
            None,  # the wrong key: tavily_api answers 401
            r"^The search provider Tavily refused the API key \(HTTP 401\): check "
            r"BUDDY_SEARCH_API_KEY \(or TAVILY_API_KEY\)$",
            False,
        ),
        (
            Reply(432, '{"detail": {"error": "Plan limit"}}', "application/json"),
            r"usage limit is reached \(HTTP 432\)$",
            False,
        ),
        (
            Reply(400, '{"detail": {"error": "Query is too long."}}', "application/json"),
            r"^The search provider Tavily refused the search \(HTTP 400\): Query is too long\.$",
            False,
        ),
        (Reply(429, "{}", "application/json"), r"\(HTTP 429\)$", True),
        (Reply(500, "oops", "text/plain"), "answered HTTP 500", True),
    ],
    ids=["wrong-key", "plan-limit", "bad-request", "rate-limited", "http-500"],
)
def test_tavily_refusals(
    server: LocalServer, reply: Reply | None, message: str, transient: bool
) -> None:
    """Tavily's refusals in words, retried only when they may go away."""
    server.route("POST /search", reply or tavily_api)

    with pytest.raises(ToolError, match=message) as error:
        TavilyProvider("wrong-key", server.base_url, timeout=2).search("q", 5)

    assert error.value.transient is transient


# ---- the key in Secret Manager -----------------------------------------------------------

SECRET = "projects/buddy-prod/secrets/brave-key/versions/3"
ACCESS = f"GET /v1/{SECRET}:access"
ACCESS_TOKEN = "ya29.local-test-token"


def access_answer(key: str) -> Reply:
    """Secret Manager's answer to :access: the payload base64-encoded."""
    payload = {
        "name": "projects/123456/secrets/brave-key/versions/3",
        "payload": {"data": base64.b64encode(key.encode()).decode(), "dataCrc32c": "123"},
    }
    return Reply(200, json.dumps(payload), "application/json")


@pytest.fixture
def service_account(server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Application Default Credentials from a service-account file whose token endpoint is
    the local server (as GOOGLE_APPLICATION_CREDENTIALS points to one off Google Cloud)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "buddy-prod",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "buddy-worker@buddy-prod.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"{server.base_url}/token",
    }
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(info))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    token = {"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"}
    server.json("POST /token", token)


def secret_manager_api(key: str) -> Callable[[Received], Reply]:
    def answer(call: Received) -> Reply:
        if call.headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
            return Reply(401, '{"error": {"code": 401}}', "application/json")
        return access_answer(key)

    return answer


@pytest.mark.usefixtures("service_account")
def test_a_key_in_secret_manager_is_read_once_with_default_credentials(server: LocalServer) -> None:
    """BUDDY_SEARCH_API_KEY_SECRET: the first search gets a token for the default credentials,
    reads the version through :access and searches with its payload; later searches reuse it."""
    server.route(ACCESS, secret_manager_api(BRAVE_KEY))
    server.route("GET /res/v1/web/search", brave_api)
    settings = Settings(
        search_provider="brave", search_url=server.base_url, search_api_key_secret=SECRET
    )
    provider = provider_from_settings(settings, secret_manager_url=server.base_url)

    assert provider.unavailable_reason is None
    assert not server.requests  # nothing is read before the first search
    first = provider.search("python tutorial", 5)
    second = provider.search("python tutorial", 5)

    assert (
        urls(first)
        == urls(second)
        == [
            "https://docs.python.org/3/tutorial/",
            "https://www.learnpython.org/",
        ]
    )
    assert [f"{c.method} {c.path}" for c in server.requests] == [
        "POST /token",
        ACCESS,
        "GET /res/v1/web/search",
        "GET /res/v1/web/search",
    ]
    grant = server.requests[0].form()
    assert grant["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (403, "needs roles/secretmanager.secretAccessor on it"),
        (404, r"has no secret version .* \(HTTP 404\): check BUDDY_SEARCH_API_KEY_SECRET$"),
    ],
    ids=["forbidden", "missing"],
)
def test_a_secret_that_cannot_be_read_says_why_and_is_tried_again(
    server: LocalServer, status: int, message: str
) -> None:
    """A refused or missing secret fails the search with what to fix, and is not remembered:
    once the permission is granted, the next search reads it."""
    server.route(ACCESS, Reply(status, '{"error": {}}', "application/json"))
    server.route("GET /res/v1/web/search", brave_api)
    key = SecretManagerKey(SECRET, base_url=server.base_url, token=lambda: ACCESS_TOKEN)
    provider = BraveProvider(key, server.base_url, timeout=2)

    with pytest.raises(ToolError, match=message) as error:
        provider.search("q", 5)
    assert error.value.transient is False
    assert SECRET in str(error.value)

    server.route(ACCESS, access_answer(BRAVE_KEY))
    assert len(provider.search("q", 5)) == 2


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(200, '{"name": "x", "payload": {"data": "%%%"}}', "application/json"), "unread"),
        (Reply(200, '{"name": "x", "payload": {"data": ""}}', "application/json"), "is empty"),
    ],
    ids=["not-base64", "empty"],
)
def test_an_unusable_secret_payload_is_an_error(
    server: LocalServer, reply: Reply, message: str
) -> None:
    """A payload that is not base64, or holds nothing, is no key."""
    server.route(ACCESS, reply)
    key = SecretManagerKey(SECRET, base_url=server.base_url, token=lambda: ACCESS_TOKEN)

    with pytest.raises(ToolError, match=message):
        key.get(time.monotonic() + 2)


def test_no_google_credentials_says_what_to_set(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Off Google Cloud with no credentials file, reading the secret says where a key can
    come from instead."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    key = SecretManagerKey(SECRET, base_url=server.base_url)

    with pytest.raises(ToolError, match="BUDDY_SEARCH_API_KEY"):
        key.get(time.monotonic() + 2)


# ---- a provider that cannot be reached, or never answers ---------------------------------

PROVIDERS: dict[str, Callable[[str], SearchProvider]] = {
    "duckduckgo": lambda url: DuckDuckGoProvider(url, timeout=1),
    "searxng": lambda url: SearxngProvider(url, timeout=1),
    "brave": lambda url: BraveProvider(BRAVE_KEY, url, timeout=1),
    "tavily": lambda url: TavilyProvider(TAVILY_KEY, url, timeout=1),
}
LABELS = {
    "duckduckgo": "DuckDuckGo",
    "searxng": "SearXNG",
    "brave": "Brave Search",
    "tavily": "Tavily",
}


@pytest.mark.parametrize("name", PROVIDERS)
def test_an_unresolvable_host_fails_at_once_with_what_to_configure(name: str) -> None:
    """A name that does not resolve (offline, or no such host) fails at once, without
    waiting for the provider's timeout and not retried, saying what to configure."""
    started = time.monotonic()
    with pytest.raises(ToolError) as error:
        PROVIDERS[name]("https://search.invalid").search("python", 5)

    # Sooner than the provider's 7 s timeout would end it (the lookup's own failure, not a
    # wait); a generous bound, as these machines are shared.
    assert time.monotonic() - started < 5
    assert str(error.value).startswith(
        f"Cannot reach the search provider {LABELS[name]} (search.invalid): this machine looks "
        "offline, or the provider is blocked. "
    )
    assert error.value.transient is False
    if name == "duckduckgo":
        assert str(error.value).endswith(CONFIGURE)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every name lookup fails at once, as on a machine with no network."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)


@pytest.mark.usefixtures("offline")
def test_the_default_provider_offline_fails_the_tool_at_once(make_context: MakeContext) -> None:
    """With no configuration on an offline machine, web_search fails at once with the words
    to configure another provider."""
    tool = WebSearchTool(provider_from_settings(Settings()))
    started = time.monotonic()

    with pytest.raises(ToolError) as error:
        tool.run(make_context("find python tutorials"))

    assert time.monotonic() - started < 5  # no wait for the 7 s timeout, no retry
    assert str(error.value) == (
        "Cannot reach the search provider DuckDuckGo (html.duckduckgo.com): this machine looks "
        f"offline, or the provider is blocked. {CONFIGURE}"
    )
    assert error.value.transient is False


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_refused_connection_may_be_retried(name: str) -> None:
    """Nothing listening: a quick failure that may go away (a restarting instance)."""
    with pytest.raises(ToolError) as error:
        PROVIDERS[name](f"http://127.0.0.1:{closed_port()}").search("q", 5)

    assert str(error.value).startswith(
        f"Cannot reach the search provider {LABELS[name]} (127.0.0.1): connection refused"
    )
    assert error.value.transient is True


def silent(conn: socket.socket) -> None:
    """Takes the request and never answers, until the client hangs up."""
    read_request(conn)
    conn.settimeout(30)
    while conn.recv(4096):
        pass


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_provider_that_never_answers_is_cut_off_at_its_timeout(name: str) -> None:
    """A server that accepts the request and says nothing ends the search at the provider's
    timeout, as a failure the step may retry."""
    with RawServer(silent) as raw:
        started = time.monotonic()
        with pytest.raises(ToolError) as error:
            PROVIDERS[name](raw.url()).search("q", 5)
        took = time.monotonic() - started

    assert str(error.value) == f"The search provider {LABELS[name]} timed out"
    assert error.value.transient is True
    assert 0.9 < took < 3


def test_a_search_that_never_answers_fits_the_tool_budget_with_its_retries() -> None:
    """Three attempts that each time out, with the step's backoff between them (its jitter at
    the most), end within web_search's time budget: the owner sees the timeout, not a stop."""
    settings = Settings()
    attempts = settings.tool_max_attempts
    backoff = sum(
        settings.retry_backoff_seconds * 2**n + settings.retry_backoff_seconds
        for n in range(attempts - 1)
    )
    timeout = DuckDuckGoProvider().timeout

    assert attempts * timeout + backoff < WebSearchTool.time_budget_seconds


def test_a_provider_deadline_shorter_than_its_timeout_wins() -> None:
    """The caller's deadline (the tool's budget, or research's) ends a search sooner than
    the provider's own timeout."""
    with RawServer(silent) as raw:
        provider = DuckDuckGoProvider(raw.url(), timeout=30)
        started = time.monotonic()
        with pytest.raises(ToolError, match="timed out"):
            provider.search("q", 5, deadline=time.monotonic() + 0.5)

    assert time.monotonic() - started < 2


def test_a_score_past_a_floats_range_counts_as_zero(server: LocalServer) -> None:
    """A provider's score of 10**400 (JSON has no bound on integers) or 1e400 is no crash."""
    huge = "1" + "0" * 400
    body = (
        '{"results": [{"url": "https://a.example/", "title": "A", "score": ' + huge + "},"
        '{"url": "https://b.example/", "title": "B", "score": 1e400}]}'
    )
    server.route("/search", Reply(200, body, "application/json"))

    hits = SearxngProvider(server.base_url, timeout=2).search("q", 5)

    assert [(h.url, h.score) for h in hits] == [
        ("https://a.example/", 0.0),
        ("https://b.example/", 0.0),
    ]
