"""Conveyor: a distributed CI/CD pipeline orchestrator."""

__version__ = "0.1.0"
