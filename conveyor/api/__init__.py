"""Conveyor's HTTP API: a Flask app over the orchestrator. It never imports Celery.

``create_app(settings, dispatcher=..., broker_check=...)`` is the entry point; the
``conveyor api`` command builds the Celery dispatcher and passes it in.
"""

from .app import create_app

__all__ = ["create_app"]
