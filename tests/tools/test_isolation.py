"""Tools run in a child process: same answers, CPU/memory/time limits, cancels, no leaks;
children are kept warm and reused, one request at a time each."""

from __future__ import annotations

import inspect
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from buddy.tools import (
    Tool,
    ToolCancelled,
    ToolContext,
    ToolError,
    ToolOverBudget,
    default_registry,
    isolation,
)
from buddy.tools.calculate import CalculateTool
from buddy.tools.isolation import IsolatedToolCrashed, run_isolated, shutdown_pool

from . import isolation_targets as targets

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_pool() -> Iterator[None]:
    """Every test starts with no idle child, and leaves none behind."""
    shutdown_pool()
    yield
    shutdown_pool()


def _context(expression: str = "", deadline: float = math.inf) -> ToolContext:
    inputs = {"expression": expression} if expression else {}
    return ToolContext(objective="test", inputs=inputs, deadline=deadline)


def _inputs(**inputs: Any) -> ToolContext:
    return ToolContext(objective="test", inputs=inputs)


def _pid(**limits: Any) -> int:
    """The pid of the child that serves the next request."""
    return int(run_isolated(targets.PidTool(), _context(), **limits).content)


def _is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # succeeds for a live process and for an unreaped zombie
    except ProcessLookupError:
        return True
    return False


def _is_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie is its new parent's to reap, not ours)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _eventually(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    give_up = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize(
    "objective",
    ["calculate 2*(3+4)", "What is 10/4?", "sqrt(16)"],
    ids=["integer", "fraction", "function"],
)
def test_isolated_calculation_gives_the_in_process_result(objective: str) -> None:
    """The child's ToolResult equals the one the tool returns in-process."""
    context = ToolContext(objective, {})
    assert run_isolated(CalculateTool(), context) == CalculateTool().run(context)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1/0", "division by zero"),
        ("round(1, -10**8)", "round's digits must be between -300 and 300"),
        ("1e308*10", "the result would be too large"),
    ],
    ids=["division-by-zero", "round-digits", "overflow"],
)
def test_tool_error_in_the_child_arrives_with_its_message(expression: str, message: str) -> None:
    """A calculation the evaluator refuses fails the same way in the child."""
    with pytest.raises(ToolError) as raised:
        run_isolated(CalculateTool(), _context(expression))
    assert str(raised.value) == message
    assert type(raised.value) is ToolError


def test_transient_tool_error_stays_transient() -> None:
    """A ToolError's transient flag survives the trip from the child."""
    with pytest.raises(ToolError) as raised:
        run_isolated(targets.RefusingTool(), _context())
    assert (str(raised.value), raised.value.transient) == ("the service said no", True)


def test_a_bug_in_the_child_is_a_crash_not_a_tool_error() -> None:
    """An unexpected exception in the tool arrives as a crash naming its type."""
    with pytest.raises(IsolatedToolCrashed, match=r"^unexpected KeyError$"):
        run_isolated(targets.CrashingTool(), _context())


def test_printing_does_not_corrupt_the_answer() -> None:
    """What the tool prints goes to stderr; the answer on stdout stays readable."""
    assert run_isolated(targets.ChattyTool(), _context()).content == "answer"


def test_an_answer_over_the_output_cap_is_refused() -> None:
    """More than 8 MiB from the child is an error, not a result."""
    with pytest.raises(ToolError, match="it wrote more than 8 MiB"):
        run_isolated(targets.VerboseTool(), _context())


def test_busy_child_is_stopped_by_its_cpu_limit() -> None:
    """A C-level computation of minutes ends at the CPU limit with a clear message."""
    started = time.monotonic()
    with pytest.raises(ToolError) as raised:
        run_isolated(targets.BusyTool(), _context(), cpu_seconds=1)
    assert str(raised.value) == "the calculation took too long"
    assert time.monotonic() - started < 20  # the computation itself takes minutes


@pytest.mark.parametrize(
    ("tool", "deadline_in", "message"),
    [
        (targets.QuickBudgetBusyTool(), math.inf, "time budget of 0.5 s"),
        (targets.BusyTool(), 0.5, "time budget of 30 s"),
    ],
    ids=["tool-budget", "mission-deadline"],
)
def test_busy_child_is_stopped_at_the_time_budget(
    tool: targets.BusyTool, deadline_in: float, message: str
) -> None:
    """The parent kills the child at the tool's budget or the context's deadline, if sooner."""
    started = time.monotonic()
    with pytest.raises(ToolOverBudget, match=message):
        run_isolated(tool, _context(deadline=started + deadline_in), cpu_seconds=60)
    assert time.monotonic() - started < 5


def test_memory_hog_gets_the_memory_message() -> None:
    """A 1 GiB allocation fails under the address-space limit with a clear message."""
    with pytest.raises(ToolError) as raised:
        run_isolated(targets.HogTool(), _context())
    assert str(raised.value) == "the calculation needs more memory than allowed"


