"""Tools for the isolation tests; the child process imports them by module and name."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from buddy.tools import ToolContext, ToolError, ToolInputs, ToolResult


class _TestTool:
    name = "test"
    description = "A tool for the isolation tests."
    intents = frozenset({"test"})
    input_model: ClassVar[type[ToolInputs]] = ToolInputs
    unavailable_reason = None
    time_budget_seconds: ClassVar[float] = 30.0
    isolated: ClassVar[bool] = True

    def estimate_cost(self, inputs: ToolInputs) -> float:
        return 0.0

    def run(self, context: ToolContext) -> ToolResult:
        raise NotImplementedError


def _result(content: str) -> ToolResult:
    return ToolResult(title="test", summary="test", content=content)


def _pid_result() -> ToolResult:
    return _result(str(os.getpid()))


def _write_pid_file(context: ToolContext) -> None:
    if "pid_file" in context.inputs:
        Path(context.inputs["pid_file"]).write_text(str(os.getpid()))


class BusyTool(_TestTool):
    """Computes in C for minutes without a bytecode boundary (and without much memory).

    With inputs {"pid_file": path} it first writes its pid there.
    """

    def run(self, context: ToolContext) -> ToolResult:
        _write_pid_file(context)
        return _result(str(10 ** (10**8) % 7))


class QuickBudgetBusyTool(BusyTool):
    time_budget_seconds: ClassVar[float] = 0.5


class HogTool(_TestTool):
    """Allocates 1 GiB at once."""

    def run(self, context: ToolContext) -> ToolResult:
        return _result(str(len(bytearray(2**30))))


class EnvironmentTool(_TestTool):
    """Answers with the names of its environment variables."""

    def run(self, context: ToolContext) -> ToolResult:
        return _result(json.dumps(sorted(os.environ)))


class RefusingTool(_TestTool):
    """Fails the way a tool is meant to: with a ToolError."""

    def run(self, context: ToolContext) -> ToolResult:
        raise ToolError("the service said no", transient=True)


class CrashingTool(_TestTool):
    """Fails with a bug."""

    def run(self, context: ToolContext) -> ToolResult:
        known: dict[str, str] = {}
        return _result(known["missing"])


class ChattyTool(_TestTool):
    """Prints to stdout, where the child writes its answer, before answering."""

    def run(self, context: ToolContext) -> ToolResult:
        print("not JSON", flush=True)
        return _result("answer")


class VerboseTool(_TestTool):
    """Answers with more than the parent reads (9 MiB)."""

    def run(self, context: ToolContext) -> ToolResult:
        return _result("x" * 9 * 2**20)


class PidTool(_TestTool):
    """Answers with the pid of the process it runs in."""

    def run(self, context: ToolContext) -> ToolResult:
        return _pid_result()


class SpinTool(_TestTool):
    """Spins in Python for inputs["cpu_seconds"] of CPU time, then answers with its pid."""

    def run(self, context: ToolContext) -> ToolResult:
        started = time.process_time()
        while time.process_time() - started < context.inputs["cpu_seconds"]:
            pass
        return _pid_result()


class SleepTool(_TestTool):
    """Sleeps inputs["seconds"] (no CPU), then answers with its pid.

    With inputs {"pid_file": path} it first writes its pid there.
    """

    def run(self, context: ToolContext) -> ToolResult:
        _write_pid_file(context)
        time.sleep(context.inputs["seconds"])
        return _pid_result()


class RememberingTool(_TestTool):
    """Keeps each request's inputs on its instance; answers with what the instance held."""

    def __init__(self) -> None:
        self.remembered: dict[str, Any] | None = None

    def run(self, context: ToolContext) -> ToolResult:
        before, self.remembered = self.remembered, context.inputs
        return _result(json.dumps({"pid": os.getpid(), "before": before}))


class ImportsTool(_TestTool):
    """Answers with which of the web tools' modules its process has imported."""

    WEB_MODULES: ClassVar[tuple[str, ...]] = (
        "httpx",
        "selectolax",
        "buddy.tools.web",
        "buddy.tools.search",
    )

    def run(self, context: ToolContext) -> ToolResult:
        return _result(json.dumps([name for name in self.WEB_MODULES if name in sys.modules]))
