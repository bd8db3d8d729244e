"""The StepContext a step type runs with, and the logger that streams to the store."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from conveyor.orchestrator.contracts import (
    ArtifactStore,
    Sandbox,
    SandboxConfig,
    SandboxRequest,
    Store,
)
from conveyor.orchestrator.engine.variables import Masker
from conveyor.orchestrator.errors import ConveyorError, PluginError
from conveyor.orchestrator.plugins import Sandboxes
from conveyor.orchestrator.scanning.history import FindingsLedger
from conveyor.orchestrator.settings import Settings

#: Lines longer than this are cut: a log is for people, artifacts are for data.
MAX_LINE = 16_384
#: Characters buffered before the step's own thread writes them. Below that, the
#: monitor's thread writes what is there every ``log_flush_seconds``, while the step
#: reads on: a loud step's output is read and stored at the same time, and past this
#: the step waits for the store rather than hold more.
FLUSH_CHARS = 4 * 1024**2
_CUT = " …[line cut]"


class StoreLogger:
    """Buffers a step's log and writes it to the store in batches.

    Output is masked before it is buffered, so a secret never reaches the store or a
    terminal. It arrives in blocks of lines (``write``) or one line at a time
    (``line``); a block is masked, cut and counted as one string, never split into a
    Python object per line. The executor's monitor flushes every few hundred
    milliseconds, so a step that prints a line and then works for an hour still shows
    that line at once.
    """

    def __init__(
        self, store: Store, run_id: str, step_key: str, attempt: int, mask: Masker
    ) -> None:
        self.store, self.run_id, self.step_key, self.attempt = store, run_id, step_key, attempt
        self.mask = mask
        #: (stream, text) parts: a text is one or more lines joined by newlines.
        self._buffer: list[tuple[str, str]] = []
        self._chars = 0
        self._lock = threading.Lock()
        # Held from taking a batch until it is written: the monitor and the step both
        # flush, and two batches written concurrently could land out of order.
        self._flushing = threading.Lock()

    def line(self, text: str, stream: str = "stdout") -> None:
        """Record one line (masked, cut at MAX_LINE characters)."""
        self._add(text.rstrip("\r\n"), stream)

    def write(self, block: str, stream: str = "stdout") -> None:
        """Record a block of whole lines, each ended by a newline (the last one may not be).

        The block is masked as a whole, so a secret printed over several lines is
        masked as the whole value it is, and each of its lines on its own too.
        """
        self._add(block[:-1] if block.endswith("\n") else block, stream)

    def _add(self, text: str, stream: str) -> None:
        # NUL cannot be stored in Postgres text; a binary blurt shows as U+FFFD instead.
        if "\x00" in text:
            text = text.replace("\x00", "\ufffd")
        text = cut_long_lines(self.mask(text))
        with self._lock:
            self._buffer.append((stream, text))
            self._chars += len(text)
            full = self._chars >= FLUSH_CHARS or len(self._buffer) >= 5000
        if full:
            # A store away for a moment must not fail the step: the monitor retries.
            with contextlib.suppress(ConveyorError):
                self.flush()

    def take(self) -> list[tuple[str, str]]:
        """Hand over what is buffered, to be written with the step's result."""
        with self._flushing, self._lock:
            batch, self._buffer, self._chars = self._buffer, [], 0
        return batch

    def flush(self) -> None:
        """Write what is buffered, in the order it was logged."""
        with self._flushing:
            with self._lock:
                batch, self._buffer, self._chars = self._buffer, [], 0
            if not batch:
                return
            try:
                self.store.append_logs(self.run_id, self.step_key, self.attempt, batch)
            except Exception:
                with self._lock:  # keep the lines for the next flush rather than lose them
                    self._buffer[:0] = batch
                    self._chars += sum(len(text) for _, text in batch)
                raise


def cut_long_lines(text: str) -> str:
    """``text`` with every line longer than MAX_LINE characters cut there.

    Looks a window of MAX_LINE + 1 characters at a time for a newline, from its end:
    a block of short lines costs a few steps per window, not one per line.
    """
    if len(text) <= MAX_LINE:
        return text
    pieces: list[str] = []
    done = start = 0  # text[:done] is in pieces; a line starts at ``start``
    while len(text) - start > MAX_LINE:
        newline = text.rfind("\n", start, start + MAX_LINE + 1)
        if newline >= 0:
            start = newline + 1
            continue
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        pieces += [text[done : start + MAX_LINE], _CUT]
        done = start = end
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