def test_cancel_kills_and_reaps_the_child(tmp_path: Path) -> None:
    """A cancel raises ToolCancelled and leaves no child process, not even a zombie."""
    pid_file = tmp_path / "pid"
    started = time.monotonic()

    def cancelled() -> bool:
        return pid_file.exists() and time.monotonic() - started > 0.3

    context = ToolContext("test", {"pid_file": str(pid_file)}, cancelled=cancelled)
    with pytest.raises(ToolCancelled):
        run_isolated(targets.BusyTool(), context, cpu_seconds=60)
    assert _is_gone(int(pid_file.read_text()))


def test_the_child_sees_none_of_the_parents_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable set in the worker (a credential, say) does not reach the child."""
    monkeypatch.setenv("BUDDY_SECRET_PROBE", "x")
    names = json.loads(run_isolated(targets.EnvironmentTool(), _context()).content)
    assert "BUDDY_SECRET_PROBE" not in names
    assert set(names) <= {"PATH", "LC_CTYPE"}  # Python sets LC_CTYPE itself (PEP 538)


def test_parent_threads_keep_running_while_the_child_computes(tmp_path: Path) -> None:
    """The child's computation does not hold the parent's GIL: a heartbeat thread ticks."""
    pid_file = tmp_path / "pid"
    ticks = 0
    computing_since: tuple[float, int] | None = None  # (when, ticks then)
    stop = threading.Event()

    def heartbeat() -> None:
        nonlocal ticks
        while not stop.wait(0.05):
            ticks += 1

    def cancelled() -> bool:
        # Count from when the child is in its C computation, and cancel 1 s later.
        nonlocal computing_since
        if computing_since is None and pid_file.exists():
            computing_since = (time.monotonic(), ticks)
        return computing_since is not None and time.monotonic() - computing_since[0] > 1.0

    thread = threading.Thread(target=heartbeat)
    thread.start()
    try:
        with pytest.raises(ToolCancelled):
            context = ToolContext("test", {"pid_file": str(pid_file)}, cancelled=cancelled)
            run_isolated(targets.BusyTool(), context, cpu_seconds=60)
    finally:
        stop.set()
        thread.join()
    assert computing_since is not None
    # 1 s is 20 ticks; a held GIL would allow next to none.
    assert ticks - computing_since[1] >= 10


def test_a_class_the_child_cannot_import_is_refused() -> None:
    """A tool class defined inside a function cannot run isolated; the parent says so."""

    class LocalTool(targets.RefusingTool):
        pass

    with pytest.raises(TypeError, match="cannot run isolated"):
        run_isolated(LocalTool(), _context())


def test_the_child_does_not_import_the_web_tools() -> None:
    """A child imports the tool interface and its tool, not httpx and the web tools."""
    assert json.loads(run_isolated(targets.ImportsTool(), _context()).content) == []


def test_default_registry_fetch_timeout_is_the_web_policys() -> None:
    """The literal default in buddy.tools (kept so it need not import web) matches WebPolicy."""
    from buddy.tools.web import WebPolicy

    parameter = inspect.signature(default_registry).parameters["web_fetch_timeout"]
    assert parameter.default == WebPolicy.total_timeout


def test_a_second_call_reuses_the_child() -> None:
    """Calls one after another are served by the same warm child."""
    assert _pid() == _pid() == _pid()


@pytest.mark.parametrize(
    ("tool", "reused"),
    [(targets.RefusingTool(), True), (targets.CrashingTool(), False), (targets.HogTool(), False)],
    ids=["tool-error", "crash", "out-of-memory"],
)
def test_a_child_is_reused_only_after_a_clean_answer(tool: Tool, reused: bool) -> None:
    """A ToolError is a clean answer; after a crash or a MemoryError the child is replaced."""
    before = _pid()
    with pytest.raises((ToolError, IsolatedToolCrashed)):
        run_isolated(tool, _context())
    assert (_pid() == before) is reused


@pytest.mark.parametrize(
    ("tool", "cpu_seconds", "stopped_with"),
    [
        (targets.BusyTool(), 1, ToolError),
        (targets.QuickBudgetBusyTool(), 60, ToolOverBudget),
    ],
    ids=["cpu-limit", "time-budget"],
)
def test_a_child_killed_by_a_runaway_request_is_replaced(
    tool: targets.BusyTool, cpu_seconds: float, stopped_with: type[Exception]
) -> None:
    """The killed child is reaped and gone; the next call gets a new child that works."""
    before = _pid()
    with pytest.raises(stopped_with):
        run_isolated(tool, _context(), cpu_seconds=cpu_seconds)
    assert _is_gone(before)
    after = _pid()
    assert after != before
    assert run_isolated(CalculateTool(), _context("6*7")).content == "42"


def test_the_cpu_limit_applies_to_each_request() -> None:
    """A child that served many requests still gives the next its full CPU seconds, and
    still stops a runaway one at them."""
    pids = {_pid(cpu_seconds=1) for _ in range(20)}
    for _ in range(3):  # 2.1 s of CPU in all, past a limit of 1 s set once at the start
        spin = run_isolated(targets.SpinTool(), _inputs(cpu_seconds=0.7), cpu_seconds=1)
        pids.add(int(spin.content))
    assert len(pids) == 1
    started = time.monotonic()
    with pytest.raises(ToolError) as raised:
        run_isolated(targets.BusyTool(), _context(), cpu_seconds=1)
    assert str(raised.value) == "the calculation took too long"
    assert time.monotonic() - started < 20
    assert _is_gone(pids.pop())


def test_concurrent_calls_get_their_own_answers() -> None:
    """Eight threads calculating at once each get their own results, never another's."""
    start = threading.Barrier(8)

    def calculate(thread: int) -> list[tuple[str, str]]:
        start.wait()
        return [
            (
                run_isolated(CalculateTool(), _context(f"{thread}*1000+{i}")).content,
                str(thread * 1000 + i),
            )
            for i in range(10)
        ]

    with ThreadPoolExecutor(8) as threads:
        answers = [pair for pairs in threads.map(calculate, range(8)) for pair in pairs]
    assert len(answers) == 80
    assert all(got == expected for got, expected in answers)


