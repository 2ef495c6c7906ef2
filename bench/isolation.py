"""What isolating calculate costs: in-process, in a fresh child, in a warm child, and under load.

Cold is a call on an empty pool (it starts an interpreter and imports the tool); warm is a
call served by a child kept from an earlier one; the burst is CALLS calls from THREADS
threads at once, on an empty pool and then on the pool the first burst left.

    python -m bench.isolation [RUNS]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from buddy.tools import ToolContext
from buddy.tools.calculate import CalculateTool
from buddy.tools.isolation import POOL_SIZE, run_isolated, shutdown_pool

CALLS = 200
THREADS = 16


def _context(i: int) -> ToolContext:
    return ToolContext(objective="calculate", inputs={"expression": f"{i}*(3+4)/7+sqrt(16)"})


def _figures(seconds: list[float]) -> dict[str, float]:
    milliseconds = sorted(s * 1000 for s in seconds)
    return {
        "median_ms": round(statistics.median(milliseconds), 3),
        "p95_ms": round(statistics.quantiles(milliseconds, n=20)[18], 3),
    }


def _timed(runs: int, call: Callable[[int], object], before: Callable[[], None]) -> list[float]:
    seconds = []
    for i in range(runs):
        before()
        started = time.perf_counter()
        call(i)
        seconds.append(time.perf_counter() - started)
    return seconds


def _burst() -> dict[str, float]:
    tool = CalculateTool()
    latencies: list[float] = []

    def call(i: int) -> None:
        started = time.perf_counter()
        run_isolated(tool, _context(i))
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as threads:
        list(threads.map(call, range(CALLS)))
    elapsed = time.perf_counter() - started
    return {"calls_per_s": round(CALLS / elapsed, 1), **_figures(latencies)}


def measure(runs: int) -> dict[str, Any]:
    tool = CalculateTool()
    in_process = _timed(runs, lambda i: tool.run(_context(i)), lambda: None)
    cold = _timed(runs, lambda i: run_isolated(tool, _context(i)), shutdown_pool)
    run_isolated(tool, _context(0))  # a warm child for what follows
    warm = _timed(runs, lambda i: run_isolated(tool, _context(i)), lambda: None)
    shutdown_pool()
    burst_cold = _burst()
    burst_warm = _burst()
    shutdown_pool()
    return {
        "runs": runs,
        "pool_size": POOL_SIZE,
        "in_process": _figures(in_process),
        "isolated_cold": _figures(cold),
        "isolated_warm": _figures(warm),
        f"burst_{CALLS}_calls_{THREADS}_threads_cold_pool": burst_cold,
        f"burst_{CALLS}_calls_{THREADS}_threads_warm_pool": burst_warm,
    }


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 50), indent=1))
