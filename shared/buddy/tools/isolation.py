"""Run a tool in a child interpreter with CPU and memory limits, from a pool of warm children.

A computation in C (a huge power, a huge allocation) holds the GIL until it ends, and
with it the worker's lease heartbeat; the mission then looks dead and recovery re-runs
it, damage included. In a child process it holds only the child's GIL, the kernel
stops it at its CPU and memory limits, and the parent kills it at the time budget or
on a cancel.

Starting an interpreter and importing the tool takes about 200 ms, where a call to a
warm child takes under a millisecond, so children are kept: each serves many requests,
one at a time, over newline-delimited JSON on its stdin and stdout (a line each way):

    {"tool": "module:QualName", "objective": ..., "inputs": ..., "allowed_domains": [...],
     "cpu_seconds": 2.0}
    {"result": {...ToolResult fields}}
    | {"error": message, "transient": bool[, "crash": true][, "retire": true]}

Before each request the child sets its soft CPU limit to the CPU it has used so far
plus the request's cpu_seconds, so every request gets its full allowance however many
came before. A child goes back to the pool only after a clean answer (a result or a
ToolError); one that is killed (cancel, budget, CPU limit), crashes, runs out of memory
or breaks the protocol is reaped and replaced by a fresh one on demand.

What requests share: a child builds a new instance of the tool's class for every
request, and the context carries only that request's inputs, so nothing held by the
instance or the context outlives a request. The tool's module is imported once per
child, so state kept at module or class level would be seen by later requests:
isolated tools must not keep any (calculate keeps only constants).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib
import json
import logging
import math
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import buddy
from buddy.tools.base import (
    Tool,
    ToolCancelled,
    ToolContext,
    ToolCrashed,
    ToolError,
    ToolOverBudget,
    ToolResult,
)

log = logging.getLogger(__name__)

DEFAULT_CPU_SECONDS = 2.0
# Address space. A child maps about 31 MiB once it has imported pydantic, the tool
# interface and calculate, which leaves the tool over 220 MiB.
DEFAULT_MEMORY_BYTES = 256 * 2**20
# What the parent reads from a child per request, answer and stderr together.
MAX_OUTPUT_BYTES = 8 * 2**20
POLL_SECONDS = 0.1
# Children alive at once, busy or idle; idle ones are kept for the next call. A burst
# of callers past it waits for one to come free (the wait counts against the caller's
# time budget) rather than starting an interpreter each: on two cores, 200 calls from
# 16 threads run at about 2500/s on 4 warm children, and at about 130/s when every
# caller without an idle child starts one. It also bounds the memory children may take.
POOL_SIZE = 4
# Like gunicorn's max_requests: a long-lived child is replaced now and then, so what it
# accumulates (a fragmented heap under its address-space limit) stays bounded.
MAX_REQUESTS_PER_CHILD = 1000
TOOK_TOO_LONG = "the calculation took too long"
NEEDS_TOO_MUCH_MEMORY = "the calculation needs more memory than allowed"

_READ_BYTES = 2**16
# Logged with a failure; a traceback ends with what matters.
_STDERR_TAIL_BYTES = 2000
# How long a child that closed its stdout gets to finish writing its stderr.
_EXIT_PATIENCE_SECONDS = 0.5

# `-I` ignores PYTHON* variables, the user's site-packages and the current directory,
# so the child's path is the parent's: the directory holding `buddy` first (an editable
# install and a deploy bundle with buddy/ next to main.py alike), then the parent's own
# entries, where its dependencies are (a deploy may put them there through PYTHONPATH).
_BOOTSTRAP = (
    "import json, sys\n"
    "sys.path[:] = json.loads(sys.argv[1])\n"
    "from buddy.tools.isolation import _child_main\n"
    "_child_main(int(sys.argv[2]))\n"
)
# Nothing from the worker's environment (credentials, emulator hosts) reaches the child.
_CHILD_ENVIRONMENT = {"PATH": os.defpath}


class IsolatedToolCrashed(ToolCrashed):
    """The tool raised an unexpected exception in the child: a bug, reported as a crash.

    Its message names the exception's type ("unexpected KeyError"); the traceback is
    logged, not shown.
    """


def run_isolated(
    tool: Tool,
    context: ToolContext,
    *,
    cpu_seconds: float = DEFAULT_CPU_SECONDS,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> ToolResult:
    """Runs `tool` in a child interpreter; raises what `tool.run` would have raised.

    The child builds the tool's class with no arguments, so configuration held by the
    instance does not travel. Progress reports from the child are not forwarded.
    Safe to call from many threads at once: each call has a child to itself.
    """
    request = _request(tool, context, cpu_seconds)
    deadline = time.monotonic() + min(tool.time_budget_seconds, context.seconds_left())

    def stop_if_cancelled_or_late() -> None:
        if context.cancelled():
            raise ToolCancelled
        if time.monotonic() >= deadline:
            raise ToolOverBudget(
                f"it took longer than its time budget of {tool.time_budget_seconds:g} s"
            )

    pool = _pool
    child = pool.take(memory_bytes, stop_if_cancelled_or_late)
    reusable = False
    try:
        line = child.exchange(request, stop_if_cancelled_or_late)
        if line is None:
            child.stop()  # reaped, so that its exit status says why it ended
            raise _exit_error(child.returncode, child.stderr, tool)
        answer = _read_answer(line, child.stderr, tool)
        reusable = answer.reusable
    finally:
        pool.release(child, reusable=reusable)
    if answer.error is not None:
        raise answer.error
    assert answer.result is not None
    return answer.result


def shutdown_pool() -> None:
    """Stops every idle child; busy ones are stopped when their request ends.

    Runs at exit. The pool stays usable: the next call starts a fresh child.
    """
    _pool.shutdown()


def _request(tool: Tool, context: ToolContext, cpu_seconds: float) -> bytes:
    # json.dumps escapes newlines inside strings, so the request is a single line.
    line = json.dumps(
        {
            "tool": _import_name(tool),
            "objective": context.objective,
            "inputs": context.inputs,
            "allowed_domains": list(context.allowed_domains),
            "cpu_seconds": cpu_seconds,
        }
    )
    return line.encode() + b"\n"


def _import_name(tool: Tool) -> str:
    cls = type(tool)
    if "<locals>" in cls.__qualname__:
        raise TypeError(f"{cls.__qualname__} cannot run isolated: the child cannot import it")
    return f"{cls.__module__}:{cls.__qualname__}"


def _child_path() -> list[str]:
    package_parent = str(Path(buddy.__file__).resolve().parent.parent)
    return [package_parent, *(entry for entry in sys.path if entry and entry != package_parent)]


class _Child:
    """A child interpreter that answers requests one at a time; used by one thread at once."""

    def __init__(self, memory_bytes: int, generation: int) -> None:
        self.memory_bytes = memory_bytes
        self.generation = generation  # the pool's, when the child was started
        self.requests = 0
        self._stderr_tail = b""
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-c",
                _BOOTSTRAP,
                json.dumps(_child_path()),
                str(memory_bytes),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_CHILD_ENVIRONMENT,
            start_new_session=True,  # its own process group, killed as one
            close_fds=True,
        )
        assert self._process.stdin and self._process.stdout and self._process.stderr
        self._stdin: IO[bytes] = self._process.stdin
        # Read with os.read, bypassing the file objects' buffers, so that poll() tells
        # the truth about what is left to read.
        self._stdout = self._process.stdout.fileno()
        self._stderr = self._process.stderr.fileno()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    @property
    def stderr(self) -> str:
        """The end of what the child wrote to stderr during its last request."""
        return self._stderr_tail.decode(errors="replace")

    def alive(self) -> bool:
        return self._process.poll() is None

    def exchange(self, request: bytes, check: Callable[[], None]) -> bytes | None:
        """Sends one request line and returns the answer line, or None if the child exits.

        Every POLL_SECONDS while it waits, `check` may raise to give up (the caller then
        stops the child). Output over MAX_OUTPUT_BYTES is a ToolError.
        """
        self.requests += 1
        self._stderr_tail = b""
        try:
            self._stdin.write(request)
            self._stdin.flush()
        except BrokenPipeError:  # it exited before reading
            self._drain_stderr(_EXIT_PATIENCE_SECONDS)
            return None
        poller = select.poll()
        poller.register(self._stdout, select.POLLIN)
        poller.register(self._stderr, select.POLLIN)
        answer = bytearray()
        received = 0
        next_check = time.monotonic() + POLL_SECONDS
        while True:
            for fd, _ in poller.poll(POLL_SECONDS * 1000):
                chunk = os.read(fd, _READ_BYTES)
                received += len(chunk)
                if received > MAX_OUTPUT_BYTES:
                    raise ToolError(_output_too_large())
                if fd == self._stderr:
                    if chunk:
                        self._keep_stderr(chunk)
                    else:
                        poller.unregister(fd)
                    continue
                if not chunk:
                    self._drain_stderr(_EXIT_PATIENCE_SECONDS)
                    return None
                end = chunk.find(b"\n")
                if end == -1:
                    answer += chunk
                    continue
                if end != len(chunk) - 1:
                    raise ToolError("the isolated tool failed: more than one answer")
                answer += chunk[:end]
                # Whatever the tool wrote to stderr came before the answer; keep it for the log.
                self._drain_stderr(0)
                return bytes(answer)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + POLL_SECONDS
                check()

    def stop(self) -> None:
        """Kills the child's process group unless the child has been reaped, reaps it, and
        closes its pipes. Stopping a stopped child does nothing."""
        if self._process.returncode is None:
            # Killed even if the child has exited: the group may hold what it started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        for stream in (self._process.stdin, self._process.stdout, self._process.stderr):
            with contextlib.suppress(OSError):  # a flush into a closed pipe
                stream.close()  # type: ignore[union-attr]  # all three are pipes

    def _keep_stderr(self, chunk: bytes) -> None:
        self._stderr_tail = (self._stderr_tail + chunk)[-_STDERR_TAIL_BYTES:]

    def _drain_stderr(self, patience: float) -> None:
        """Keeps what stderr holds, waiting up to `patience` seconds for its end."""
        poller = select.poll()
        poller.register(self._stderr, select.POLLIN)
        give_up = time.monotonic() + patience
        drained = 0
        while drained <= MAX_OUTPUT_BYTES and poller.poll(
            max(0.0, give_up - time.monotonic()) * 1000
        ):
            chunk = os.read(self._stderr, _READ_BYTES)
            if not chunk:
                return
            drained += len(chunk)
            self._keep_stderr(chunk)


class _Pool:
    """The children, at most POOL_SIZE alive; the idle ones are kept by memory limit."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._idle: dict[int, list[_Child]] = {}  # by memory limit, last used last
        self._alive = 0
        # Bumped by shutdown(); children started before it are not taken back.
        self._generation = 0

    def take(self, memory_bytes: int, check: Callable[[], None]) -> _Child:
        """An idle child with this memory limit, else a new one; with POOL_SIZE alive,
        waits for one, calling `check` every POLL_SECONDS (it raises to give up)."""
        while True:
            retired: list[_Child] = []
            with self._changed:
                child = self._pop_idle(memory_bytes, retired)
                reserved = child is None and self._reserve(retired)
                generation = self._generation
                if child is None and not reserved:
                    self._changed.wait(POLL_SECONDS)
            for old in retired:
                old.stop()
            if child is not None:
                return child
            if reserved:
                return self._start(memory_bytes, generation)
            check()

    def release(self, child: _Child, *, reusable: bool) -> None:
        """Takes the child back after a request; stops it unless it may serve another."""
        with self._changed:
            idle = self._idle.setdefault(child.memory_bytes, [])
            keep = (
                reusable
                and child.generation == self._generation
                and child.requests < MAX_REQUESTS_PER_CHILD
            )
            if keep:
                idle.append(child)
            else:
                self._alive -= 1
            self._changed.notify()
        if not keep:
            child.stop()

    def shutdown(self) -> None:
        with self._changed:
            idle = [child for children in self._idle.values() for child in children]
            self._idle.clear()
            self._alive -= len(idle)
            self._generation += 1
            self._changed.notify_all()
        for child in idle:
            child.stop()

    def _pop_idle(self, memory_bytes: int, retired: list[_Child]) -> _Child | None:
        idle = self._idle.get(memory_bytes, [])
        while idle:
            child = idle.pop()  # the most recently used: its memory is likeliest warm
            if child.alive():
                return child
            retired.append(child)  # it died idle (killed from outside)
            self._alive -= 1
        return None

    def _reserve(self, retired: list[_Child]) -> bool:
        """Counts in a child about to be started, if there is room for one."""
        if self._alive >= POOL_SIZE:
            # An idle child with another memory limit makes room.
            for children in self._idle.values():
                if children:
                    retired.append(children.pop(0))
                    self._alive -= 1
                    break
        if self._alive >= POOL_SIZE:
            return False
        self._alive += 1
        return True

    def _start(self, memory_bytes: int, generation: int) -> _Child:
        try:
            return _Child(memory_bytes, generation)
        except BaseException:
            with self._changed:
                self._alive -= 1
                self._changed.notify()
            raise


