"""The Flask app factory: routes from the table, one error handler, services built once."""

from __future__ import annotations

import logging
from collections import defaultdict

from flask import Blueprint, Flask

from conveyor.orchestrator.contracts import Dispatcher
from conveyor.orchestrator.engine import Core, open_store, wire
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store import Definitions, SqlStore, Tokens

from .errors import handle_error
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
    for blueprint in blueprints(ROUTES, services):
        app.register_blueprint(blueprint, url_prefix=PREFIX)
    app.register_error_handler(Exception, handle_error)
    return app


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
