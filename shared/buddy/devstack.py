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
import dataclasses
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from buddy.config import LOCAL_HOST, LOCAL_USER_UID, LocalPorts

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
# Where the local stack keeps the emulators' data between runs (gitignored).
DATA = ROOT / ".emulator-data"
# A function process that exits is started again within this many seconds.
RESTART_SECONDS = 2.0
# How long a function may take to finish what it is doing when the stack stops.
STOP_SECONDS = 3.0
# How long firebase-tools may take to save the data and stop once asked.
EXPORT_SECONDS = 60
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


@dataclass(frozen=True)
class Place:
    """Where a stack keeps what firebase-tools runs with. The default is the checkout itself;
    a second stack beside it (the restart tests) gets a folder of its own, with a copy of the
    dashboard, so that it changes nothing the first one serves."""

    firebase_config: Path = LOCAL_FIREBASE_CONFIG
    public: Path = DASHBOARD_CONFIG.parent

    @classmethod
    def beside(cls, folder: Path) -> Place:
        return cls(folder / "firebase.json", folder / "public")


def configure(ports: LocalPorts | None = None, place: Place = Place()) -> None:
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
    if place != Place():
        shutil.copytree(DASHBOARD_CONFIG.parent, place.public, dirs_exist_ok=True)
        config["firestore"] = {k: str(ROOT / v) for k, v in config["firestore"].items()}
        config["hosting"]["public"] = str(place.public)
    place.firebase_config.write_text(json.dumps(config, indent=2) + "\n")
    dashboard = {
        "apiUrl": ports.url("api"),
        "useEmulators": True,
        "emulators": {
            "auth": ports.url("auth"),
            "firestore": {"host": LOCAL_HOST, "port": ports.firestore},
        },
        # The one user the CLI and the dashboard share locally until someone signs in.
        "localUser": {"uid": LOCAL_USER_UID},
    }
    (place.public / DASHBOARD_CONFIG.name).write_text(json.dumps(dashboard, indent=2) + "\n")


class StackFailed(Exception):
    """A part of the local stack did not come up; the message says which and why."""