_pool = _Pool()


def _forget_the_parents_pool() -> None:
    # A forked copy of the worker must not write to the children of the process it was
    # forked from (two writers on one pipe would mix their requests): it starts its own.
    global _pool
    _pool = _Pool()


os.register_at_fork(after_in_child=_forget_the_parents_pool)
atexit.register(shutdown_pool)


@dataclass(frozen=True)
class _Answer:
    result: ToolResult | None = None
    error: Exception | None = None
    reusable: bool = True  # the child answered cleanly and may serve another request


def _output_too_large() -> str:
    return f"the isolated tool failed: it wrote more than {MAX_OUTPUT_BYTES // 2**20} MiB"


def _exit_error(returncode: int | None, stderr: str, tool: Tool) -> ToolError:
    """Why a child ended without answering."""
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return ToolError(TOOK_TOO_LONG)
    # Out of memory before or after the tool ran: importing it, or writing the answer.
    if "MemoryError" in stderr:
        return ToolError(NEEDS_TOO_MUCH_MEMORY)
    log.warning("isolated tool failed", extra={"tool": tool.name, "stderr": stderr})
    return ToolError(f"the isolated tool failed: exit status {returncode}")


def _read_answer(line: bytes, stderr: str, tool: Tool) -> _Answer:
    try:
        answer = json.loads(line)
        if "result" in answer:
            return _Answer(result=ToolResult(**answer["result"]))
        message, transient, crash = answer["error"], answer["transient"], answer.get("crash")
        retire = bool(answer.get("retire"))
    except (ValueError, TypeError, KeyError) as e:
        log.warning("isolated tool answered badly", extra={"tool": tool.name, "stderr": stderr})
        raise ToolError(f"the isolated tool failed: unreadable answer ({e})") from e
    if crash:
        log.warning("isolated tool crashed", extra={"tool": tool.name, "stderr": stderr})
        return _Answer(error=IsolatedToolCrashed(message), reusable=False)
    return _Answer(error=ToolError(message, transient=transient), reusable=not retire)


