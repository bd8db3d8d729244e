"""Public faces of the core's sub-packages, imported on first use.

Each sub-package (``store``, ``engine``, ``artifacts``) names what the rest of Conveyor
may use of it in its ``__init__``. The names are imported when first asked for, not
with the package: the store and the engine bring SQLAlchemy in (a third of a second),
which commands like ``conveyor validate`` and ``--help`` never need.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy(package: str, modules: Mapping[str, Sequence[str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``modules``' names (module -> its public names)."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