def listening(port: int, host: str = LOCAL_HOST) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(
    port: int,
    timeout: float = 90.0,
    host: str = LOCAL_HOST,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Until something listens on the port; StackFailed at once if `process`, which should
    be the one to listen, exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            why = exit_reason(process.returncode)
            raise StackFailed(f"the process that should listen on {port} exited ({why})")
        if listening(port, host):
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
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCAL_HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

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
        """Starts the process and waits until it listens."""
        self.spawn(env, log_path)
        wait_for_port(self.port, timeout=30, process=self.process)

    def spawn(self, env: Mapping[str, str] | None = None, log_path: Path | None = None) -> None:
        """Starts the process (again, with the last env and log when given none)."""
        self.env = dict(env if env is not None else self.env)
        self.log_path = log_path or self.log_path
        output = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command,
            env={**os.environ, **self.env},
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
        if output:
            output.close()  # the process has its own copy

    def stop(self, grace: float = 10) -> None:
        """SIGTERM, and SIGKILL if it has not exited after `grace` seconds."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
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


def exit_reason(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


class Supervisor(threading.Thread):
    """Starts a function again when its process exits, as Cloud Functions starts a new
    instance: within RESTART_SECONDS, and says so. One that dies again soon after a restart
    waits a little longer each time in a row, never longer than that."""

    def __init__(self, functions: list[Function]) -> None:
        super().__init__(name="supervisor", daemon=True)
        self.functions = functions
        self.stopped = threading.Event()

    def run(self) -> None:
        started = {f.target: time.monotonic() for f in self.functions}
        dead_since: dict[str, float] = {}
        streak = {f.target: 0 for f in self.functions}
        while not self.stopped.wait(0.1):
            for function in self.functions:
                process, now = function.process, time.monotonic()
                if process is None or process.poll() is None:
                    continue
                name = function.target
                if name not in dead_since:
                    # What it started (functions-framework's server processes) goes with it.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    dead_since[name] = now
                    lived = now - started[name]
                    streak[name] = streak[name] + 1 if lived < 10 else 0
                    say(f"{name} (pid {process.pid}) stopped: {exit_reason(process.returncode)}")
                delay = min(RESTART_SECONDS - 0.5, 0.25 * 2 ** streak[name]) if streak[name] else 0
                if now - dead_since[name] < delay:
                    continue
                function.spawn()
                took = time.monotonic() - dead_since.pop(name)
                started[name] = time.monotonic()
                say(f"{name} restarted as pid {function.pid} after {took:.1f}s")

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


def say(line: str) -> None:
    """One line of the stack's own log, timestamped, on stderr."""
    print(f"{time.strftime('%H:%M:%S')} » {line}", file=sys.stderr, flush=True)


def resume_interrupted(booted: datetime) -> None:
    """Missions a stop interrupted (running, or queued in a Pub/Sub emulator that forgot its
    messages) are sent to the worker again now that it is back."""
    from buddy import bootstrap

    try:
        done = bootstrap.app().recovery.restarted(booted)
    except Exception as e:  # the sweeper tries again within SWEEP_EVERY_SECONDS + a lease
        say(f"could not look for missions a stop interrupted: {e}")
        return
    if done["republished"] or done["failed"] or done["cancelled"]:
        say(f"missions interrupted by the last stop: {done}")


def ports_in_use(ports: LocalPorts) -> list[str]:
    """The stack's ports something else already listens on (another scripts/run.sh?)."""
    names = [f.name for f in dataclasses.fields(ports)]
    return [f"{name} ({getattr(ports, name)})" for name in names if listening(getattr(ports, name))]


def start_emulators(project: str, place: Place, data: Path, fresh: bool) -> subprocess.Popen[bytes]:
    """firebase-tools with this stack's config and the data the last clean stop saved
    (unless fresh: that data is moved aside)."""
    if fresh and data.exists():
        previous = data.with_name(data.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        data.rename(previous)
        say(f"starting empty; the data saved last is kept in {previous}")
    saved = (data / "firebase-export-metadata.json").is_file()
    command = ["firebase", "emulators:start", "--config", str(place.firebase_config)]
    command += ["--only", EMULATORS, "--project", project]
    return subprocess.Popen(
        [*command, *(["--import", str(data)] if saved else [])],
        cwd=ROOT,
        env={**os.environ, **emulator_binary_env()},
        start_new_session=True,
    )


def save_data(project: str, place: Place, data: Path) -> None:
    """The running emulators' data into `data` (firebase-tools writes it aside, then swaps it
    in: a failed save leaves the last one)."""
    say(f"saving the emulators' data to {data}")
    command = ["firebase", "emulators:export", str(data), "--force"]
    command += ["--config", str(place.firebase_config), "--project", project]
    began = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=EXPORT_SECONDS
        )
    except subprocess.TimeoutExpired:
        say(f"saving took over {EXPORT_SECONDS}s: not saved, the data saved last stays")
        return
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip().splitlines()[-3:]
        say("saving failed, the data saved last stays: " + " / ".join(said))
        return
    say(f"saved in {time.monotonic() - began:.1f}s")


def spawned_by(pid: int) -> dict[int, str]:
    """Every process under `pid`, each with its start time (so that a pid used again by
    someone else is not taken for ours), read from /proc; none where there is no /proc."""
    children: dict[int, list[tuple[int, str]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)"
            children.setdefault(int(fields[1]), []).append((int(stat.parent.name), fields[19]))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child, started in children.get(todo.pop(), []):
            if child not in found:
                found[child] = started
                todo.append(child)
    return found


def still_running(processes: Mapping[int, str]) -> list[int]:
    """Those of the processes that are still there (not ended, not a zombie)."""
    running = []
    for pid, started in processes.items():
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and fields[19] == started:
                running.append(pid)
    return running


def stop_emulators(emulators: subprocess.Popen[bytes]) -> None:
    """Ctrl-C to firebase-tools, which stops its emulators; then whatever it started and
    left behind is stopped too. firebase-tools starts each emulator in a session of its
    own, and a Ctrl-C before it has set up its handlers ends it at once: those emulators
    would live on, holding the stack's ports."""
    spawned = spawned_by(emulators.pid)
    if emulators.poll() is None:
        os.killpg(emulators.pid, signal.SIGINT)
        deadline = time.monotonic() + EXPORT_SECONDS
        while emulators.poll() is None and time.monotonic() < deadline:
            spawned |= spawned_by(emulators.pid)
            time.sleep(0.1)
        if emulators.poll() is None:
            say(f"the emulators did not stop within {EXPORT_SECONDS}s: killed")
            os.killpg(emulators.pid, signal.SIGKILL)
        emulators.wait()
    for how in (signal.SIGTERM, signal.SIGKILL):
        left = still_running(spawned)
        if not left:
            return
        if how == signal.SIGTERM:
            say(f"stopping what the emulators left running (pids {', '.join(map(str, left))})")
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, how)
        deadline = time.monotonic() + STOP_SECONDS * 3
        while still_running(spawned) and time.monotonic() < deadline:
            time.sleep(0.1)


def up(data: Path = DATA, fresh: bool = False, place: Place = Place()) -> int:
    from buddy.config import Settings

    settings = Settings.from_env()
    project = settings.project_id
    ports = LocalPorts.from_env()
    busy = ports_in_use(ports)
    if busy:
        say(f"in use already: {', '.join(busy)} — is scripts/run.sh running elsewhere? Stop it.")
        return 1
    configure(ports, place)
    functions = [
        Function("api", ports.api),
        Function("worker", ports.worker),
        Function("sweeper", ports.sweeper),
        Function("dead_letter", ports.dead_letter),
        Function("scheduler", ports.scheduler),
    ]
    phase = "starting"  # → running → stopping
    tickers: list[Ticker] = []
    supervisor = Supervisor(functions)

    def stop(*_: object) -> None:
        nonlocal phase
        was, phase = phase, "stopping"
        if was == "starting":
            raise KeyboardInterrupt  # stop waiting for it to come up

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    booted = datetime.now(UTC)
    emulators = start_emulators(project, place, data, fresh)
    try:
        shown = {"Firestore": "firestore", "Pub/Sub": "pubsub", "Auth": "auth"}
        shown["Dashboard (Hosting)"] = "hosting"
        for name in shown.values():
            wait_for_port(getattr(ports, name), timeout=120, process=emulators)
        local = {"GCLOUD_PROJECT": project, **ports.emulator_env()}
        os.environ.update(local)
        for function in functions:
            function.start(local)
        set_up_pubsub(functions[1].url, functions[3].url)
        wait_for_http(functions[0].url + "/healthz")
        supervisor.start()
        phase = "running"
        resume_interrupted(booted)
        print("\nBuddy Missions is up (Ctrl-C stops everything):", flush=True)
        for label, name in shown.items():
            print(f"  {label:<20} {ports.url(name)}")
        print(f"  {'HTTP API':<20} {functions[0].url}")
        print(f"  {'Stage worker':<20} {functions[1].url} (pid {functions[1].pid})")
        print(f"  {'Dead letters':<20} {functions[3].url}")
        tick = settings.scheduler_tick_seconds
        print(f"  {'Sweeper':<20} {functions[2].url} (every {SWEEP_EVERY_SECONDS:g}s)")
        print(f"  {'Scheduler':<20} {functions[4].url} (every {tick:g}s)")
        print(f"  {'Data':<20} {data} (saved on Ctrl-C; --fresh starts empty)", flush=True)
        tickers = [
            Ticker(functions[2].url, "sweep", SWEEP_EVERY_SECONDS),
            Ticker(functions[4].url, "tick", tick),
        ]
        for ticker in tickers:
            ticker.start()
        while phase == "running" and emulators.poll() is None:
            time.sleep(0.5)
        if phase == "running":
            say(f"the emulators stopped ({exit_reason(emulators.returncode or 0)})")
            return 1
        return 0
    except KeyboardInterrupt:
        return 130
    except (StackFailed, TimeoutError, OSError) as e:
        say(f"the stack did not come up: {e}")
        return 1
    finally:
        # Saved only from a stack that came up whole: one stopped while starting may not have
        # imported everything yet, and saving that would lose the rest.
        came_up, phase = supervisor.is_alive(), "stopping"
        say("stopping")
        for ticker in tickers:
            ticker.stop()
        supervisor.stopped.set()
        if supervisor.is_alive():
            supervisor.join(timeout=5)
        # The functions first: nothing writes to the emulators while they save their data.
        # A worker gets a moment to finish a quick step; a longer one resumes after a restart.
        for function in functions:
            function.stop(grace=STOP_SECONDS)
        if came_up and emulators.poll() is None:
            save_data(project, place, data)
        stop_emulators(emulators)
        say("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m buddy.devstack")
    parser.add_argument("command", choices=["up", "configure", "emulator-env"])
    parser.add_argument("--fresh", action="store_true", help="start with no data (up)")
    parser.add_argument("--data", type=Path, default=DATA, help="where data is kept (up)")
    parser.add_argument(
        "--beside",
        type=Path,
        metavar="DIR",
        help="a second stack on other ports (BUDDY_*_PORT): its config in DIR (up)",
    )
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
    place = Place.beside(args.beside) if args.beside else Place()
    return up(args.data.resolve(), args.fresh, place)


if __name__ == "__main__":
    sys.exit(main())
