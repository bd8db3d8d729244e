"""A claimed attempt of a step, with everything the executor needs to run it.

The runtime hands one out when a worker claims a step (``Runtime.claim``) or goes on
with the next one after a result (``Runtime.record``): the run and step as claimed, the
compiled plan, the run's opened secrets, and a way to read what the run holds (earlier
outputs, the previous successful run, why the run stopped). So running it needs
nothing more from the runtime, and the runtime calls nothing back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.durations import format_duration
from conveyor.orchestrator.errors import ConveyorError
from conveyor.orchestrator.pipeline.plan import ExecutionPlan, PlanStep
from conveyor.orchestrator.store.records import RunRecord, StepRecord

if TYPE_CHECKING:
    from conveyor.orchestrator.contracts import Store


@dataclass(frozen=True)
class Outcome:
    """How an attempt that did not succeed ended, as the executor reports it."""

    error: str
    exit_code: int | None = None
    kind: str = "error"  # error | timeout | cancelled


@dataclass(frozen=True)
class Finished:
    """An attempt that ended, to record: its outputs when it succeeded, else its outcome."""

    ref: StepRef
    outputs: Mapping[str, Any] | None = None
    outcome: Outcome | None = None
    logs: Sequence[tuple[str, str]] = ()
    #: Why the attempt was stopped for a lease it could not keep: then nothing of it is
    #: recorded (the step may be another attempt's by now; the reconciler takes it back).
    fenced: str | None = None


@dataclass(frozen=True)
class RunReads:
    """What an attempt may read of its run while it runs, straight from the store."""

    store: Store
    run: RunRecord

    def outputs(self) -> dict[str, dict[str, Any]]:
        """Outputs of the run's steps that succeeded so far, by step key."""
        return self.store.step_outputs(self.run.id)

    def previous_success(self) -> str | None:
        """The id of the pipeline's last successful run before this one, if any."""
        return self.store.latest_run_id(self.run.pipeline, "succeeded", before=self.run.created_at)

    def stop_reason(self) -> str:
        """Why the run stopped (``cancelled by user``, ``run timed out after 1h``)."""
        with contextlib.suppress(ConveyorError):
            run = self.store.get_run(self.run.id)
            if run.status.terminal and run.error:
                return run.error
        return "cancelled"


@dataclass(frozen=True)
class Attempt:
    """One claimed attempt of a step: run it, then record how it ended.

    ``batch``: brief steps of the same run claimed with it, to run after it, in order.
    ``secrets_error``: why the run's secrets could not be opened here (the attempt then
    fails with it rather than run without them).
    """

    run: RunRecord
    step: StepRecord
    ref: StepRef
    plan: ExecutionPlan
    reads: RunReads
    secrets: Mapping[str, str] = field(default_factory=dict)
    secrets_error: str | None = None
    batch: tuple[Attempt, ...] = ()
    #: When (time.monotonic) it was handed out: its lease was taken no later than this.
    leased_at: float = field(default_factory=time.monotonic, compare=False)

    @property
    def plan_step(self) -> PlanStep:
        """The step as compiled."""
        return self.plan.step(self.ref.step_key)

    def alone(self) -> Attempt:
        """This attempt without the brief steps claimed with it."""
        return replace(self, batch=()) if self.batch else self

    def deadline(self) -> tuple[float | None, str]:
        """When (``time.monotonic``) it must stop, and the reason it gives then.

        The step's own timeout or what is left of the run's, whichever comes first,
        counted from now (the attempt starts when this is asked).
        """
        limits: list[tuple[float, str]] = []
        own = self.plan_step.timeout
        if own:
            limits.append((own, f"timed out after {format_duration(own)}"))
        if self.run.deadline:
            left = (self.run.deadline - utcnow()).total_seconds()
            limits.append((left, f"run timed out after {format_duration(self.plan.timeout)}"))
        if not limits:
            return None, "timed out"
        seconds, message = min(limits, key=lambda limit: limit[0])
        return time.monotonic() + max(0.0, seconds), message


@dataclass(frozen=True)
class Recorded:
    """What recording attempts led to: the attempt to run next here, and the run's end."""

    next: Attempt | None = None
    #: The run is over (it ended with these results, or had ended before them).
    run_over: bool = False
