"""The deployable build, checked as closely as this offline machine allows.

Cloud Build installs each function's folder from its own requirements.txt and runs it with
functions-framework; these tests do the same in a fresh virtualenv against the emulators.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from google.cloud import firestore

from buddy.adapters.firestore_store import FirestoreMissionStore
from buddy.devstack import ROOT, wait_for_http
from buddy.domain import lifecycle
from buddy.domain.progress import utc_now

from .conftest import ARTIFACTS, MissionWatcher, User, _free_port

BUILD = ROOT / "build" / "functions"


def deploy(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "deploy.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def test_dry_run_prints_every_cloud_command() -> None:
    """--dry-run lists the gcloud and firebase commands for the project and region, runs none."""
    out = deploy("--project", "acme-prod", "--region", "europe-west1", "--dry-run")
    commands = [line[2:] for line in out.splitlines() if line.startswith("$ ")]
    deploys = [c for c in commands if c.startswith("gcloud functions deploy")]
    assert [c.split()[3] for c in deploys] == [
        "buddy-api",
        "buddy-worker",
        "buddy-dead-letters",
        "buddy-sweeper",
        "buddy-schedules",
    ]
    for command in deploys:
        for flag in (
            "--gen2",
            "--project=acme-prod",
            "--region=europe-west1",
            "--runtime=python311",
            "--service-account=",
            "--min-instances=",
            "--max-instances=",
            "--memory=",
            "--timeout=",
        ):
            assert flag in command, (flag, command)
    worker = deploys[1]
    assert "--entry-point=worker" in worker
    assert "--trigger-topic=mission-executions --retry" in worker
    assert "--trigger-http --allow-unauthenticated" in deploys[0]
    assert "--trigger-http --no-allow-unauthenticated" in deploys[3]
    assert "--trigger-http --no-allow-unauthenticated" in deploys[4]
    assert "--entry-point=scheduler" in deploys[4]
    assert "gcloud pubsub topics create mission-executions --project=acme-prod" in commands
    assert "gcloud pubsub topics create mission-executions-dead --project=acme-prod" in commands
    assert any(
        c.startswith(
            "scripts/set-dead-letter-policy.sh acme-prod europe-west1 "
            "buddy-worker mission-executions-dead"
        )
        for c in commands
    )
    jobs = [c for c in commands if c.startswith("gcloud scheduler jobs create http")]
    assert [c.split()[5] for c in jobs] == ["buddy-sweeper", "buddy-schedules"]
    assert all("'--schedule=* * * * *'" in c for c in jobs)  # every minute, one job each
    assert commands[-1] == (
        "firebase deploy --only firestore:rules,firestore:indexes,hosting "
        "--project acme-prod --non-interactive"
    )
    assert not any("EMULATOR" in c for c in commands)
    assert not any("REVOKED" in c or "firebaseauth" in c for c in commands)


def test_pubsub_triggers_push_as_an_account_that_may_only_invoke_them() -> None:
    """The worker and the dead-letter function are pushed to by a dedicated account, never the
    default compute account, and that account is given the invoker role on them alone."""
    out = deploy("--project", "acme-prod", "--region", "europe-west1", "--dry-run")
    commands = [line[2:] for line in out.splitlines() if line.startswith("$ ")]
    trigger = "buddy-trigger@acme-prod.iam.gserviceaccount.com"
    deploys = {c.split()[3]: c for c in commands if c.startswith("gcloud functions deploy")}
    for name in ("buddy-worker", "buddy-dead-letters"):
        assert f"--trigger-service-account={trigger}" in deploys[name]
    for name in ("buddy-api", "buddy-sweeper"):
        assert "--trigger-service-account" not in deploys[name]
    invoked = [c.split()[3] for c in commands if trigger in c and "add-invoker" in c]
    assert invoked == ["buddy-worker", "buddy-dead-letters"]
    assert not any(trigger in c and "projects add-iam-policy-binding" in c for c in commands)
    limits = {name: c.split("--max-instances=")[1].split()[0] for name, c in deploys.items()}
    assert all(int(n) >= 1 for n in limits.values()) and limits["buddy-sweeper"] == "1"


def test_one_scheduler_job_fires_schedules_as_an_account_that_may_only_invoke_it() -> None:
    """The schedules' job calls with its own identity, which may invoke buddy-schedules and
    nothing else; the function runs as its own account, allowed to publish executions."""
    out = deploy("--project", "acme-prod", "--region", "europe-west1", "--dry-run")
    commands = [line[2:] for line in out.splitlines() if line.startswith("$ ")]
    tick = "buddy-schedules-tick@acme-prod.iam.gserviceaccount.com"
    job = next(c for c in commands if c.startswith("gcloud scheduler jobs create http buddy-sch"))
    assert f"--oidc-service-account-email={tick}" in job
    assert "cloudfunctions.net/buddy-schedules " in job + " "
    invoked = [c.split()[3] for c in commands if tick in c and "add-invoker" in c]
    assert invoked == ["buddy-schedules"]
    assert not any(tick in c and "add-iam-policy-binding" in c for c in commands)
    runs_as = "buddy-schedules@acme-prod.iam.gserviceaccount.com"
    publishers = [c for c in commands if "roles/pubsub.publisher" in c and runs_as in c]
    assert (
        len(publishers) == 1
        and "topics add-iam-policy-binding mission-executions " in (publishers[0])
    )


def test_check_revoked_turns_on_the_setting_and_lets_the_api_read_users() -> None:
    """--check-revoked sets BUDDY_CHECK_REVOKED=1 on the functions and gives the API's account
    the role that looks users up; nothing else gains it."""
    out = deploy("--project", "acme-prod", "--dry-run", "--check-revoked")
    commands = [line[2:] for line in out.splitlines() if line.startswith("$ ")]
    api = next(c for c in commands if c.startswith("gcloud functions deploy buddy-api"))
    assert "BUDDY_CHECK_REVOKED=1" in api
    roles = [c for c in commands if "roles/firebaseauth.viewer" in c]
    assert roles == [
        "gcloud projects add-iam-policy-binding acme-prod "
        "--member=serviceAccount:buddy-api@acme-prod.iam.gserviceaccount.com "
        "--role=roles/firebaseauth.viewer --condition=None"
    ]


@pytest.fixture(scope="module")
def bundle_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding only what a bundle's requirements.txt names."""
    deploy("bundle")
    requirements = {path.read_text() for path in BUILD.glob("*/requirements.txt")}
    assert len(requirements) == 1, "every function installs the same pinned set"
    home = tmp_path_factory.mktemp("bundle-venv")
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(BUILD / "buddy-api" / "requirements.txt"),
        ],
        check=True,
        timeout=900,
    )
    return python


