"""The distributed shape's workers: Celery app, queues, dispatcher and thin tasks.

This package is the only place Celery is imported (import-linter enforces it). Tasks
carry ids only and call ``conveyor.orchestrator``; Postgres stays the truth and the
broker is a wake-up call.
"""
