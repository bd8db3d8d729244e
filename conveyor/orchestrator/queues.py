"""The built-in queues: where each built-in step type's work waits for a worker.

Each step type has a default queue (``StepType.queue``); a pipeline step may name
another with ``queue:``, so these are not all the queues there can be, only the ones
every deployment has. The names are a contract with what is deployed (worker ``-Q``
options, the Helm chart's worker Deployments, metrics labels): they never change.
"""

from __future__ import annotations

from typing import Final

#: Light steps: ``step.set``, ``step.log``, artifact pushes and pulls.
CONTROL: Final = "control"
#: Steps that run commands and containers: ``step.shell_exec``, ``step.docker_*``.
SANDBOX: Final = "sandbox"
#: The security scans: ``step.scan_sast``, ``step.scan_deps``, ``step.scan_container``.
SCAN: Final = "scan"
#: Deploys to environments and cloud providers.
DEPLOY: Final = "deploy"

#: Every built-in queue, in the order they are declared and listed.
STANDARD: Final = (CONTROL, SANDBOX, SCAN, DEPLOY)
