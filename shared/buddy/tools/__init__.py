"""Tools a mission can run, looked up by name in a registry.

Importing this package is cheap: it holds only the tool interface. The tools themselves,
and their dependencies (httpx, selectolax), are imported when a registry is built, so an
isolated child that needs only the interface and calculate does not pay for the web.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from buddy.tools.base import (
    OutOfScope,
    Reporter,
    Tool,
    ToolCancelled,
    ToolContext,
    ToolCrashed,
    ToolError,
    ToolInputs,
    ToolOverBudget,
    ToolPaused,
    ToolRegistry,
    ToolResult,
)

if TYPE_CHECKING:
    from buddy.tools.search import SearchProvider


def default_registry(
    *,
    web_allow_loopback: bool = False,
    # Built from the settings by buddy.tools.search.provider_from_settings (DuckDuckGo unless
    # configured otherwise); None leaves search "not available" (the unit tests' registry).
    search_provider: SearchProvider | None = None,
    # WebPolicy.total_timeout, written out so that this signature does not import the web
    # tool (tests/tools/test_isolation.py checks that the two agree).
    web_fetch_timeout: float = 30.0,
) -> ToolRegistry:
    from buddy.tools.calculate import CalculateTool
    from buddy.tools.research import ResearchTool
    from buddy.tools.search import NO_PROVIDER, WebSearchTool
    from buddy.tools.web import WebExtractTool, WebPolicy

    policy = WebPolicy(allow_loopback=web_allow_loopback, total_timeout=web_fetch_timeout)
    search = search_provider or NO_PROVIDER
    return ToolRegistry(
        [
            CalculateTool(),
            WebExtractTool(policy),
            # Before web_search, which serves research objectives too when picked.
            ResearchTool(search, policy),
            WebSearchTool(search),
        ]
    )


__all__ = [
    "OutOfScope",
    "Reporter",
    "Tool",
    "ToolCancelled",
    "ToolContext",
    "ToolCrashed",
    "ToolError",
    "ToolInputs",
    "ToolOverBudget",
    "ToolPaused",
    "ToolRegistry",
    "ToolResult",
    "default_registry",
]
