"""Cold start: process start → first response served, lazy functions/main.py vs eager imports.

Each run starts a fresh functions-framework process on a free port and polls it until it
answers: `GET /healthz` for the API; for the worker, a Pub/Sub push carrying a poison message,
which the worker acknowledges (200) without touching Firestore, so no emulator is needed while
the request path still imports the worker's code. The baseline is bench/eager_main.py, the same
targets with every SDK imported at module top.

    python -m bench.coldstart [RUNS]
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAZY = ROOT / "functions" / "main.py"
EAGER = ROOT / "bench" / "eager_main.py"
HOST = "127.0.0.1"
POLL_SECONDS = 0.005
CONNECT_TIMEOUT_SECONDS = 0.5
GIVE_UP_SECONDS = 60.0
# A bind race (another process took the free port first) ends the process early: start again.
START_ATTEMPTS = 3

POISON_PUSH = json.dumps(
    {
        "message": {
            "data": base64.b64encode(b"not json").decode(),
            "messageId": "cold-1",
            "publishTime": "2026-01-01T00:00:00Z",
        },
        "subscription": "projects/demo-buddy/subscriptions/cold",
    }
).encode()


class ServerExited(RuntimeError):
    """The process ended before it answered."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _answered(port: int, target: str, deadline: float) -> bool:
    """One probe: True on a 200. Connecting is quick to fail; an accepted request may take
    until the deadline (the first request to the lazy API imports the request path)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(max(deadline - time.perf_counter(), 0.01))
        if target == "api":
            conn.request("GET", "/healthz")
        else:
            headers = {"Content-Type": "application/json"}
            conn.request("POST", "/", body=POISON_PUSH, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # The group may outlive its leader (gunicorn's worker): make sure nothing is left.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def start_once(source: Path, target: str) -> float:
    """Milliseconds from Popen to the first 200 of a fresh process."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--source",
        str(source),
        "--target",
        target,
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    env = {**os.environ, "GCLOUD_PROJECT": "demo-buddy"}
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = started + GIVE_UP_SECONDS
        while True:
            if _answered(port, target, deadline):
                return (time.perf_counter() - started) * 1000
            if process.poll() is not None:
                raise ServerExited(f"{source.name}:{target} exited with {process.returncode}")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{source.name}:{target} did not answer in {GIVE_UP_SECONDS}s")
            time.sleep(POLL_SECONDS)
    finally:
        _stop(process)


def _start(source: Path, target: str) -> float:
    for attempt in range(START_ATTEMPTS):
        try:
            return start_once(source, target)
        except ServerExited:
            if attempt == START_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def measure(runs: int) -> dict:
    """Cold-start times per target, lazy (functions/main.py) vs eager (bench/eager_main.py)."""
    samples: dict[str, dict[str, list[float]]] = {
        target: {"lazy_ms": [], "eager_ms": []} for target in ("api", "worker")
    }
    # Interleaved, so that a drift in the machine's load touches both sides alike.
    for _ in range(runs):
        for target, source, kind in (
            ("api", LAZY, "lazy_ms"),
            ("api", EAGER, "eager_ms"),
            ("worker", LAZY, "lazy_ms"),
            ("worker", EAGER, "eager_ms"),
        ):
            samples[target][kind].append(round(_start(source, target), 1))
    results: dict[str, dict] = {}
    for target, times in samples.items():
        lazy = round(statistics.median(times["lazy_ms"]), 1)
        eager = round(statistics.median(times["eager_ms"]), 1)
        results[target] = {
            **times,
            "lazy_p50_ms": lazy,
            "eager_p50_ms": eager,
            "ratio_p50": round(lazy / eager, 2) if eager else None,
        }
    return results


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 5), indent=1))
