"""Prometheus metrics read from the store at each scrape.

Workers are other processes, on other hosts even: counters kept in this process would
see none of their work. The store sees all of it, so each scrape asks it, and reads the
counts the transitions keep there (``store/stats.py``): a scrape costs the same with a
hundred steps in the history or a million.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from conveyor.orchestrator.queues import STANDARD
from conveyor.orchestrator.status import RunStatus
from conveyor.orchestrator.store import Stats
from conveyor.orchestrator.store.stats import BACKOFF, READY


class StoreCollector(Collector):
    """Runs and steps by status, queue depth (ready or in backoff), and step durations,
    from the store."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def describe(self) -> Iterable[Metric]:
        """The metrics' names, so that registering does not query the store."""
        return _families()

    def collect(self) -> Iterable[Metric]:
        """Every metric with its current samples."""
        runs, steps, depth, durations = _families()
        now = self.stats.snapshot()  # one read: the families agree with each other
        # Zeros too: an alert on a series needs the series to exist.
        for status, count in (dict.fromkeys(map(str, RunStatus), 0) | now.runs_by_status()).items():
            runs.add_metric([status], count)
        for (status, type_, queue), count in sorted(now.steps_by_status().items()):
            steps.add_metric([status, type_, queue], count)
        # Queues a deployment always has are reported (at 0, in both states) even before
        # any step used them: an autoscaler or an alert reads a series that exists.
        always = {(queue, state): 0 for queue in STANDARD for state in (READY, BACKOFF)}
        for (queue, state), count in sorted((always | now.queue_depth()).items()):
            depth.add_metric([queue, state], count)
        for h in now.step_durations():
            buckets = [(_bound(b), n) for b, n in h.buckets] + [("+Inf", h.count)]
            durations.add_metric([h.type, h.queue], buckets, sum_value=h.total)
        return [runs, steps, depth, durations]


Families = tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, HistogramMetricFamily]


def _families() -> Families:
    """The metrics, empty: (runs, steps, queue depth, step durations)."""
    return (
        GaugeMetricFamily("conveyor_runs", "Runs by status.", labels=["status"]),
        GaugeMetricFamily(
            "conveyor_steps", "Steps by status, type and queue.", labels=["status", "type", "queue"]
        ),
        GaugeMetricFamily(
            "conveyor_queue_depth",
            "Steps queued, by queue and state: ready (a worker could take it now) or "
            "backoff (waiting out a retry delay).",
            labels=["queue", "state"],
        ),
        HistogramMetricFamily(
            "conveyor_step_duration_seconds",
            "How long step attempts ran, of every attempt that ended succeeded or failed.",
            labels=["type", "queue"],
        ),
    )


def _bound(value: float) -> str:
    return str(float(value))


def registry_for(stats: Stats) -> CollectorRegistry:
    """A registry of its own per app: two apps in one process must not collide."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StoreCollector(stats))
    return registry
