"""Adapters to the outside world, behind the orchestrator's Protocols.

Each provider module is loaded through its entry point (``conveyor.sandboxes``,
``conveyor.providers``), so importing this package pulls in no SDK.
"""
