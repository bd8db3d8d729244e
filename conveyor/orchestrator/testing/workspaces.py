"""The in-memory twin of the store's workspace heads and worker hosts."""

from __future__ import annotations

import threading
from collections.abc import Collection
from datetime import datetime

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts.store import WorkspaceHead


class MemoryWorkspaceRecords:
    """``WorkspaceHeads`` and ``WorkerHosts`` in memory, as ``store/workspaces.py``."""

    def __init__(self) -> None:
        self._heads_lock = threading.Lock()
        self._heads: dict[str, WorkspaceHead] = {}
        self._hosts: dict[tuple[str, str], datetime] = {}  # (host, queue) -> seen at

    def workspace_head(self, run_id: str) -> WorkspaceHead | None:
        """The run's newest workspace, or None before any step published one."""
        with self._heads_lock:
            return self._heads.get(run_id)

    def move_workspace_head(self, run_id: str, expected: str | None, new: str, host: str) -> bool:
        """Make ``new`` the head if the head is still ``expected``; False if it moved."""
        with self._heads_lock:
            current = self._heads.get(run_id)
            if (current.digest if current else None) != expected:
                return False
            self._heads[run_id] = WorkspaceHead(new, host)
            return True

    def forget_workspace(self, run_id: str) -> WorkspaceHead | None:
        """Clear the run's head; what it was, if anything."""
        with self._heads_lock:
            return self._heads.pop(run_id, None)

    def announce_host(self, host: str, queues: Collection[str]) -> None:
        """``host`` is alive and consumes ``queues`` (each worker says only its own)."""
        now = utcnow()
        with self._heads_lock:
            for queue in queues:
                self._hosts[(host, queue)] = now

    def withdraw_host(self, host: str, queues: Collection[str] | None = None) -> None:
        """``host`` no longer consumes ``queues`` (None: any)."""
        with self._heads_lock:
            for key in [k for k in self._hosts if k[0] == host]:
                if queues is None or key[1] in queues:
                    del self._hosts[key]

    def live_hosts(self, seen_since: datetime) -> dict[str, frozenset[str]]:
        """Queue name -> the hosts that said they consume it since ``seen_since``."""
        found: dict[str, set[str]] = {}
        with self._heads_lock:
            for (host, queue), seen in self._hosts.items():
                if seen >= seen_since:
                    found.setdefault(queue, set()).add(host)
        return {queue: frozenset(hosts) for queue, hosts in found.items()}
