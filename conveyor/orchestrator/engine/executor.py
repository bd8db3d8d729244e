"""Executes one claimed attempt of one step: render, validate, run, record.

This is the worker's top: the only place that catches every exception, so one broken
step type can fail its step but never the worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import traceback
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import ValidationError

from conveyor.orchestrator import values
from conveyor.orchestrator.contracts import ArtifactStore, StepRef, StepType
from conveyor.orchestrator.engine.attempt import Attempt, Finished, Outcome, Recorded
from conveyor.orchestrator.engine.context import Context, LazyOutputs, StoreLogger
from conveyor.orchestrator.engine.monitor import Monitor
from conveyor.orchestrator.engine.runtime import Runtime
from conveyor.orchestrator.engine.variables import Masker, base_context
from conveyor.orchestrator.engine.workspace import StepWorkspace, Workspaces
from conveyor.orchestrator.errors import (
    ConveyorError,
    StepCancelled,
    StepFailed,
    StepTimeout,
    StoreUnavailable,
    TemplateError,
    TemplateStopped,
)
from conveyor.orchestrator.pipeline.spec import format_path
from conveyor.orchestrator.pipeline.templates import TemplateEngine, has_template
from conveyor.orchestrator.plugins import Sandboxes
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.status import RunStatus

if TYPE_CHECKING:
    from conveyor.orchestrator.contracts import Store

#: Errors longer than this are cut; a traceback goes to the step log in full.
MAX_ERROR = 4000


T = TypeVar("T")


class Watch(Protocol):
    """Told of each attempt one ``execute`` runs: a monitor's view (Flower's tasks).

    ``started`` before an attempt runs; ``recorded`` once attempts' results are
    committed. Neither may raise: what watches must never change what runs.
    """

    def started(self, attempt: Attempt) -> None:
        """``attempt`` is about to run here."""

    def recorded(self, done: Sequence[Finished]) -> None:
        """These attempts ended and their results are stored."""


class Executor:
    """Runs claimed attempts and records how they ended.

    It takes a step from the runtime (``Runtime.claim``), runs it with everything the
    claimed ``Attempt`` carries, and hands the result back (``Runtime.record``); the
    ``Monitor`` keeps the leases, logs and deadlines of what runs meanwhile.
    """

    def __init__(
        self,
        runtime: Runtime,
        step_types: Mapping[str, StepType],
        sandboxes: Sandboxes,
        settings: Settings,
        *,
        store: Store,
        templates: TemplateEngine,
        artifacts: Callable[[], ArtifactStore],
        owner: str | None = None,
        queues: Collection[str] | None = None,
        workspaces: Workspaces | None = None,
    ) -> None:
        self.runtime, self.step_types, self.sandboxes = runtime, step_types, sandboxes
        #: Brings a run's workspace to this host before a step opens it (its source
        #: archive, or what steps on other hosts left), and publishes what a step changed.
        self.workspaces = workspaces or Workspaces()
        self.settings, self.store, self.templates = settings, store, templates
        #: The artifact store steps see, made on first use and shared by every step.
        self.artifacts = artifacts
        #: The queues this executor serves (None: all); it continues only with those.
        self.queues = frozenset(queues) if queues is not None else None
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.monitor = Monitor(store, self.owner, settings)

    def execute(self, ref: StepRef, watch: Watch | None = None) -> bool:
        """Claim ``ref`` and run it; a duplicate or stale delivery does nothing.

        When it succeeds and makes another step ready, that step is claimed with the
        result and run here next (see ``Runtime.record``). Brief steps claimed
        together run one after the other and are recorded together. True when the run
        is over once this is done. ``watch`` hears of every attempt run.
        """
        attempt = self.runtime.claim(ref, self.owner)
        over = False
        while attempt is not None:
            attempt, over = self._attempt(attempt, watch)
        return over

    def _attempt(self, first: Attempt, watch: Watch | None = None) -> tuple[Attempt | None, bool]:
        """Run an attempt (and the brief ones claimed with it, in order); record them.

        The attempt to run next, if one was claimed with the results, and whether the
        run is over.
        """
        done: list[Finished] = []
        interrupt: BaseException | None = None
        run_id = first.ref.run_id
        try:
            for attempt in (first.alone(), *first.batch):
                if watch is not None:
                    watch.started(attempt)
                finished, interrupt = self._run_one(attempt)
                if finished.fenced is not None:
                    break  # its lease may be another's: record nothing, run nothing more
                done.append(finished)
                if interrupt is not None:
                    break  # the others stay claimed: their leases run out, they run again
            recorded = self._record_all(done) if done else Recorded()
            if watch is not None:
                watch.recorded(done)
            if recorded.run_over:
                self.run_over(run_id)
            return recorded.next, recorded.run_over
        finally:
            if self.monitor.released(run_id):
                self._cleanup(run_id)
            if interrupt is not None:
                raise interrupt

    def _run_one(self, attempt: Attempt) -> tuple[Finished, BaseException | None]:
        """Run one claimed attempt: how it ended, and what stops the worker, if anything."""
        ref = attempt.ref
        if attempt.secrets_error is not None:  # fail the step rather than leave it running
            return Finished(ref, outcome=Outcome(attempt.secrets_error)), None
        masker = Masker(attempt.secrets)
        logger = StoreLogger(self.store, ref.run_id, ref.step_key, ref.attempt, masker)
        workspace = self.workspaces.for_attempt(
            ref.run_id, attempt.plan.workspace_source, lambda text: logger.line(text, "system")
        )
        ctx = self._context(attempt, logger, workspace)
        self.monitor.track(attempt.step.id, ref, ctx, attempt.leased_at)
        try:
            outputs = self._run(attempt, ctx)
            if ctx.cancelled:  # it returned after it was told to stop: that result is void
                raise StepCancelled("the step returned after it was cancelled")
            return self._conclude(attempt, ctx, masker, outputs=outputs, workspace=workspace), None
        except BaseException as exc:  # the worker's top: every failure becomes the step's
            finished = self._conclude(attempt, ctx, masker, error=exc, workspace=workspace)
            return finished, (None if isinstance(exc, Exception) else exc)

    def _record_all(self, done: list[Finished]) -> Recorded:
        """Record attempts of one run, with the step to run next if one is claimed."""
        run_id = done[0].ref.run_id
        timed_out = any(f.outcome is not None and f.outcome.kind == "timeout" for f in done)
        # When it was the run's deadline, the run fails for that (and its other steps
        # here stop) rather than for this step; otherwise this does nothing.
        if timed_out and self.runtime.expire(run_id):
            self.monitor.cancel_run(run_id)
        # Only after successes does this worker go on with what they made ready: a
        # retry or a step after a failure goes out as a message like any other.
        owner = self.owner if all(f.outcome is None for f in done) else None
        return _record(lambda: self.runtime.record(done, continue_as=owner, queues=self.queues))

    def _context(
        self, attempt: Attempt, logger: StoreLogger, workspace: StepWorkspace | None
    ) -> Context:
        deadline, timeout_message = attempt.deadline()
        run, ref = attempt.run, attempt.ref
        return Context(
            run_id=run.id,
            step_key=ref.step_key,
            attempt=ref.attempt,
            pipeline=run.pipeline,
            params=run.params,
            steps={},
            env={},
            secrets=attempt.secrets,
            matrix=attempt.plan_step.matrix,
            log=logger,
            sandboxes=self.sandboxes,
            deadline=deadline,
            timeout_message=timeout_message,
            artifacts=self.artifacts,
            settings=self.settings,
            previous_run=attempt.reads.previous_success,
            seed=workspace.open if workspace is not None else None,
        )

    def _run(self, attempt: Attempt, ctx: Context) -> Mapping[str, Any]:
        plan_step = attempt.plan_step
        step_type = self.step_types.get(plan_step.type)
        if step_type is None:  # the run was planned where a plugin is that is missing here
            raise StepFailed(f"step type {plan_step.type!r} is not installed here")
        # The contract: every step sees earlier outputs; read only when something looks.
        ctx.steps = LazyOutputs(attempt.reads.outputs)
        # One budget for all of the step's templates, stopped by its timeout or a cancel
        # too; what they derive from a secret is masked like the secret.
        scope = self.templates.scope(
            secrets=ctx.secrets.values(), deadline=ctx.deadline, stop=lambda: ctx.cancelled
        )
        with scope as taint:
            try:
                raw = self._render_config(attempt, step_type, ctx)
            except TemplateStopped:
                if ctx.past_deadline():
                    raise StepTimeout(ctx.timeout_message) from None
                raise StepCancelled("cancelled while its templates rendered") from None
            finally:
                ctx.log.mask.add(taint.derived)
        config = _validate(step_type, raw)
        if ctx.cancelled:
            raise StepCancelled("cancelled before it started")
        return step_type.run(ctx, config)

    def _render_config(self, attempt: Attempt, step_type: StepType, ctx: Context) -> dict[str, Any]:
        """The step's config with its templates rendered (and ``ctx.env`` set)."""
        plan, plan_step = attempt.plan, attempt.plan_step
        context: dict[str, Any] = {}
        if _any_template(plan_step.config) or _any_template(plan.env):
            context = base_context(attempt.run, plan_step, ctx.steps, ctx.secrets)
            env = self._render(plan.env, context, "env")
            context.update(env=env, Env=env)
            ctx.env = env
        else:
            ctx.env = dict(plan.env)
        values: dict[str, str] = {}
        raw = {
            field: self._render(
                value, context, f"config.{field}", field in step_type.shell_fields, values
            )
            for field, value in plan_step.config.items()
        }
        ctx.env = {**ctx.env, **values}
        return raw

    def _render(
        self,
        value: Any,
        context: Mapping[str, Any],
        where: str,
        shell: bool = False,
        values: dict[str, str] | None = None,
    ) -> Any:
        if not _any_template(value):
            return value
        try:
            return self.templates.render_value(value, context, shell=shell, values=values)
        except TemplateStopped:
            raise
        except TemplateError as exc:
            raise StepFailed(f"{where}: {exc.message}") from None

    def _conclude(
        self,
        attempt: Attempt,
        ctx: Context,
        masker: Masker,
        *,
        outputs: Mapping[str, Any] | None = None,
        error: BaseException | None = None,
        workspace: StepWorkspace | None = None,
    ) -> Finished:
        """Close the step's sandboxes and say how it ended, with its last log lines.

        A step that succeeded publishes what it changed in the workspace first (while
        its lease is still watched): a step whose changes cannot be published failed. One
        that did not succeed publishes nothing (``StepWorkspace.finish``).
        """
        try:
            ctx.close()
        except Exception as exc:  # cleanup trouble is reported, never hides the result
            ctx.log.line(f"sandbox cleanup failed: {exc}", "system")
        clean: dict[str, Any] = {}
        if error is None:
            try:
                clean = masker.value(_checked_outputs(outputs, self.settings.max_output_bytes))
                if workspace is not None and not self.monitor.fenced(attempt.ref):
                    workspace.finish(succeeded=True)
            except StepFailed as exc:
                error = exc
        if workspace is not None:
            if error is not None and not self.monitor.fenced(attempt.ref):
                workspace.finish(succeeded=False)
            workspace.release()
        fenced = self.monitor.untrack(attempt.ref)
        if fenced is not None:
            return self._fenced(attempt, ctx, fenced)
        outcome = None
        if error is not None:
            outcome = _outcome(attempt, ctx, error, masker)
            ctx.log.line(_ending(outcome), "system")
        logs = ctx.log.take()  # written in the same transaction as the result
        return Finished(
            attempt.ref, outputs=clean if outcome is None else None, outcome=outcome, logs=logs
        )

    def _fenced(self, attempt: Attempt, ctx: Context, why: str) -> Finished:
        """An attempt stopped for a lease it could not keep: its log only, if the store
        takes it (lines are the attempt's own, they overwrite nothing)."""
        ctx.log.line(
            f"step stopped: {why}; its lease may be another worker's by now, so this "
            "attempt records no result (the step is taken back and run again)",
            "system",
        )
        with contextlib.suppress(Exception):
            ctx.log.flush()
        return Finished(attempt.ref, fenced=why)

    # -- runs that end -----------------------------------------------------------------

    def run_over(self, run_id: str) -> None:
        """Remove the run's workspaces, now or once its last step running here is done."""
        if self.workspaces.handoff is not None:
            succeeded = self.store.get_run(run_id).status == RunStatus.SUCCEEDED
            self.workspaces.run_over(run_id, succeeded)
        if self.monitor.run_over(run_id):
            self._cleanup(run_id)

    def _cleanup(self, run_id: str) -> None:
        """Remove what the run left on this host: its workspace and this host's record
        of it (a retry here starts from the run's handed-over workspace)."""
        self.sandboxes.cleanup_run(run_id)
        self.workspaces.removed_here(run_id)

    def signal_cancel(self, run_id: str) -> None:
        """Tell every step of ``run_id`` running here to stop."""
        self.monitor.cancel_run(run_id)

    def stop(self) -> None:
        """Stop the monitor thread."""
        self.monitor.stop()