# The child's side.


def _child_main(memory_bytes: int) -> None:
    """Limits its memory, then answers requests, one a line, until its stdin ends (the
    parent stopped it, or died: an idle child does not outlive the worker)."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU would dump core
    # The answers own stdout; whatever the tool prints goes to stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    tool_classes: dict[str, Callable[[], Tool]] = {}
    for line in sys.stdin.buffer:
        answers.write(_serve(line, tool_classes) + b"\n")
        answers.flush()


def _serve(line: bytes, tool_classes: dict[str, Callable[[], Tool]]) -> bytes:
    try:
        request = json.loads(line)
        _limit_cpu(request["cpu_seconds"])
        encoded = json.dumps(_answer(request, tool_classes)).encode()
    except MemoryError:  # writing the answer
        encoded = json.dumps(_out_of_memory()).encode()
    except Exception as e:  # a result that JSON cannot carry
        traceback.print_exc()
        encoded = json.dumps(_crash(e)).encode()
    # What the tool printed reaches stderr before the answer reaches stdout.
    sys.stdout.flush()
    sys.stderr.flush()
    return encoded


def _limit_cpu(cpu_seconds: float) -> None:
    # The soft limit counts all the CPU this process has used, its start and earlier
    # requests included; the request gets its cpu_seconds on top. Past it comes SIGXCPU,
    # which ends the child. The hard limit stays as it is (normally unlimited): a process
    # cannot raise it again, and the next request needs a higher soft limit. The parent's
    # time budget stops a child that somehow survives SIGXCPU.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + cpu_seconds)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _answer(request: dict[str, Any], tool_classes: dict[str, Callable[[], Tool]]) -> dict[str, Any]:
    try:
        tool_class = tool_classes.get(request["tool"])
        if tool_class is None:
            tool_class = tool_classes[request["tool"]] = _import_tool(request["tool"])
        tool = tool_class()  # a new instance for each request: nothing carries over
        context = ToolContext(
            objective=request["objective"],
            inputs=request["inputs"],
            allowed_domains=tuple(request["allowed_domains"]),
        )
        return {"result": dataclasses.asdict(tool.run(context))}
    except ToolError as e:
        return {"error": str(e), "transient": e.transient}
    except MemoryError:
        return _out_of_memory()
    except Exception as e:
        traceback.print_exc()
        return _crash(e)


def _import_tool(name: str) -> Callable[[], Tool]:
    module_name, _, qualname = name.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target  # type: ignore[no-any-return]


def _out_of_memory() -> dict[str, Any]:
    # Python survives a failed allocation, but a fresh child is cheap next to finding out
    # what else did not get allocated.
    return {"error": NEEDS_TOO_MUCH_MEMORY, "transient": False, "retire": True}


def _crash(e: Exception) -> dict[str, Any]:
    return {"error": f"unexpected {type(e).__name__}", "transient": False, "crash": True}
