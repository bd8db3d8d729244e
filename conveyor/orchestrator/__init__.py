"""The core of Conveyor: spec, plan, runtime, store and the contracts plugins implement.

This package imports no other Conveyor package, and neither Flask, Celery nor any SDK.
"""
