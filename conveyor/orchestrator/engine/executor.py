"""Executes one claimed attempt of one step: render, validate, run, record.

This is the worker's top: the only place that catches every exception, so one broken
step type can fail its step but never the worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Collection, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from conveyor.orchestrator.artifacts.retention import ExplainedArtifacts
from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import ArtifactStore, StepRef, StepType
from conveyor.orchestrator.durations import format_duration
from conveyor.orchestrator.engine.claims import Claim
from conveyor.orchestrator.engine.context import Context, LazyOutputs, StoreLogger
from conveyor.orchestrator.engine.runtime import Finished, Outcome, Runtime
from conveyor.orchestrator.errors import (
    ConveyorError,
    SecretsUnavailable,
    StepCancelled,
    StepFailed,
    StepTimeout,
    StoreUnavailable,
    TemplateError,
)
from conveyor.orchestrator.pipeline.plan import PlanStep
from conveyor.orchestrator.pipeline.spec import format_path
from conveyor.orchestrator.pipeline.templates import has_template
from conveyor.orchestrator.pipeline.variables import Masker, base_context
from conveyor.orchestrator.plugins import Sandboxes, load_artifact_store
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.records import RunRecord, StepRecord

#: Errors longer than this are cut; a traceback goes to the step log in full.
MAX_ERROR = 4000


T = TypeVar("T")


class Executor:
    """Runs claimed steps and keeps their leases, logs and deadlines in order."""

    def __init__(
        self,
        runtime: Runtime,
        step_types: Mapping[str, StepType],
        sandboxes: Sandboxes,
        settings: Settings,
        owner: str | None = None,
        queues: Collection[str] | None = None,
    ) -> None:
        self.runtime, self.step_types, self.sandboxes = runtime, step_types, sandboxes
        #: The queues this executor serves (None: all); it continues only with those.
        self.queues = frozenset(queues) if queues is not None else None
        self.settings = settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self._active: dict[str, tuple[StepRef, Context, str]] = {}
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self._stopping = threading.Event()
        # Runs that ended while some of their steps still ran here: their workspaces go
        # once the last of those steps is done.
        self._over: set[str] = set()
        self._artifact_store: ArtifactStore | None = None
        runtime.on_cancel.append(self.signal_cancel)
        runtime.on_finished.append(lambda run: self.run_over(run.id))

    def artifacts(self) -> ArtifactStore:
        """The configured artifact store, made on first use and shared by every step.

        Its misses say when a run's artifacts expired (see ``ExplainedArtifacts``).
        """
        if self._artifact_store is None:
            store = load_artifact_store(self.settings)
            self._artifact_store = ExplainedArtifacts(store, self.runtime.store)
        return self._artifact_store

    def execute(self, ref: StepRef) -> None:
        """Claim ``ref`` and run it; a duplicate or stale delivery does nothing.

        When it succeeds and makes another step ready, that step is claimed with the
        result and run here next (see ``Runtime.succeed``). Brief steps claimed
        together run one after the other and are recorded together.
        """
        claimed = self.runtime.claim(ref, self.owner)
        while claimed is not None:
            claimed = self._attempt(claimed)

    def _attempt(self, first: Claim) -> Claim | None:
        """Run a claimed step (and the brief steps claimed with it, in order); record them."""
        done: list[Finished] = []
        interrupt: BaseException | None = None
        try:
            for claim in (first._replace(batch=()), *first.batch):
                finished, interrupt = self._run_one(claim.run, claim.step, claim.ref)
                done.append(finished)
                if interrupt is not None:
                    break  # the others stay claimed: their leases run out, they run again
            return self._record_all(done)
        finally:
            self._release(first.ref.run_id)
            if interrupt is not None:
                raise interrupt

    def _run_one(
        self, run: RunRecord, step: StepRecord, ref: StepRef
    ) -> tuple[Finished, BaseException | None]:
        """Run one claimed attempt: how it ended, and what stops the worker, if anything."""
        plan_step = self.runtime.plan(run).step(ref.step_key)
        try:
            secrets = self.runtime.secrets(run.id)
        except SecretsUnavailable as exc:  # fail the step rather than leave it running
            return Finished(ref, outcome=Outcome(exc.message)), None
        masker = Masker(secrets)
        logger = StoreLogger(self.runtime.store, run.id, ref.step_key, ref.attempt, masker)
        ctx = self._context(run, plan_step, ref, logger, secrets)
        self._track(step.id, ref, ctx)
        try:
            outputs = self._run(run, plan_step, ctx)
            if ctx.cancelled:  # it returned after it was told to stop: that result is void
                raise StepCancelled("the step returned after it was cancelled")
            return self._conclude(ref, ctx, masker, outputs=outputs), None
        except BaseException as exc:  # the worker's top: every failure becomes the step's
            finished = self._conclude(ref, ctx, masker, error=exc)
            return finished, (None if isinstance(exc, Exception) else exc)

    def _record_all(self, done: list[Finished]) -> Claim | None:
        """Record attempts of one run; the step to run next when one is claimed with them."""
        if any(f.outcome is not None and f.outcome.kind == "timeout" for f in done):
            # When it was the run's deadline, the run fails for that (and its other
            # steps stop) rather than for this step; otherwise this does nothing.
            self.runtime.expire(done[0].ref.run_id)
        # Only after successes does this worker go on with what they made ready: a
        # retry or a step after a failure goes out as a message like any other.
        owner = self.owner if all(f.outcome is None for f in done) else None
        return _record(lambda: self.runtime.record(done, continue_as=owner, queues=self.queues))

    def _context(
        self,
        run: RunRecord,
        plan_step: PlanStep,
        ref: StepRef,
        logger: StoreLogger,
        secrets: Mapping[str, str],
    ) -> Context:
        deadline, timeout_message = self._deadline(run, plan_step)
        return Context(
            run_id=run.id,
            step_key=ref.step_key,
            attempt=ref.attempt,
            pipeline=run.pipeline,
            params=run.params,
            steps={},
            env={},
            secrets=secrets,
            matrix=plan_step.matrix,
            log=logger,
            sandboxes=self.sandboxes,
            deadline=deadline,
            timeout_message=timeout_message,
            artifacts=self.artifacts,
            settings=self.settings,
            previous_run=lambda: self.runtime.store.latest_run_id(
                run.pipeline, "succeeded", before=run.created_at
            ),
        )

    def _deadline(self, run: RunRecord, plan_step: PlanStep) -> tuple[float | None, str]:
        """The step's deadline (its own timeout or the run's, the sooner) and its reason."""
        limits: list[tuple[float, str]] = []
        if plan_step.timeout:
            limits.append(
                (plan_step.timeout, f"timed out after {format_duration(plan_step.timeout)}")
            )
        if run.deadline:
            total = self.runtime.plan(run).timeout
            left = (run.deadline - utcnow()).total_seconds()
            limits.append((left, f"run timed out after {format_duration(total)}"))
        if not limits:
            return None, "timed out"
        seconds, message = min(limits, key=lambda limit: limit[0])
        return time.monotonic() + max(0.0, seconds), message

    def _run(self, run: RunRecord, plan_step: PlanStep, ctx: Context) -> Mapping[str, Any]:
        step_type = self.step_types.get(plan_step.type)
        if step_type is None:  # the run was planned where a plugin is that is missing here
            raise StepFailed(f"step type {plan_step.type!r} is not installed here")
        plan = self.runtime.plan(run)
        templated = _any_template(plan_step.config) or _any_template(plan.env)
        context: dict[str, Any] = {}
        # The contract: every step sees earlier outputs; read only when something looks.
        ctx.steps = LazyOutputs(lambda: self.runtime.store.step_outputs(run.id))
        if templated:
            context = base_context(run, plan_step, ctx.steps, ctx.secrets)
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
        config = _validate(step_type, raw)
        if ctx.cancelled:
            raise StepCancelled("cancelled before it started")
        return step_type.run(ctx, config)

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
            return self.runtime.templates.render_value(value, context, shell=shell, values=values)
        except TemplateError as exc:
            raise StepFailed(f"{where}: {exc.message}") from None

    def _conclude(
        self,
        ref: StepRef,
        ctx: Context,
        masker: Masker,
        *,
        outputs: Mapping[str, Any] | None = None,
        error: BaseException | None = None,
    ) -> Finished:
        """Close the step's sandboxes and say how it ended, with its last log lines."""
        try:
            ctx.close()
        except Exception as exc:  # cleanup trouble is reported, never hides the result
            ctx.log.line(f"sandbox cleanup failed: {exc}", "system")
        clean: dict[str, Any] = {}
        if error is None:
            try:
                clean = masker.value(_checked_outputs(outputs, self.settings.max_output_bytes))
            except StepFailed as exc:
                error = exc
        outcome = None
        if error is not None:
            outcome = self._outcome(ctx, error, masker)
            ctx.log.line(_ending(outcome), "system")
        self._untrack(ref)
        logs = ctx.log.take()  # written in the same transaction as the result
        return Finished(ref, outputs=clean if outcome is None else None, outcome=outcome, logs=logs)

    def _outcome(self, ctx: Context, error: BaseException, masker: Masker) -> Outcome:
        if ctx.timed_out or isinstance(error, StepTimeout):
            return Outcome(_cut(masker(_timeout_reason(ctx, error))), None, "timeout")
        if isinstance(error, StepCancelled) or (
            ctx.cancelled and not isinstance(error, StepFailed)
        ):
            return Outcome(self._cancel_reason(ctx.run_id), None, "cancelled")
        if isinstance(error, StepFailed):
            return Outcome(_cut(masker(error.message)), error.exit_code)
        if isinstance(error, ConveyorError):
            return Outcome(_cut(masker(error.message)))
        for line in traceback.format_exception(error):
            for part in line.rstrip().splitlines():
                ctx.log.line(part, "system")
        return Outcome(_cut(masker(f"{type(error).__name__}: {error}")))

    def _cancel_reason(self, run_id: str) -> str:
        """Why the run stopped (``cancelled by user``, ``run timed out after 1h``)."""
        with contextlib.suppress(ConveyorError):
            run = self.runtime.store.get_run(run_id)
            if run.status.terminal and run.error:
                return run.error
        return "cancelled"

    # -- the monitor: log flushes, deadlines, leases, cancellation ---------------------

    def _track(self, step_id: str, ref: StepRef, ctx: Context) -> None:
        with self._lock:
            self._active[ref.run_id + "\0" + ref.step_key] = (ref, ctx, step_id)
            if self._monitor is None:
                self._monitor = threading.Thread(
                    target=self._watch, name="conveyor-monitor", daemon=True
                )
                self._monitor.start()

    def _untrack(self, ref: StepRef) -> None:
        with self._lock:
            self._active.pop(ref.run_id + "\0" + ref.step_key, None)

    def run_over(self, run_id: str) -> None:
        """Remove the run's workspaces, now or once its last step running here is done."""
        with self._lock:
            if self._busy(run_id):
                self._over.add(run_id)
                return
        self.sandboxes.cleanup_run(run_id)

    def _release(self, run_id: str) -> None:
        """After a step: clean up if its run ended while it (the last one here) ran."""
        with self._lock:
            if self._busy(run_id) or run_id not in self._over:
                return
            self._over.discard(run_id)
        self.sandboxes.cleanup_run(run_id)

    def _busy(self, run_id: str) -> bool:
        return any(ref.run_id == run_id for ref, _, _ in self._active.values())

    def signal_cancel(self, run_id: str) -> None:
        """Tell every step of ``run_id`` running here to stop."""
        with self._lock:
            contexts = [ctx for ref, ctx, _ in self._active.values() if ref.run_id == run_id]
        for ctx in contexts:
            ctx.cancel.set()

    def stop(self) -> None:
        """Stop the monitor thread."""
        self._stopping.set()

    def _watch(self) -> None:
        last_beat = time.monotonic()
        while not self._stopping.wait(min(0.1, self.settings.log_flush_seconds)):
            with self._lock:
                active = list(self._active.values())
            now = time.monotonic()
            for _, ctx, _ in active:
                self._tick(ctx, now)
            if now - last_beat >= self.settings.heartbeat_seconds:
                last_beat = now
                # This thread keeps every step's deadline: one bad beat must not end it.
                with contextlib.suppress(Exception):
                    self._heartbeat(active)

    def _tick(self, ctx: Context, now: float) -> None:
        if ctx.deadline is not None and now >= ctx.deadline and not ctx.cancel.is_set():
            ctx.timed_out = True
            ctx.cancel.set()
        # The store may be away for a moment: the lines stay buffered for the next tick.
        with contextlib.suppress(Exception):
            ctx.log.flush()

    def _heartbeat(self, active: list[tuple[StepRef, Context, str]]) -> None:
        until = utcnow() + timedelta(seconds=self.settings.lease_seconds)
        try:
            states = self.runtime.store.renew_leases([sid for *_, sid in active], self.owner, until)
        except ConveyorError:
            return
        for ref, ctx, step_id in active:
            if states.get(step_id) == "cancelled":  # cancelled elsewhere, another process
                with self._lock:
                    self._over.add(ref.run_id)
                ctx.cancel.set()


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
