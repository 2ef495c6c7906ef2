"""Deploy Buddy Missions to Google Cloud: Cloud Functions (2nd gen), Pub/Sub, Scheduler, Firebase.

    python scripts/deploy.py --project P --region R [--dry-run]   # everything
    python scripts/deploy.py bundle                                # only build/functions/*

Every cloud change is a gcloud or firebase command, printed before it runs; --dry-run
prints them all and runs none (it still builds the bundles, which touch nothing remote).
Re-running is safe: "already exists" answers are accepted.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from buddy.config import DEAD_LETTER_TOPIC, EXECUTIONS_TOPIC, MAX_DELIVERY_ATTEMPTS

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "functions"
RUNTIME = "python311"
TOPIC, DEAD_TOPIC = EXECUTIONS_TOPIC, DEAD_LETTER_TOPIC


@dataclass(frozen=True)
class Function:
    """One deployed function: its entry point in functions/main.py and how it is triggered."""

    name: str
    entry_point: str
    account: str
    memory: str
    timeout: str
    min_instances: int
    # A ceiling on instances: what one burst (or one abusive user) can cost.
    max_instances: int
    trigger: list[str]

    @property
    def pubsub_triggered(self) -> bool:
        return any(flag.startswith("--trigger-topic=") for flag in self.trigger)


FUNCTIONS = (
    # The API checks ID tokens itself, so it is public; one warm instance hides cold starts.
    Function(
        "buddy-api",
        "api",
        "buddy-api",
        "512Mi",
        "60s",
        1,
        20,
        ["--trigger-http", "--allow-unauthenticated"],
    ),
    # --retry: a raised exception nacks the message, so Pub/Sub delivers it again.
    Function(
        "buddy-worker",
        "worker",
        "buddy-worker",
        "1Gi",
        "540s",
        0,
        20,
        [f"--trigger-topic={TOPIC}", "--retry"],
    ),
    Function(
        "buddy-dead-letters",
        "dead_letter",
        "buddy-worker",
        "256Mi",
        "60s",
        0,
        5,
        [f"--trigger-topic={DEAD_TOPIC}", "--retry"],
    ),
    # Only Cloud Scheduler's account may call the sweeper.
    Function(
        "buddy-sweeper",
        "sweeper",
        "buddy-sweeper",
        "256Mi",
        "300s",
        0,
        1,
        ["--trigger-http", "--no-allow-unauthenticated"],
    ),
    # Fires every schedule that is due; only its own Cloud Scheduler job may call it.
    Function(
        "buddy-schedules",
        "scheduler",
        "buddy-schedules",
        "512Mi",
        "300s",
        0,
        1,
        ["--trigger-http", "--no-allow-unauthenticated"],
    ),
)
# Least privilege, per service account.
ROLES = {
    "buddy-api": ["roles/datastore.user"],  # + publisher on the execution topic only
    "buddy-worker": ["roles/datastore.user"],
    "buddy-sweeper": ["roles/datastore.user"],  # + publisher on the execution topic only
    "buddy-scheduler": [],  # + run.invoker on the sweeper only
    # Creates and queues the missions schedules fire; + publisher on the execution topic only.
    "buddy-schedules": ["roles/datastore.user"],
    "buddy-schedules-tick": [],  # Cloud Scheduler's identity: run.invoker on buddy-schedules
    # The identity Pub/Sub pushes with (Eventarc triggers): run.invoker on the worker and the
    # dead-letter function only, instead of the default compute account's Editor role.
    "buddy-trigger": [],
}
# With --check-revoked the API looks users up in Firebase Auth on every request.
REVOCATION_ROLE = "roles/firebaseauth.viewer"


def bundle() -> list[Path]:
    """build/functions/<name>/: main.py, the buddy package, requirements.txt from the lock."""
    shutil.rmtree(BUILD, ignore_errors=True)
    built = []
    for function in FUNCTIONS:
        target = BUILD / function.name
        target.mkdir(parents=True)
        shutil.copy(ROOT / "functions" / "main.py", target / "main.py")
        shutil.copytree(
            ROOT / "shared" / "buddy",
            target / "buddy",
            # The local stack, the client and the command line are not what functions import.
            ignore=shutil.ignore_patterns("__pycache__", "devstack.py", "client.py", "cli.py"),
        )
        pins = [
            line
            for line in (ROOT / "requirements.lock").read_text().splitlines()
            if line and not line.startswith("#")
        ]
        (target / "requirements.txt").write_text("\n".join(pins) + "\n")
        built.append(target)
    return built


def _project_role(project: str, account: str, role: str) -> list[str]:
    return [
        "gcloud",
        "projects",
        "add-iam-policy-binding",
        project,
        f"--member=serviceAccount:{account}",
        f"--role={role}",
        "--condition=None",
    ]


def _invoker(function: str, project: str, region: str, account: str) -> list[str]:
    return [
        "gcloud",
        "functions",
        "add-invoker-policy-binding",
        function,
        "--gen2",
        f"--project={project}",
        f"--region={region}",
        f"--member=serviceAccount:{account}",
    ]


def _secret_accessor(version: str, account: str) -> list[str]:
    """Lets account read the secret that version (projects/P/secrets/S/versions/V) is of."""
    parts = version.split("/")
    if len(parts) < 4 or parts[0] != "projects" or parts[2] != "secrets":
        raise SystemExit(f"--search-key-secret: not a secret version: {version}")
    return [
        "gcloud",
        "secrets",
        "add-iam-policy-binding",
        parts[3],
        f"--project={parts[1]}",
        f"--member=serviceAccount:{account}",
        "--role=roles/secretmanager.secretAccessor",
    ]


def commands(
    project: str,
    region: str,
    check_revoked: bool = False,
    search_provider: str | None = None,
    search_key_secret: str | None = None,
    search_url: str | None = None,
) -> list[list[str]]:
    """Every remote change, in order."""
    accounts = {name: f"{name}@{project}.iam.gserviceaccount.com" for name in ROLES}
    out: list[list[str]] = []
    for name in ROLES:
        out.append(
            [
                "gcloud",
                "iam",
                "service-accounts",
                "create",
                name,
                f"--project={project}",
                f"--display-name=Buddy Missions {name}",
            ]
        )
        for role in ROLES[name]:
            out.append(_project_role(project, accounts[name], role))
    if check_revoked:
        out.append(_project_role(project, accounts["buddy-api"], REVOCATION_ROLE))
    for topic in (TOPIC, DEAD_TOPIC):
        out.append(["gcloud", "pubsub", "topics", "create", topic, f"--project={project}"])
    for name in ("buddy-api", "buddy-sweeper", "buddy-schedules"):
        out.append(
            [
                "gcloud",
                "pubsub",
                "topics",
                "add-iam-policy-binding",
                TOPIC,
                f"--project={project}",
                f"--member=serviceAccount:{accounts[name]}",
                "--role=roles/pubsub.publisher",
            ]
        )
    # "^;^" makes ";" gcloud's list delimiter, because the origins list holds commas.
    settings = [
        f"BUDDY_PROJECT_ID={project}",
        f"BUDDY_CORS_ORIGINS=https://{project}.web.app,https://{project}.firebaseapp.com",
    ]
    if check_revoked:
        settings.append("BUDDY_CHECK_REVOKED=1")
    if search_provider:
        settings.append(f"BUDDY_SEARCH_PROVIDER={search_provider}")
    if search_url:
        settings.append(f"BUDDY_SEARCH_URL={search_url}")
    if search_key_secret:
        # The worker runs the searches: it alone may read the key, on the first search.
        settings.append(f"BUDDY_SEARCH_API_KEY_SECRET={search_key_secret}")
        out.append(_secret_accessor(search_key_secret, accounts["buddy-worker"]))
    env = "^;^" + ";".join(settings)
    for function in FUNCTIONS:
        trigger_account = (
            [f"--trigger-service-account={accounts['buddy-trigger']}"]
            if function.pubsub_triggered
            else []
        )
        out.append(
            [
                "gcloud",
                "functions",
                "deploy",
                function.name,
                "--gen2",
                f"--project={project}",
                f"--region={region}",
                f"--runtime={RUNTIME}",
                f"--source={(BUILD / function.name).relative_to(ROOT)}",
                f"--entry-point={function.entry_point}",
                f"--memory={function.memory}",
                f"--timeout={function.timeout}",
                f"--min-instances={function.min_instances}",
                f"--max-instances={function.max_instances}",
                f"--service-account={accounts[function.account]}",
                f"--set-env-vars={env}",
                *function.trigger,
                *trigger_account,
            ]
        )
        if function.pubsub_triggered:
            out.append(_invoker(function.name, project, region, accounts["buddy-trigger"]))
    # The worker's trigger subscription gets the backoff and the dead-letter policy.
    out.append(
        [
            "scripts/set-dead-letter-policy.sh",
            project,
            region,
            "buddy-worker",
            DEAD_TOPIC,
            str(MAX_DELIVERY_ATTEMPTS),
        ]
    )
    # Cloud Scheduler, every minute: the sweeper, and one job for all schedules.
    for called, caller in (
        ("buddy-sweeper", "buddy-scheduler"),
        ("buddy-schedules", "buddy-schedules-tick"),
    ):
        out.append(_invoker(called, project, region, accounts[caller]))
        out.append(
            [
                "gcloud",
                "scheduler",
                "jobs",
                "create",
                "http",
                called,
                f"--project={project}",
                f"--location={region}",
                "--schedule=* * * * *",
                f"--uri=https://{region}-{project}.cloudfunctions.net/{called}",
                "--http-method=POST",
                f"--oidc-service-account-email={accounts[caller]}",
            ]
        )
    out.append(
        [
            "firebase",
            "deploy",
            "--only",
            "firestore:rules,firestore:indexes,hosting",
            "--project",
            project,
            "--non-interactive",
        ]
    )
    return out


def dashboard_config(project: str, region: str) -> None:
    """The dashboard talks to the deployed API and to real Firebase services."""
    config = {
        "apiUrl": f"https://{region}-{project}.cloudfunctions.net/buddy-api",
        "useEmulators": False,
    }
    (ROOT / "web" / "public" / "buddy-config.json").write_text(json.dumps(config, indent=2) + "\n")


def run(command: list[str], dry_run: bool) -> None:
    print("$ " + shlex.join(command), flush=True)
    if dry_run:
        return
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode and "already exists" not in (result.stderr + result.stdout).lower():
        sys.stderr.write(result.stderr)
        raise SystemExit(f"failed: {shlex.join(command)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/deploy.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", nargs="?", choices=["all", "bundle"], default="all")
    parser.add_argument("--project")
    parser.add_argument("--region", default="us-central1")
    parser.add_argument("--dry-run", action="store_true", help="print commands, run none")
    parser.add_argument(
        "--check-revoked",
        action="store_true",
        help="refuse revoked ID tokens (one Firebase Auth call per API request)",
    )
    parser.add_argument(
        "--search-provider",
        choices=["duckduckgo", "searxng", "brave", "tavily"],
        help="web search provider (default duckduckgo, which needs no key)",
    )
    parser.add_argument(
        "--search-key-secret",
        metavar="projects/P/secrets/S/versions/V",
        help="Secret Manager version holding the brave/tavily API key (the worker may read it)",
    )
    parser.add_argument("--search-url", help="the provider's base URL (required for searxng)")
    args = parser.parse_args(argv)
    for path in bundle():
        print(f"built {path.relative_to(ROOT)}", flush=True)
    if args.what == "bundle":
        return 0
    if not args.project:
        parser.error("--project is required to deploy")
    if not args.dry_run:
        dashboard_config(args.project, args.region)
    for command in commands(
        args.project,
        args.region,
        args.check_revoked,
        args.search_provider,
        args.search_key_secret,
        args.search_url,
    ):
        run(command, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
