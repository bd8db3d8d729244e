"""Health, readiness, metrics and the installed step types."""

from __future__ import annotations

import logging

from flask import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from conveyor import __version__
from conveyor.orchestrator.errors import SchemaOutdated
from conveyor.orchestrator.store import Stats

from .metrics import registry_for
from .models import Check, Health, Readiness, StepTypeList, StepTypeModel
from .routing import Call, Reply
from .services import BrokerCheck

log = logging.getLogger("conveyor.api")


def healthz(call: Call[None, None]) -> Health:
    """The process is up (it checks nothing else: that is /readyz)."""
    return Health(version=__version__)


def readyz(call: Call[None, None]) -> Reply:
    """200 when the database (at the current schema) and the broker answer, else 503.

    Anyone may ask, so the answer says which dependency is down and never where it
    lives: the error itself (a host, a port, the driver's words) goes to the log.
    """
    checks = {
        "database": _check("database", call.services.store.ensure_current),
        "broker": _broker(call.services.broker_check),
    }
    down = [f"{name}: {c.detail}" for name, c in checks.items() if not c.ok]
    if not down:
        return Reply(Readiness(status="ready", checks=checks), 200)
    body = Readiness(status="unavailable", checks=checks, error="not_ready", detail="; ".join(down))
    return Reply(body, 503)


def _check(name: str, probe: BrokerCheck) -> Check:
    try:
        probe()
    except SchemaOutdated:
        return Check(ok=False, detail="not at the current schema revision")
    except Exception as exc:  # any failure of a probe means "not ready", whatever it is
        log.warning("readiness: the %s is unavailable: %s: %s", name, type(exc).__name__, exc)
        return Check(ok=False, detail="unavailable")
    return Check(ok=True, detail="ok")


def _broker(probe: BrokerCheck | None) -> Check:
    if probe is None:
        return Check(ok=True, detail="no broker configured")
    return _check("broker", probe)


def metrics(call: Call[None, None]) -> Response:
    """Prometheus metrics, computed from the store now (see ``metrics.py``)."""
    registry = registry_for(Stats(call.services.store))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def step_types(call: Call[None, None]) -> StepTypeList:
    """Every installed step type with the JSON Schema of its config."""
    types = call.services.compiler.step_types
    items = [
        StepTypeModel(
            name=name,
            queue=step_type.queue,
            description=_summary(type(step_type).__doc__),
            config_schema=step_type.Config.model_json_schema(),
        )
        for name, step_type in types.items()
    ]
    return StepTypeList(items=items)


def _summary(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""