@pytest.fixture
def serve(bundle_python: Path) -> Iterator:
    processes: list[subprocess.Popen[bytes]] = []

    def start(function: str, target: str) -> str:
        port = _free_port()
        folder = BUILD / function
        env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
        log = open(ARTIFACTS / f"bundle-{function}.log", "wb")  # noqa: SIM115 - with the process
        processes.append(
            subprocess.Popen(
                [
                    str(bundle_python),
                    "-m",
                    "functions_framework",
                    "--source",
                    "main.py",
                    "--target",
                    target,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                cwd=folder,
                env=env,
                stdout=log,
                stderr=log,
            )
        )
        url = f"http://127.0.0.1:{port}"
        wait_for_http(
            url + "/healthz" if target == "api" else url + "/", timeout=60
        ) if target == "api" else _wait_port(port)
        return url

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def _wait_port(port: int) -> None:
    from buddy.devstack import wait_for_port

    wait_for_port(port, timeout=60)


def test_api_bundle_serves_health_from_its_own_install(serve) -> None:  # type: ignore[no-untyped-def]
    """The API's bundle, installed from its requirements.txt alone, answers /healthz."""
    url = serve("buddy-api", "api")
    response = requests.get(url + "/healthz", timeout=10)
    assert response.json() == {"status": "ok"}


def test_worker_bundle_runs_a_mission_from_a_pubsub_push(
    serve,
    alice: User,
    db: firestore.Client,
    watch,  # type: ignore[no-untyped-def]
) -> None:
    """The worker's bundle turns a Pub/Sub-shaped push into a completed mission."""
    url = serve("buddy-worker", "worker")
    mission_id = alice.create("calculate 3*14")["mission_id"]
    alice.call("POST", f"/missions/{mission_id}/approve")
    # Queued as execute would, without the message (which the stack's worker would take).
    FirestoreMissionStore(db, utc_now).apply(
        mission_id, lambda mission: lifecycle.queue(mission, utc_now(), max_active=100)
    )
    watcher: MissionWatcher = watch(mission_id)
    data = base64.b64encode(json.dumps({"mission_id": mission_id}).encode()).decode()
    push = {
        "message": {"data": data, "messageId": "bundle-1", "publishTime": "2026-01-01T00:00:00Z"},
        "subscription": "projects/demo-buddy/subscriptions/bundle-test",
    }
    assert requests.post(url, json=push, timeout=60).status_code == 200
    final = watcher.wait_terminal()
    assert final["status"] == "completed"
    assert final["execution_record"]["result_summary"] == "3*14 = 42"


def test_firestore_config_declares_indexes_and_the_event_ttl() -> None:
    """Every composite index the queries need, and the TTL policy on events, are declared."""
    config = json.loads((ROOT / "firestore.indexes.json").read_text())
    declared = {
        (i["collectionGroup"], tuple(f["fieldPath"] for f in i["fields"]))
        for i in config["indexes"]
    }
    assert declared >= {
        ("missions", ("owner_uid", "created_at")),
        ("missions", ("owner_uid", "status", "created_at")),
        ("missions", ("status", "lease_expires_at")),
        ("missions", ("status", "queued_at")),
        ("events", ("owner_uid", "seq")),
        ("recipes", ("owner_uid", "updated_at")),
    }
    # Counter maps grow a field per day: nothing queries them, so nothing indexes them.
    for group in ("tool_stats", "recipe_counts"):
        exempt = {"collectionGroup": group, "fieldPath": "counters", "indexes": []}
        assert exempt in config["fieldOverrides"]
    assert {
        "collectionGroup": "events",
        "fieldPath": "expire_at",
        "ttl": True,
        "indexes": [],
    } in config["fieldOverrides"]
    firebase = json.loads((ROOT / "firebase.json").read_text())
    assert firebase["firestore"] == {
        "rules": "firestore.rules",
        "indexes": "firestore.indexes.json",
    }


def test_bundles_carry_only_what_the_functions_import() -> None:
    """A function's folder holds its entry module and the package without the local stack,
    the client or the command line, and its requirements hold no CLI libraries."""
    deploy("bundle")
    for folder in BUILD.iterdir():
        package = {path.name for path in (folder / "buddy").iterdir()}
        assert {"bootstrap.py", "config.py", "errors.py", "domain", "service"} <= package
        assert not package & {"devstack.py", "client.py", "cli.py"}, folder.name
        pins = (folder / "requirements.txt").read_text().lower()
        assert "functions-framework==" in pins and "google-cloud-firestore==" in pins
        assert "typer" not in pins and "rich==" not in pins
