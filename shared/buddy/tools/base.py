"""The tool interface and the registry that maps names to tools."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

# report(done, total, unit, message) — sub-step progress of a long tool.
Reporter = Callable[[int, int, str, str | None], None]


class ToolError(Exception):
    """The tool could not do its work; the message is shown to the mission's owner."""


@dataclass(frozen=True)
class ToolResult:
    title: str
    summary: str
    content: str
    type: str = "text"
    data: dict[str, Any] = field(default_factory=dict)
    cost_usd: float = 0.0


class Tool(Protocol):
    name: str
    description: str
    intents: frozenset[str]
    estimated_cost_usd: float

    def run(self, objective: str, inputs: dict[str, Any], report: Reporter) -> ToolResult: ...


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools = {tool.name: tool for tool in tools}

    def names(self) -> list[str]:
        return sorted(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def for_intent(self, intent: str) -> Tool | None:
        return next((t for t in self._tools.values() if intent in t.intents), None)
