"""Which search provider the environment configures, and what it says when it cannot work.

Nothing here sends a request: the providers are built and looked at (test_search_providers.py
asks them).
"""

from __future__ import annotations

import logging
import runpy
import shlex

import pytest

from buddy import bootstrap
from buddy.config import Settings
from buddy.devstack import ROOT
from buddy.tools import default_registry
from buddy.tools.search import (
    BraveProvider,
    DuckDuckGoProvider,
    SearxngProvider,
    TavilyProvider,
    UnconfiguredProvider,
    provider_from_settings,
)
from buddy.tools.search_keys import SecretManagerKey, StaticKey


def provider(**env: str) -> object:
    return provider_from_settings(Settings.from_env(env))


def test_with_nothing_set_search_uses_duckduckgo() -> None:
    """A fresh stack needs no setting to search: DuckDuckGo's no-JavaScript page, no key."""
    built = provider()

    assert isinstance(built, DuckDuckGoProvider)
    assert built.base_url == "https://html.duckduckgo.com"
    assert built.unavailable_reason is None


def test_the_app_builds_web_search_from_the_settings() -> None:
    """The composition root gives web_search the configured provider."""
    app = bootstrap.build(Settings.from_env({"BUDDY_SEARCH_PROVIDER": "Tavily "}))
    search = app.tools.get("web_search")

    assert search is not None
    assert search.unavailable_reason == (
        "web_search is not available: BUDDY_SEARCH_PROVIDER=tavily needs an API key: set "
        "BUDDY_SEARCH_API_KEY (or TAVILY_API_KEY), or BUDDY_SEARCH_API_KEY_SECRET to the Secret "
        "Manager version that holds it (projects/P/secrets/S/versions/V)"
    )
    default = bootstrap.build(Settings()).tools.get("web_search")
    assert default is not None
    assert default.unavailable_reason is None


@pytest.mark.parametrize(
    ("env", "kind", "base_url"),
    [
        (
            {"BUDDY_SEARCH_PROVIDER": "duckduckgo"},
            DuckDuckGoProvider,
            "https://html.duckduckgo.com",
        ),
        (
            {"BUDDY_SEARCH_PROVIDER": "DuckDuckGo", "BUDDY_SEARCH_URL": "http://127.0.0.1:8/"},
            DuckDuckGoProvider,
            "http://127.0.0.1:8",
        ),
        (
            {"BUDDY_SEARCH_PROVIDER": "searxng", "BUDDY_SEARCH_URL": "https://sx.example/"},
            SearxngProvider,
            "https://sx.example",
        ),
        (
            {"BUDDY_SEARCH_PROVIDER": "brave", "BUDDY_SEARCH_API_KEY": "k"},
            BraveProvider,
            "https://api.search.brave.com",
        ),
        (
            {"BUDDY_SEARCH_PROVIDER": "tavily", "BUDDY_SEARCH_API_KEY": "k"},
            TavilyProvider,
            "https://api.tavily.com",
        ),
        (
            {
                "BUDDY_SEARCH_PROVIDER": "brave",
                "BRAVE_API_KEY": "k",
                "BUDDY_SEARCH_URL": "http://b",
            },
            BraveProvider,
            "http://b",
        ),
        ({"BUDDY_SEARCH_PROVIDER": "", "BUDDY_SEARCH_URL": ""}, DuckDuckGoProvider, None),
    ],
    ids=["duckduckgo", "duckduckgo-url", "searxng", "brave", "tavily", "brave-own-key", "empty"],
)
def test_the_provider_and_its_url_come_from_the_environment(
    env: dict[str, str], kind: type, base_url: str | None
) -> None:
    """BUDDY_SEARCH_PROVIDER picks the provider (any case), BUDDY_SEARCH_URL points it
    elsewhere (required for SearXNG), and an empty variable counts as unset."""
    built = provider(**env)

    assert isinstance(built, kind)
    assert built.unavailable_reason is None
    assert built.base_url == (base_url or "https://html.duckduckgo.com")


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"BUDDY_SEARCH_API_KEY": "ours", "BRAVE_API_KEY": "theirs"}, "ours"),
        ({"BRAVE_API_KEY": "theirs", "TAVILY_API_KEY": "other"}, "theirs"),
        ({"BRAVE_API_KEY": " theirs ", "BUDDY_SEARCH_API_KEY_SECRET": "projects/p/secrets/s"},
         "theirs"),
    ],
    ids=["ours-first", "provider-variable", "given-key-before-secret"],
)  # fmt: skip
def test_which_api_key_wins(env: dict[str, str], key: str) -> None:
    """BUDDY_SEARCH_API_KEY, then the provider's usual variable, then the secret."""
    built = provider(BUDDY_SEARCH_PROVIDER="brave", **env)

    assert isinstance(built, BraveProvider)
    assert built.key == StaticKey(key)


