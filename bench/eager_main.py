"""Benchmark baseline only: functions/main.py with every SDK imported eagerly at module top.

It exists so bench/coldstart.py can compare the lazy entry points of functions/main.py with
what a naive entry module would cost at cold start. Nothing deploys or serves it.
"""

from typing import Any

import firebase_admin.auth  # noqa: F401 - every import here is for its start-up cost
import flask
import functions_framework
import httpx  # noqa: F401
import pydantic  # noqa: F401
import selectolax.lexbor  # noqa: F401
import tenacity  # noqa: F401
from google.cloud import firestore, pubsub_v1  # noqa: F401

import buddy.bootstrap
import buddy.entrypoints.http
import buddy.entrypoints.worker
from buddy.config import refuse_emulators_in_production

refuse_emulators_in_production()


@functions_framework.http
def api(request: flask.Request) -> flask.Response:
    return buddy.entrypoints.http.handle(request)


@functions_framework.cloud_event
def worker(event: Any) -> None:
    buddy.entrypoints.worker.handle(event)
