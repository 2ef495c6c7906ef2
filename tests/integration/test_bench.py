"""The benchmark harness keeps working: its quick mode runs and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from buddy.devstack import ROOT

from .conftest import Stack


def test_quick_benchmark_produces_every_figure(stack: Stack, tmp_path: Path) -> None:
    """`bench.run --quick` writes results.json, a Markdown table and a chart, with a value for
    every scenario (not judging the values: these machines are shared and noisy)."""
    # The benchmark ticks its own schedules, as with scripts/bench.sh, where nothing else does.
    with stack.ticker.held():
        done = subprocess.run(
            [sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    latency = results["latency"]
    for name in (
        "floor_listener_ms",
        "python_listener_ms",
        "dom_ms",
        "dom_snapshot_ms",
        "polling_staleness_ms",
    ):
        assert latency[name]["n"] > 0 and latency[name]["p95"] >= latency[name]["p50"] > 0, name
    assert results["execute"]["first_progress_ms"]["n"] > 0
    steering = results["steering"]
    for name in (
        "pause_between_steps_ms",
        "pause_in_crawl_ms",
        "resume_first_progress_ms",
        "retry_first_progress_ms",
    ):
        assert steering[name]["n"] > 0 and steering[name]["p95"] >= steering[name]["p50"] > 0, name
    assert [s["missions"] for s in results["scale"]] == [1, 10]
    assert all(s["throughput_per_s"] > 0 for s in results["scale"])
    assert [w["substeps"] for w in results["writes"]] == [0, 10, 1000]
    assert all(w["total_writes"] > w["mission_doc_writes"] > 0 for w in results["writes"])
    assert results["cold_start"]["api"]["lazy_p50_ms"] > 0
    assert results["rss_mb"]["api"] > 0
    scheduled = results["schedules"]
    assert scheduled["tick"]["fired"] == scheduled["tick"]["due"] > 0
    assert 0 < scheduled["tick"]["reads"] < scheduled["tick"]["scan_all_reads"]
    assert scheduled["fire_to_queued_ms"]["n"] > 0
    assert scheduled["burst"]["missions"] == scheduled["burst"]["schedules"]
    assert len(results["targets"]) == 11
    markdown = (tmp_path / "results.md").read_text()
    assert "## Steering" in markdown and "## Schedules" in markdown and "## Targets" in markdown
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
