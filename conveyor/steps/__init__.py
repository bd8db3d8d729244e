"""Built-in step types, one module each, registered under the ``conveyor.steps`` entry points.

A family of step types shares a folder: ``scan/`` (``step.scan_*``) and ``docker/``
(``step.docker_*``). Steps import only ``conveyor.orchestrator``; they reach sandboxes,
artifacts, the network and cloud providers through the ``StepContext`` they are given
(``ctx.sandbox()``, ``ctx.artifacts``, ``ctx.provider("http")``).
"""
