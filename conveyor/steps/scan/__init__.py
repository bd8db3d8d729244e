"""The scan family: ``step.scan_sast``, ``step.scan_deps`` and ``step.scan_container``.

- ``sast``, ``deps``, ``container``: the three step types, each its target and threshold
- ``config``: the keys every scan step shares
- ``session``: running the scanner in a sandbox and reading back its report
- ``job``: what follows the report: waive, compare with the baseline, gate, store, log

Scanners themselves are providers (``scanner.<name>``), reached through ``ctx.provider``.
"""

from .container import ScanContainer
from .deps import ScanDeps
from .sast import ScanSast

__all__ = ["ScanContainer", "ScanDeps", "ScanSast"]
