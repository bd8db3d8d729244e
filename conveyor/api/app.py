"""The Flask app factory: routes from the table, one error handler, services built once."""

from __future__ import annotations

import logging
from collections import defaultdict
from http import HTTPStatus

from flask import Blueprint, Flask, Response, request

from conveyor.orchestrator.contracts import Dispatcher
from conveyor.orchestrator.engine import Core, open_store, wire
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store import Definitions, SqlStore, Tokens

from .errors import error_code, handle_error, json_response
from .models import ErrorBody
from .openapi import PREFIX
from .routes import ROUTES
from .routing import Route, make_view
from .services import BrokerCheck, Services

log = logging.getLogger("conveyor.api")
#: Room for a definition of the largest size allowed, JSON-escaped, and its params.
BODY_FACTOR = 4


def create_app(
    settings: Settings,
    *,
    store: SqlStore | None = None,
    dispatcher: Dispatcher | None = None,
    broker_check: BrokerCheck | None = None,
    core: Core | None = None,
) -> Flask:
    """The API for ``settings``; ``dispatcher`` sends ready steps to the workers.

    Without a dispatcher, queued steps wait for the reconciler to send them; without a
    broker check, /readyz looks at the database only. ``core``: the process's core when
    it was built already (an API that runs steps in its own process), so there is one.
    """
    if core is None:
        if dispatcher is None:
            log.warning("no dispatcher: queued steps wait for the reconciler to send them")
        core = wire(settings, store or open_store(settings), dispatcher=dispatcher, run_steps=False)
    services = build_services(core, broker_check)
    app = Flask("conveyor.api")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_definition_bytes * BODY_FACTOR + 65536
    app.extensions["conveyor"] = services  # for tests and embedding; handlers get it passed
    # A path is matched as sent: Werkzeug would otherwise answer `//` or a missing
    # trailing slash with a redirect (an HTML page no error handler sees).
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    for blueprint in blueprints(ROUTES, services):
        app.register_blueprint(blueprint, url_prefix=PREFIX)
    app.register_error_handler(Exception, handle_error)
    app.after_request(json_errors)
    return app


def json_errors(response: Response) -> Response:
    """Every error and redirect under the API's prefix as JSON, whoever made it.

    Handlers and ``handle_error`` answer JSON already; this catches what Flask answers
    without them (a routing redirect, say), so a client never parses an HTML page.
    """
    status = response.status_code
    # 304 Not Modified is no error and has no body: it keeps its ETag and Cache-Control.
    if status < 300 or status == 304 or response.is_json or not request.path.startswith(PREFIX):
        return response
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:  # a status HTTP does not name
        phrase = "Error"
    detail = phrase
    headers = {k: v for k, v in response.headers.items() if k in ("Location", "Allow")}
    if "Location" in headers:
        detail = f"{phrase}: see {headers['Location']}"
    return json_response(ErrorBody(error=error_code(phrase), detail=detail), status, headers)


def build_services(core: Core, broker_check: BrokerCheck | None) -> Services:
    """What the routes work with: the process's core, definitions and tokens."""
    settings = core.settings
    return Services(
        settings=settings,
        store=core.store,
        compiler=core.compiler,
        runtime=core.runtime,
        definitions=Definitions(core.store),
        tokens=Tokens(core.store),
        broker_check=broker_check,
        poll_seconds=min(max(settings.log_flush_seconds, 0.05), 1.0),
        artifact_store=core.artifact_store,
    )


def blueprints(routes: tuple[Route, ...], services: Services) -> list[Blueprint]:
    """One blueprint per tag (pipelines, runs, tokens, system), views made from the table."""
    by_tag: dict[str, list[Route]] = defaultdict(list)
    for route in routes:
        by_tag[route.tag].append(route)
    out = []
    for tag, tagged in by_tag.items():
        blueprint = Blueprint(tag, __name__)
        for route in tagged:
            view = make_view(route, services)
            blueprint.add_url_rule(route.flask_path, route.endpoint, view, methods=[route.method])
        out.append(blueprint)
    return out