class LazyOutputs(Mapping[str, Mapping[str, Any]]):
    """Earlier steps' outputs, read from the store the first time a step looks."""

    def __init__(self, load: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self._load = load
        self._data: dict[str, dict[str, Any]] | None = None

    @property
    def data(self) -> dict[str, dict[str, Any]]:
        """The outputs, loaded once."""
        if self._data is None:
            self._data = self._load()
        return self._data

    def __getitem__(self, key: str) -> Mapping[str, Any]:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class Context:
    """The concrete StepContext (see contracts.StepContext)."""

    def __init__(
        self,
        *,
        run_id: str,
        step_key: str,
        attempt: int,
        pipeline: str,
        params: Mapping[str, Any],
        steps: Mapping[str, Mapping[str, Any]],
        env: Mapping[str, str],
        secrets: Mapping[str, str],
        matrix: Mapping[str, Any],
        log: StoreLogger,
        sandboxes: Sandboxes,
        deadline: float | None,
        timeout_message: str = "timed out",
        artifacts: Callable[[], ArtifactStore] | None = None,
        previous_run: Callable[[], str | None] | None = None,
        settings: Settings | None = None,
        seed: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        #: Puts the run's source into its workspace on this host before a sandbox opens.
        self._seed = seed
        self.run_id, self.step_key, self.attempt = run_id, step_key, attempt
        self.pipeline, self.params, self.steps = pipeline, params, steps
        self.env, self.secrets, self.matrix = env, secrets, matrix
        self.log, self.deadline = log, deadline
        #: Why ``deadline`` is what it is, as the step's error says it once reached.
        self.timeout_message = timeout_message
        self.cancel = threading.Event()
        self.timed_out = False
        self._sandboxes = sandboxes
        self._opened: list[Sandbox] = []
        self._artifacts = artifacts
        self._previous_run = previous_run

    @property
    def artifacts(self) -> ArtifactStore:
        """The artifact store (local or S3, as the settings say)."""
        if self._artifacts is None:
            raise PluginError("no artifact store is configured here")
        return self._artifacts()

    def previous_run(self) -> str | None:
        """The latest earlier run of this pipeline that succeeded, if any."""
        return self._previous_run() if self._previous_run else None

    @property
    def idempotency_key(self) -> str:
        """``run_id:step_key``: the key for effects outside Conveyor."""
        return f"{self.run_id}:{self.step_key}"

    @property
    def cancelled(self) -> bool:
        """True once the run or step has been cancelled or timed out."""
        return self.cancel.is_set()

    def remaining(self) -> float | None:
        """Seconds left before the step's deadline, or None."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def past_deadline(self) -> bool:
        """True once the step's deadline (its timeout or the run's) has passed."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def mask(self, text: str) -> str:
        """Replace secret values in ``text`` with ``***``."""
        return self.log.mask(text)

    def sandbox(self, config: SandboxConfig) -> Sandbox:
        """Open a sandbox: docker when ``config.image`` is set, local otherwise."""
        deadline = self.deadline
        if config.timeout is not None:
            own = time.monotonic() + config.timeout
            deadline = own if deadline is None else min(deadline, own)
        request = SandboxRequest(self.run_id, self.step_key, config, self.cancel, deadline)
        if self._seed is not None:
            self._seed()
        sandbox = self._sandboxes.get("docker" if config.image else "local").open(request)
        self._opened.append(sandbox)
        return sandbox

    def provider(self, name: str) -> Any:
        """The provider registered as ``name`` (``docker``, ``aws``…), built once."""
        return self._sandboxes.providers.get(name)

    @property
    def findings(self) -> FindingsLedger:
        """This step's findings ledger, on the store the step's log goes to."""
        return self.log.store.findings_ledger(self.run_id, self.step_key, self.pipeline)

    def close(self) -> None:
        """Close every sandbox the step opened and did not close (close is idempotent)."""
        for sandbox in self._opened:
            sandbox.close()
        self._opened.clear()
