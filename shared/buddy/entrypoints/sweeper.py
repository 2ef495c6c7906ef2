"""The sweeper as an HTTP function: Cloud Scheduler (or the local stack) calls it often."""

from __future__ import annotations

import json

import flask

from buddy import bootstrap
from buddy.logs import configure_logging


def handle(request: flask.Request, app: bootstrap.App | None = None) -> flask.Response:
    configure_logging()
    done = (app or bootstrap.app()).recovery.sweep()
    return flask.Response(json.dumps({"swept": done}), status=200, mimetype="application/json")
