"""Tools a mission can run, looked up by name in a registry.

Importing this package is cheap: it holds only the tool interface. The tools themselves,
and their dependencies (httpx, selectolax), are imported when a registry is built, so an
isolated child that needs only the interface and calculate does not pay for the web.
"""

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


def default_registry(
    *,
    web_allow_loopback: bool = False,
    search_url: str | None = None,
    # WebPolicy.total_timeout, written out so that this signature does not import the web
    # tool (tests/tools/test_isolation.py checks that the two agree).
    web_fetch_timeout: float = 30.0,
) -> ToolRegistry:
    from buddy.tools.calculate import CalculateTool
    from buddy.tools.search import WebSearchTool, provider_from_env
    from buddy.tools.web import WebExtractTool, WebPolicy

    policy = WebPolicy(allow_loopback=web_allow_loopback, total_timeout=web_fetch_timeout)
    return ToolRegistry(
        [
            CalculateTool(),
            WebExtractTool(policy),
            WebSearchTool(provider_from_env(search_url)),
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
