"""The scheduler as an HTTP function: Cloud Scheduler calls it every minute (one job for all
schedules), the local stack every BUDDY_SCHEDULER_TICK_SECONDS. Each call fires what is due."""

from __future__ import annotations

import json

import flask

from buddy import bootstrap
from buddy.logs import configure_logging


def handle(request: flask.Request, app: bootstrap.App | None = None) -> flask.Response:
    configure_logging()
    done = (app or bootstrap.app()).schedules.tick()
    return flask.Response(json.dumps({"ticked": done}), status=200, mimetype="application/json")
