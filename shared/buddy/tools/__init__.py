"""Tools a mission can run, looked up by name in a registry."""

from buddy.tools.base import (
    Reporter,
    Tool,
    ToolCancelled,
    ToolContext,
    ToolError,
    ToolInputs,
    ToolOverBudget,
    ToolRegistry,
    ToolResult,
)
from buddy.tools.calculate import CalculateTool
from buddy.tools.search import WebSearchTool, provider_from_env
from buddy.tools.web import WebExtractTool, WebPolicy


def default_registry(
    *, web_allow_loopback: bool = False, search_url: str | None = None
) -> ToolRegistry:
    return ToolRegistry(
        [
            CalculateTool(),
            WebExtractTool(WebPolicy(allow_loopback=web_allow_loopback)),
            WebSearchTool(provider_from_env(search_url)),
        ]
    )


__all__ = [
    "Reporter",
    "Tool",
    "ToolCancelled",
    "ToolContext",
    "ToolError",
    "ToolInputs",
    "ToolOverBudget",
    "ToolRegistry",
    "ToolResult",
    "default_registry",
]
