"""The app for Celery's own command line: ``celery -A conveyor.workers.celery_app ...``.

Built from ``CONVEYOR_*`` environment variables when imported, which is what
``celery -A`` does; Flower runs as ``celery -A conveyor.workers.celery_app flower``.
Conveyor's own code never imports this module: it calls ``make_celery(settings)``.
"""

from __future__ import annotations

from conveyor.orchestrator.settings import Settings

from .app import make_celery

app = make_celery(Settings())