def _outcome(attempt: Attempt, ctx: Context, error: BaseException, masker: Masker) -> Outcome:
    """How an attempt that raised ``error`` ended: timeout, cancelled or failed."""
    if ctx.timed_out or isinstance(error, StepTimeout):
        return Outcome(_cut(masker(_timeout_reason(ctx, error))), None, "timeout")
    if isinstance(error, StepCancelled) or (ctx.cancelled and not isinstance(error, StepFailed)):
        return Outcome(attempt.reads.stop_reason(), None, "cancelled")
    if isinstance(error, StepFailed):
        return Outcome(_cut(masker(error.message)), error.exit_code)
    if isinstance(error, ConveyorError):
        return Outcome(_cut(masker(error.message)))
    for line in traceback.format_exception(error):
        for part in line.rstrip().splitlines():
            ctx.log.line(part, "system")
    return Outcome(_cut(masker(f"{type(error).__name__}: {error}")))


def _record(write: Callable[[], T], patience: float = 120.0) -> T:
    """Write a step's result, waiting out a store that is away for a while.

    The step's work is done; losing its result would make it run again. So a store
    that is unavailable (a Postgres restart) is retried with backoff for ``patience``
    seconds before the error goes up to the dispatcher, which delivers the step again.
    """
    delay, waited = 0.2, 0.0
    while True:
        try:
            return write()
        except StoreUnavailable:
            if waited >= patience:
                raise
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)