@pytest.mark.parametrize(
    ("secret", "version"),
    [
        ("projects/p/secrets/brave/versions/7", "projects/p/secrets/brave/versions/7"),
        ("projects/p/secrets/brave", "projects/p/secrets/brave/versions/latest"),
    ],
    ids=["version", "latest"],
)
def test_a_secret_version_is_read_lazily(secret: str, version: str) -> None:
    """BUDDY_SEARCH_API_KEY_SECRET names the version that holds the key; nothing is read
    until a search needs it, and a secret's name alone means its latest version."""
    built = provider(BUDDY_SEARCH_PROVIDER="tavily", BUDDY_SEARCH_API_KEY_SECRET=secret)

    assert isinstance(built, TavilyProvider)
    assert built.unavailable_reason is None
    assert isinstance(built.key, SecretManagerKey)
    assert built.key.version == version
    assert built.key.base_url == "https://secretmanager.googleapis.com"


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        (
            {"BUDDY_SEARCH_PROVIDER": "bing"},
            "BUDDY_SEARCH_PROVIDER='bing' is not a search provider: use one of duckduckgo, "
            "searxng, brave, tavily",
        ),
        (
            {"BUDDY_SEARCH_PROVIDER": "searxng"},
            "BUDDY_SEARCH_PROVIDER=searxng needs BUDDY_SEARCH_URL, the base URL of a SearXNG "
            "instance with the JSON format enabled",
        ),
        (
            {"BUDDY_SEARCH_PROVIDER": "brave", "TAVILY_API_KEY": "not brave's"},
            "BUDDY_SEARCH_PROVIDER=brave needs an API key: set BUDDY_SEARCH_API_KEY (or "
            "BRAVE_API_KEY), or BUDDY_SEARCH_API_KEY_SECRET to the Secret Manager version that "
            "holds it (projects/P/secrets/S/versions/V)",
        ),
        (
            {"BUDDY_SEARCH_PROVIDER": "tavily", "BUDDY_SEARCH_API_KEY_SECRET": "brave-key"},
            "BUDDY_SEARCH_API_KEY_SECRET='brave-key' is not a Secret Manager secret version: "
            "give projects/P/secrets/S/versions/V (or projects/P/secrets/S for the latest "
            "version)",
        ),
    ],
    ids=["unknown-provider", "searxng-without-url", "missing-key", "bad-secret-name"],
)
def test_a_configuration_that_cannot_work_says_what_to_set(
    env: dict[str, str], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An unknown provider, SearXNG without a URL, a keyed provider without a key: nothing
    fails at start-up; search is unavailable with the reason, logged once as a warning."""
    with caplog.at_level(logging.WARNING, logger="buddy.tools.search_providers"):
        built = provider(**env)
        tools = default_registry(search_provider=built)

    assert isinstance(built, UnconfiguredProvider)
    assert built.unavailable_reason == reason
    search = tools.get("web_search")
    assert search is not None
    assert search.unavailable_reason == f"web_search is not available: {reason}"
    assert tools.for_intent("search") is search  # still chosen, so selection says why
    assert [r.getMessage() for r in caplog.records] == [f"search is not configured: {reason}"]


def test_api_keys_are_not_in_the_settings_repr() -> None:
    """Settings printed in a log or a traceback do not show the keys."""
    settings = Settings.from_env(
        {
            "BUDDY_SEARCH_PROVIDER": "brave",
            "BUDDY_SEARCH_API_KEY": "sk-1",
            "BRAVE_API_KEY": "sk-2",
            "TAVILY_API_KEY": "sk-3",
        }
    )
    built = provider_from_settings(settings)

    assert isinstance(built, BraveProvider)
    assert built.key.get(0) == "sk-1"
    for shown in (repr(settings), repr(built), repr(built.key)):
        assert "sk-" not in shown


def _deploy_commands(**search: str) -> list[str]:
    """scripts/deploy.py's commands (a pure function: nothing is built or run)."""
    commands = runpy.run_path(str(ROOT / "scripts" / "deploy.py"))["commands"]
    return [shlex.join(c) for c in commands("acme-prod", "europe-west1", **search)]


def test_deploy_configures_search_and_lets_the_worker_read_its_key() -> None:
    """--search-provider and --search-key-secret reach every function's environment, and the
    worker's account (and no other) may read that secret."""
    secret = "projects/acme-prod/secrets/brave-key/versions/2"
    commands = _deploy_commands(search_provider="brave", search_key_secret=secret)

    deploys = [c for c in commands if c.startswith("gcloud functions deploy")]
    assert deploys and all(
        f"BUDDY_SEARCH_PROVIDER=brave;BUDDY_SEARCH_API_KEY_SECRET={secret}" in c for c in deploys
    )
    grants = [c for c in commands if "secretmanager" in c]
    assert grants == [
        "gcloud secrets add-iam-policy-binding brave-key --project=acme-prod "
        "--member=serviceAccount:buddy-worker@acme-prod.iam.gserviceaccount.com "
        "--role=roles/secretmanager.secretAccessor"
    ]
    assert commands.index(grants[0]) < commands.index(deploys[0])
    assert not any("SEARCH" in c for c in _deploy_commands())  # DuckDuckGo needs nothing
