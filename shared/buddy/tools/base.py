"""The tool interface and the registry that maps names to tools."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict

# report(done, total, unit, message) — sub-step progress of a long tool.
Reporter = Callable[[int, int, str, str | None], None]


class ToolError(Exception):
    """The tool could not do its work; the message is shown to the mission's owner.

    Transient errors (a timeout, a 5xx) may go away: the step tries again.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class ToolCancelled(Exception):
    """The owner cancelled the mission while the tool was working."""


class ToolPaused(Exception):
    """Signal: the tool stopped between two pages or items, for its owner to decide, having
    saved where it got to with `ToolContext.save`; the mission pauses, and a resumed run
    hands the tool that state back (`ToolContext.checkpoint`).

    Without hosts: the owner asked for the pause. With them: the tool needs those hosts,
    which are outside the mission's allowed domains (only when the mission asks instead of
    failing).
    """

    def __init__(self, host: str | None = None, hosts: tuple[str, ...] = ()) -> None:
        self.hosts = hosts or ((host,) if host else ())
        self.host = self.hosts[0] if self.hosts else None
        super().__init__(", ".join(self.hosts) or "paused")


class OutOfScope(Exception):
    """Mixin of errors about a host outside the allowed domains (the owner could allow it)."""

    host: str


def _integral_float_to_int(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# JSON Schema's "integer" includes 3.0; strict pydantic does not, so convert just those.
# Put it after the field's constraints, or they vanish from the JSON schema.
INTEGRAL_FLOATS = BeforeValidator(_integral_float_to_int)


class ToolInputs(BaseModel):
    """Base of every tool's input model: unknown arguments are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ToolCrashed(Exception):
    """A tool failed in a way it did not foresee (a bug); str() says what, for people."""


class ToolOverBudget(ToolError):
    """The tool used up its time budget; it is stopped and the step fails (no retry)."""


@dataclass(frozen=True)
class ToolContext:
    """What a tool gets to work with for one mission."""

    objective: str
    inputs: dict[str, Any]
    allowed_domains: tuple[str, ...] = ()
    report: Reporter = lambda done, total, unit, message: None
    cancelled: Callable[[], bool] = lambda: False
    # time.monotonic() by which the tool must have finished (its time budget).
    deadline: float = math.inf
    paused: Callable[[], bool] = lambda: False
    # "ask": a limit the owner could lift (a host outside the allowed domains) pauses the
    # mission instead of failing the tool; see ToolPaused.
    on_limit: str = "fail"
    # Where an earlier run of this tool had got to when the mission paused (what it saved).
    checkpoint: Mapping[str, Any] | None = None
    save: Callable[[Mapping[str, Any]], None] = lambda state: None

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def check_cancelled(self) -> None:
        """Long tools call this between pages or items: stops on a cancel, a spent budget or
        a pause (save your state before, so that a resumed run carries on from it)."""
        self.check_stopped()
        if self.paused():
            raise ToolPaused

    def check_stopped(self) -> None:
        """Within one page or item: stops on a cancel or a spent budget, never for a pause
        (that waits for the item to be done, so that none is done twice)."""
        if self.cancelled():
            raise ToolCancelled
        if self.seconds_left() <= 0:
            raise ToolOverBudget("it ran out of its time budget")


@dataclass(frozen=True)
class ToolResult:
    title: str
    summary: str
    content: str
    type: str = "text"
    preview: str = ""
    # How clients should show content: "markdown", "text", "json" or "table" (data["table"]).
    format: str = "text"
    data: dict[str, Any] = field(default_factory=dict)
    cost_usd: float = 0.0


class Tool(Protocol):
    name: str
    description: str
    intents: frozenset[str]
    input_model: ClassVar[type[ToolInputs]]
    # Wall-clock seconds the tool may take, retries included; past them it is stopped.
    time_budget_seconds: ClassVar[float]
    # CPU-bound work runs in a child process with CPU and memory limits, where it cannot
    # hold the worker's GIL (and so its lease heartbeat). The class must build with no
    # arguments there.
    isolated: ClassVar[bool]

    @property
    def unavailable_reason(self) -> str | None:
        """None when the tool can run here; otherwise why not, in words."""

    def estimate_cost(self, inputs: ToolInputs) -> float: ...

    def run(self, context: ToolContext) -> ToolResult: ...


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools = {tool.name: tool for tool in tools}

    def names(self) -> list[str]:
        return sorted(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def for_intent(self, intent: str) -> Tool | None:
        """The first tool that serves the intent, preferring one that can run here."""
        serving = [t for t in self._tools.values() if intent in t.intents]
        available = [t for t in serving if t.unavailable_reason is None]
        return next(iter(available or serving), None)