def _any_template(value: Any) -> bool:
    if isinstance(value, str):
        return has_template(value)
    if isinstance(value, dict):
        return any(_any_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_any_template(v) for v in value)
    return False


def _validate(step_type: StepType, raw: dict[str, Any]) -> Any:
    try:
        return step_type.Config.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{format_path(('config', *e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise StepFailed("; ".join(problems)) from None


def _checked_outputs(outputs: Mapping[str, Any] | None, limit: int) -> dict[str, Any]:
    if outputs is None:
        return {}
    if not isinstance(outputs, Mapping):
        raise StepFailed(f"the step returned {type(outputs).__name__}, not a mapping of outputs")
    # Strict JSON: a value that is not (a set, an object, NaN) is the step type's bug,
    # reported as such rather than stored as its repr.
    try:
        text = json.dumps(dict(outputs), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StepFailed(f"outputs are not JSON: {_culprit(outputs)}{exc}") from None
    size = len(text.encode())
    if size > limit:
        raise StepFailed(f"outputs are {size} bytes of JSON; the limit is {limit} bytes")
    result: dict[str, Any] = json.loads(text)
    if (found := values.problem(result)) is not None:  # a NUL, too deep: the store refuses it
        path, why = found
        raise StepFailed(f"outputs cannot be stored: {values.where('', path)}: {why}")
    return result


def _culprit(outputs: Mapping[str, Any]) -> str:
    """``output 'name': `` for the first output that is not JSON, or nothing."""
    for key, value in outputs.items():
        try:
            json.dumps({key: value}, allow_nan=False)
        except (TypeError, ValueError):
            return f"output {key!r}: "
    return ""


def _ending(outcome: Outcome) -> str:
    """The step log's last line for an attempt that did not succeed."""
    if outcome.kind != "cancelled":
        return f"step failed: {outcome.error}"
    return "step cancelled" if outcome.error == "cancelled" else f"step cancelled: {outcome.error}"


def _timeout_reason(ctx: Context, error: BaseException) -> str:
    """The step's own limit when it was reached; else what the sandbox said (its timeout)."""
    if ctx.timed_out or ctx.past_deadline() or not isinstance(error, StepTimeout):
        return ctx.timeout_message
    return error.message


def _cut(text: str, limit: int = MAX_ERROR) -> str:
    """An error short enough for a status line; the log has the rest."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
