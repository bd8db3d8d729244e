"""Where runs' workspaces are: each run's newest manifest, and the live worker hosts.

A run's workspace travels between hosts through the artifact store as manifests and
content-addressed blobs (``orchestrator.workspaces``). What the database keeps is small:
on the run's row, the SHA-256 of its newest manifest and the host that published it,
moved only by compare-and-set so two steps finishing at once never lose each other's
changes; and ``worker_hosts``, the queues each worker host consumes, renewed while it
lives, so a run's next step can be sent where its workspace already is.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts.store import WorkspaceHead
from conveyor.orchestrator.status import RunStatus
from conveyor.orchestrator.store.connector import Connector
from conveyor.orchestrator.store.schema import runs, worker_hosts

#: Run statuses after which nothing runs: their workspaces can go.
_ENDED = [s.value for s in RunStatus if s.terminal]


class WorkspaceRecords(Connector):
    """The store's part about workspaces and worker hosts (``WorkspaceHeads``,
    ``WorkerHosts``)."""

    def workspace_head(self, run_id: str) -> WorkspaceHead | None:
        """The run's newest workspace, or None before any step published one."""
        row = self.first(
            sa.select(runs.c.workspace_head, runs.c.workspace_host).where(runs.c.id == run_id)
        )
        if row is None or row["workspace_head"] is None:
            return None
        return WorkspaceHead(row["workspace_head"], row["workspace_host"] or "")

    def move_workspace_head(self, run_id: str, expected: str | None, new: str, host: str) -> bool:
        """Make ``new`` the head if the head is still ``expected``; False if it moved.

        One statement, no run lock: it never waits for a transaction that holds the
        run's row for long, and a step's result is recorded after it.
        """
        current = (
            runs.c.workspace_head.is_(None)
            if expected is None
            else runs.c.workspace_head == expected
        )
        query = (
            runs.update()
            .where(runs.c.id == run_id, current)
            .values(workspace_head=new, workspace_host=host)
        )
        with self.writing() as conn:
            return bool(conn.execute(query).rowcount)

    def forget_workspace(self, run_id: str) -> WorkspaceHead | None:
        """Clear the run's head (its blobs are being removed); what it was, if anything."""
        with self.writing() as conn:
            row = (
                conn.execute(
                    sa.select(runs.c.workspace_head, runs.c.workspace_host).where(
                        runs.c.id == run_id
                    )
                )
                .mappings()
                .first()
            )
            if row is None or row["workspace_head"] is None:
                return None
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.workspace_head == row["workspace_head"])
                .values(workspace_head=None, workspace_host=None)
            )
        return WorkspaceHead(row["workspace_head"], row["workspace_host"] or "")

    def succeeded_with_workspace(self, limit: int = 100) -> list[str]:
        """Runs that succeeded and still keep a workspace in the artifact store.

        A failed or cancelled run keeps its own until its artifacts go (retention), so
        that retrying it starts each step again from what its needs left.
        """
        query = (
            sa.select(runs.c.id)
            .where(runs.c.workspace_head.isnot(None), runs.c.status == RunStatus.SUCCEEDED.value)
            .limit(limit)
        )
        return [row["id"] for row in self.rows(query)]

    def runs_ended(self, run_ids: Collection[str]) -> set[str]:
        """Which of ``run_ids`` are over or do not exist (their workspaces can go)."""
        if not run_ids:
            return set()
        wanted = set(run_ids)
        query = sa.select(runs.c.id, runs.c.status).where(runs.c.id.in_(wanted))
        going = {row["id"] for row in self.rows(query) if row["status"] not in _ENDED}
        return wanted - going

    # -- worker hosts ----------------------------------------------------------------

    def announce_host(self, host: str, queues: Collection[str]) -> None:
        """``host`` is alive and consumes ``queues`` (other workers of the host may
        announce other queues: each says only its own)."""
        if not queues:
            return
        rows = [{"host": host, "queue": q, "seen_at": utcnow()} for q in sorted(set(queues))]
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(worker_hosts)
        query = insert.on_conflict_do_update(
            index_elements=[worker_hosts.c.host, worker_hosts.c.queue],
            set_={"seen_at": insert.excluded.seen_at},
        )
        with self.writing() as conn:
            conn.execute(query, rows)

    def withdraw_host(self, host: str, queues: Collection[str] | None = None) -> None:
        """``host`` no longer consumes ``queues`` (None: any)."""
        query = worker_hosts.delete().where(worker_hosts.c.host == host)
        if queues is not None:
            query = query.where(worker_hosts.c.queue.in_(list(queues)))
        with self.writing() as conn:
            conn.execute(query)

    def live_hosts(self, seen_since: datetime) -> dict[str, frozenset[str]]:
        """Queue name -> the hosts that said they consume it since ``seen_since``."""
        query = sa.select(worker_hosts.c.queue, worker_hosts.c.host).where(
            worker_hosts.c.seen_at >= seen_since
        )
        found: dict[str, set[str]] = {}
        for row in self.rows(query):
            found.setdefault(row["queue"], set()).add(row["host"])
        return {queue: frozenset(hosts) for queue, hosts in found.items()}
