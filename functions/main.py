"""Cloud Functions entry points. Thin on purpose: imports stay lazy for cold start."""

from typing import Any

import flask
import functions_framework

from buddy.config import refuse_emulators_in_production

refuse_emulators_in_production()


@functions_framework.http
def api(request: flask.Request) -> flask.Response:
    from buddy.entrypoints.http import handle

    return handle(request)


@functions_framework.cloud_event
def dead_letter(event: Any) -> None:
    from buddy.entrypoints.worker import handle_dead_letter

    handle_dead_letter(event)


@functions_framework.http
def sweeper(request: flask.Request) -> flask.Response:
    from buddy.entrypoints.sweeper import handle

    return handle(request)


@functions_framework.http
def scheduler(request: flask.Request) -> flask.Response:
    from buddy.entrypoints.scheduler import handle

    return handle(request)


@functions_framework.errorhandler(404)
def route_not_found(_error: Exception) -> flask.Response:
    """Paths the framework's own router can't match (an id with a newline) still get JSON."""
    from buddy.entrypoints.http import not_found

    return not_found()


@functions_framework.cloud_event
def worker(event: Any) -> None:
    from buddy.entrypoints.worker import handle

    handle(event)
