"""Scanner providers: each knows its tool's command line and parses its native JSON.

Registered as ``scanner.<name>`` in the ``conveyor.providers`` entry-point group; the
scan steps reach them through ``ctx.provider(...)`` and never import them.
"""