def test_callers_past_the_pool_size_wait_for_a_free_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of calls does not start a child each: past POOL_SIZE they take turns."""
    monkeypatch.setattr(isolation, "POOL_SIZE", 2)

    def sleep(_: int) -> int:
        return int(run_isolated(targets.SleepTool(), _inputs(seconds=0.2)).content)

    with ThreadPoolExecutor(6) as threads:
        pids = list(threads.map(sleep, range(6)))
    assert len(set(pids)) <= 2


def test_waiting_for_a_free_child_counts_against_the_budget(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A call that cannot get a child before its deadline is over budget, and says so soon."""
    monkeypatch.setattr(isolation, "POOL_SIZE", 1)
    pid_file = tmp_path / "pid"
    with ThreadPoolExecutor(1) as thread:
        busy = thread.submit(
            run_isolated, targets.SleepTool(), _inputs(seconds=1.5, pid_file=str(pid_file))
        )
        assert _eventually(pid_file.exists)  # the only child is busy
        started = time.monotonic()
        with pytest.raises(ToolOverBudget):
            run_isolated(targets.PidTool(), _context(deadline=started + 0.3))
        assert time.monotonic() - started < 1.0
        busy.result()


def test_shutdown_pool_leaves_no_child_alive() -> None:
    """shutdown_pool() stops and reaps every idle child."""

    def sleep(_: int) -> int:
        return int(run_isolated(targets.SleepTool(), _inputs(seconds=0.5)).content)

    with ThreadPoolExecutor(3) as threads:
        pids = set(threads.map(sleep, range(3)))
    assert len(pids) == 3
    assert not any(_is_gone(pid) for pid in pids)  # idle in the pool
    shutdown_pool()
    assert all(_is_gone(pid) for pid in pids)


def test_a_child_busy_during_shutdown_is_not_taken_back(tmp_path: Path) -> None:
    """A child serving a request when the pool shuts down is stopped once it answers."""
    pid_file = tmp_path / "pid"
    with ThreadPoolExecutor(1) as thread:
        busy = thread.submit(
            run_isolated, targets.SleepTool(), _inputs(seconds=0.5, pid_file=str(pid_file))
        )
        assert _eventually(pid_file.exists)
        shutdown_pool()
        pid = int(busy.result().content)
    assert _is_gone(pid)
    assert _pid() != pid


def test_idle_children_end_when_the_worker_dies() -> None:
    """A worker killed outright (no atexit) leaves no child running: its stdin ends."""
    code = (
        "import os, signal, sys\n"
        f"sys.path.insert(0, {str(REPOSITORY)!r})\n"
        "from buddy.tools import ToolContext\n"
        "from buddy.tools.isolation import run_isolated\n"
        "from tests.tools.isolation_targets import PidTool\n"
        "print(run_isolated(PidTool(), ToolContext('test', {})).content, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    worker = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert worker.returncode == -signal.SIGKILL, worker.stderr
    pid = int(worker.stdout)
    assert _eventually(lambda: not _is_running(pid))


def test_nothing_a_tool_instance_keeps_reaches_the_next_request() -> None:
    """Each request gets a new instance of the tool: one request's inputs stay its own."""
    answers = [
        json.loads(run_isolated(targets.RememberingTool(), _inputs(secret=str(i))).content)
        for i in range(3)
    ]
    assert len({answer["pid"] for answer in answers}) == 1
    assert [answer["before"] for answer in answers] == [None, None, None]
