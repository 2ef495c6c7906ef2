"""The local stack: emulators, the API and the stage worker on the ports of SPEC §2.

    python -m buddy.devstack up            # everything, until Ctrl-C
    python -m buddy.devstack configure     # firebase.local.json and the dashboard's config
    python -m buddy.devstack emulator-env  # shell exports for offline emulator binaries

Used by scripts/run.sh and by the test suite, which starts the API and the
worker the same way inside `firebase emulators:exec`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from buddy.config import LOCAL_HOST, LocalPorts

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"
SDK = Path("/usr/lib/google-cloud-sdk/platform")
FIRESTORE_JAR = SDK / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar"
FIRESTORE_MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
PUBSUB_LAUNCHER = SDK / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
EMULATORS = "auth,firestore,pubsub,hosting"
# firebase.json with the emulators on this stack's ports: what firebase-tools runs with.
LOCAL_FIREBASE_CONFIG = ROOT / "firebase.local.json"
DASHBOARD_CONFIG = ROOT / "web" / "public" / "buddy-config.json"

# Debian's Chromium, headless and quiet: this machine's network is closed (see README).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# How often the local stack sweeps, standing in for Cloud Scheduler.
SWEEP_EVERY_SECONDS = float(os.environ.get("BUDDY_SWEEP_EVERY_SECONDS", "30"))


def emulator_binary_env() -> dict[str, str]:
    """Point firebase-tools at the Cloud SDK's emulators when this machine has them.

    Without them, firebase-tools downloads its own (needs the internet).
    """
    env: dict[str, str] = {}
    if FIRESTORE_JAR.is_file():
        # firebase-tools runs `java -jar`; the SDK jar has no Main-Class, so wrap it.
        wrapper = CACHE / "firestore-emulator-wrapper.jar"
        if not wrapper.is_file():
            CACHE.mkdir(exist_ok=True)
            manifest = (
                "Manifest-Version: 1.0\n"
                f"Main-Class: {FIRESTORE_MAIN}\n"
                f"Class-Path: {FIRESTORE_JAR.as_uri()}\n\n"
            )
            with zipfile.ZipFile(wrapper, "w") as jar:
                jar.writestr("META-INF/MANIFEST.MF", manifest)
        env["FIRESTORE_EMULATOR_BINARY_PATH"] = str(wrapper)
    if PUBSUB_LAUNCHER.is_file():
        env["PUBSUB_EMULATOR_BINARY_PATH"] = str(PUBSUB_LAUNCHER)
    return env


def configure(ports: LocalPorts | None = None) -> None:
    """Writes what firebase-tools and the dashboard read, from the one source of ports:
    firebase.local.json (firebase.json plus the emulators) and web/public/buddy-config.json."""
    ports = ports or LocalPorts.from_env()
    config = json.loads((ROOT / "firebase.json").read_text())
    config["emulators"] = {
        **{
            name: {"host": LOCAL_HOST, "port": getattr(ports, name)}
            for name in ("auth", "firestore", "pubsub", "hosting")
        },
        "ui": {"enabled": False},  # it would be downloaded, and this machine is offline
        "singleProjectMode": True,
    }
    LOCAL_FIREBASE_CONFIG.write_text(json.dumps(config, indent=2) + "\n")
    dashboard = {
        "apiUrl": ports.url("api"),
        "useEmulators": True,
        "emulators": {
            "auth": ports.url("auth"),
            "firestore": {"host": LOCAL_HOST, "port": ports.firestore},
        },
    }
    DASHBOARD_CONFIG.write_text(json.dumps(dashboard, indent=2) + "\n")


def wait_for_port(port: int, timeout: float = 90.0, host: str = LOCAL_HOST) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def wait_for_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


@dataclass
class Function:
    """A functions-framework process serving one target of functions/main.py."""

    target: str
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCAL_HOST}:{self.port}"

    @property
    def command(self) -> list[str]:
        source = str(ROOT / "functions" / "main.py")
        return [
            sys.executable,
            "-m",
            "functions_framework",
            "--source",
            source,
            "--target",
            self.target,
            "--host",
            LOCAL_HOST,
            "--port",
            str(self.port),
        ]

    def start(self, env: Mapping[str, str] | None = None, log_path: Path | None = None) -> None:
        output = open(log_path, "ab") if log_path else None  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            self.command,
            env={**os.environ, **(env or {})},
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def poke(url: str, what: str) -> None:
    """One call of a function Cloud Scheduler calls in production (a sweep, a tick); a
    failed call is reported and the next one tries again."""
    request = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
    except OSError as e:
        print(f"{what} failed: {e}", file=sys.stderr, flush=True)


class Ticker(threading.Thread):
    """Calls a function every `period` seconds, standing in for Cloud Scheduler."""

    def __init__(self, url: str, what: str, period: float) -> None:
        super().__init__(name=f"ticker-{what}", daemon=True)
        self.url, self.what, self.period = url, what, period
        self.stopped = threading.Event()
        self.holding = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            if not self.holding.is_set():
                poke(self.url, self.what)

    def stop(self) -> None:
        self.stopped.set()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """No calls for a while (one already under way finishes)."""
        self.holding.set()
        try:
            yield
        finally:
            self.holding.clear()


def set_up_pubsub(worker_url: str, dead_letter_url: str) -> None:
    from buddy.adapters.pubsub import ensure_execution_topology
    from buddy.config import Settings

    settings = Settings.from_env()
    ensure_execution_topology(
        settings.project_id,
        settings.executions_topic,
        settings.dead_letter_topic,
        worker_url,
        dead_letter_url,
    )


def up() -> int:
    from buddy.config import Settings

    settings = Settings.from_env()
    project = settings.project_id
    ports = LocalPorts.from_env()
    configure(ports)
    emulators = subprocess.Popen(
        [
            "firebase",
            "emulators:start",
            "--config",
            LOCAL_FIREBASE_CONFIG.name,
            "--only",
            EMULATORS,
            "--project",
            project,
        ],
        cwd=ROOT,
        env={**os.environ, **emulator_binary_env()},
        start_new_session=True,
    )
    functions = [
        Function("api", ports.api),
        Function("worker", ports.worker),
        Function("sweeper", ports.sweeper),
        Function("dead_letter", ports.dead_letter),
        Function("scheduler", ports.scheduler),
    ]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        shown = {"Firestore": "firestore", "Pub/Sub": "pubsub", "Auth": "auth"}
        shown["Dashboard (Hosting)"] = "hosting"
        for name in shown.values():
            wait_for_port(getattr(ports, name), timeout=120)
        local = {"GCLOUD_PROJECT": project, **ports.emulator_env()}
        os.environ.update(local)
        for function in functions:
            function.start(local)
        set_up_pubsub(functions[1].url, functions[3].url)
        wait_for_http(functions[0].url + "/healthz")
        print("\nBuddy Missions is up (Ctrl-C stops everything):", flush=True)
        for label, name in shown.items():
            print(f"  {label:<20} {ports.url(name)}")
        print(f"  {'HTTP API':<20} {functions[0].url}")
        print(f"  {'Stage worker':<20} {functions[1].url}")
        print(f"  {'Dead letters':<20} {functions[3].url}")
        tick = settings.scheduler_tick_seconds
        print(f"  {'Sweeper':<20} {functions[2].url} (every {SWEEP_EVERY_SECONDS:g}s)")
        print(f"  {'Scheduler':<20} {functions[4].url} (every {tick:g}s)", flush=True)
        tickers = [
            Ticker(functions[2].url, "sweep", SWEEP_EVERY_SECONDS),
            Ticker(functions[4].url, "tick", tick),
        ]
        for ticker in tickers:
            ticker.start()
        while not stopping and emulators.poll() is None:
            time.sleep(0.5)
        for ticker in tickers:
            ticker.stop()
        return 0 if stopping else 1
    finally:
        print("\nStopping…", flush=True)
        for function in functions:
            function.stop()
        if emulators.poll() is None:
            os.killpg(emulators.pid, signal.SIGINT)
            try:
                emulators.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(emulators.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m buddy.devstack")
    parser.add_argument("command", choices=["up", "configure", "emulator-env"])
    args = parser.parse_args(argv)
    if args.command == "configure":
        configure()
        return 0
    if args.command == "emulator-env":
        # What the scripts hand to firebase-tools: its config, the emulators, the binaries.
        exports = {
            "BUDDY_FIREBASE_CONFIG": LOCAL_FIREBASE_CONFIG.name,
            "BUDDY_EMULATORS": EMULATORS,
            **emulator_binary_env(),
        }
        for name, value in exports.items():
            print(f"export {name}={shlex.quote(value)}")
        return 0
    return up()


if __name__ == "__main__":
    sys.exit(main())
