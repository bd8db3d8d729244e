"""Provider ``docker``: builds, tags, pushes and runs images on the Docker engine.

Steps reach it as ``ctx.provider("docker")`` and see it as the orchestrator's
``ImageEngine``. Build and push progress streams to the step's log; a cancel or the
step's deadline cuts the stream (the engine then stops the build or push) or kills the
container. Engine errors become one-line ``StepFailed`` messages: a missing image, an
unreachable engine, the failing Dockerfile instruction, a refused or unreachable registry.

Containers of ``run`` get what sandbox containers get (``policy``): no network
unless allowed, no capabilities, no new privileges, a pids limit, checked mounts, never
the Docker socket; the run's workspace directory is bind-mounted at ``/workspace``, so
the engine must see this host's filesystem (see ``client``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import Mount
from docker.utils import parse_repository_tag

from conveyor.orchestrator.contracts import (
    BuildSpec,
    BuiltImage,
    ContainerResult,
    LineSink,
    RegistryAuth,
    SandboxRequest,
)
from conveyor.orchestrator.errors import SandboxError, StepFailed
from conveyor.orchestrator.settings import Settings

from ..sandbox_common import CONTAINER_WORKSPACE, LineSplitter, effective_deadline, raise_for
from .client import RUN_LABEL, STEP_LABEL, EngineClient, image_missing, one_line
from .containers import Watcher, remove_container
from .policy import container_options, container_path
from .progress import BuildLog, Capped, PushLog, StreamingApi, push_failure

STEP_DEADLINE = "timed out: the step's time limit passed"


class DockerEngine:
    """The ``ImageEngine`` on the engine the Docker CLI would use (DOCKER_HOST)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine = EngineClient(StreamingApi)

    def api(self) -> StreamingApi:
        """A client of an engine that answers; SandboxError with the reason otherwise."""
        return self._engine.get()

    def cleanup_run(self, run_id: str) -> None:
        """Remove the run's containers still there (detached ``step.docker_run`` ones).

        Called when the run is over; safe to call twice, and a no-op when this process
        never reached the engine.
        """
        api = self._engine.made
        if api is None:
            return
        with contextlib.suppress(docker.errors.DockerException):
            found = api.containers(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
            for container in found:
                remove_container(api, container["Id"])

    def build(
        self,
        spec: BuildSpec,
        *,
        cancel: threading.Event,
        deadline: float | None,
        on_line: LineSink | None = None,
    ) -> BuiltImage:
        """Build ``spec`` with the engine's builder, tag it, and say what was made."""
        if not (spec.context / spec.dockerfile).is_file():
            raise StepFailed(f"there is no {spec.dockerfile} in the build context")
        api = self.api()
        log = BuildLog(on_line)

        def start() -> Iterable[dict[str, Any]]:
            return api.build(  # type: ignore[no-any-return]
                path=str(spec.context),
                dockerfile=spec.dockerfile,
                tag=spec.tags[0] if spec.tags else None,
                buildargs=dict(spec.build_args) or None,
                cache_from=list(spec.cache_from) or None,
                target=spec.target,
                pull=spec.pull,
                rm=True,
                forcerm=True,
                decode=True,
            )

        _follow(api, start, log.feed, cancel, deadline, log.failure)
        log.finish()
        if log.image_id is None:
            raise StepFailed("build failed: the engine reported no image")
        for tag in spec.tags[1:]:
            self.tag(log.image_id, tag)
        return BuiltImage(log.image_id, self._digest(log.image_id), tuple(spec.tags))

    def tag(self, image: str, reference: str) -> None:
        """Give the local image ``image`` the name ``reference`` too."""
        repository, tag = _split(reference)
        api = self.api()
        try:
            api.tag(image, repository, tag)
        except docker.errors.ImageNotFound:
            raise image_missing(image) from None
        except docker.errors.DockerException as exc:
            raise StepFailed(f"could not tag {image} as {reference}: {_reason(exc)}") from exc

    def push(
        self,
        reference: str,
        *,
        auth: RegistryAuth | None,
        cancel: threading.Event,
        deadline: float | None,
        on_line: LineSink | None = None,
    ) -> str:
        """Push ``reference``; the digest the registry gave it."""
        repository, tag = _split(reference)
        api = self.api()
        self._require(reference)
        log = PushLog(reference, on_line)
        credentials = {"username": auth.username, "password": auth.password} if auth else None

        def start() -> Iterable[dict[str, Any]]:
            return api.push(  # type: ignore[no-any-return]
                repository, tag=tag, stream=True, decode=True, auth_config=credentials
            )

        _follow(api, start, log.feed, cancel, deadline, lambda e: push_failure(reference, e))
        if log.digest is None:
            raise StepFailed(f"push of {reference} failed: the registry reported no digest")
        return log.digest

    def run(
        self,
        request: SandboxRequest,
        *,
        command: Sequence[str] | None,
        workspace: Path | None,
        wait: bool = True,
        on_stdout: LineSink | None = None,
        on_stderr: LineSink | None = None,
    ) -> ContainerResult:
        """Run the image to its end (or start it, without ``wait``), then remove it."""
        api = self.api()
        container_id = self._create(api, request, command, workspace, auto_remove=not wait)
        if not wait:
            try:
                api.start(container_id)
            except docker.errors.DockerException as exc:
                remove_container(api, container_id)
                raise SandboxError(f"could not start the container: {_reason(exc)}") from exc
            return ContainerResult(container_id, None)
        try:
            return _Attached(api, container_id, request).run(on_stdout, on_stderr)
        finally:
            remove_container(api, container_id)

    def _create(
        self,
        api: StreamingApi,
        request: SandboxRequest,
        command: Sequence[str] | None,
        workspace: Path | None,
        *,
        auto_remove: bool,
    ) -> str:
        config = request.config
        options = container_options(config, self.settings)
        mounts = options.pop("mounts")
        if workspace is not None:
            mounts.insert(0, Mount(CONTAINER_WORKSPACE, str(workspace), type="bind"))
        env = {"CI": "true", "CONVEYOR_RUN_ID": request.run_id, "CONVEYOR_STEP": request.step_key}
        env.update(CONVEYOR_WORKSPACE=CONTAINER_WORKSPACE, **config.env)
        host_config = api.create_host_config(mounts=mounts, auto_remove=auto_remove, **options)
        image = config.image or ""
        try:
            created = api.create_container(
                image,
                list(command) if command is not None else None,
                environment=env,
                working_dir=container_path(config.work_dir) if config.work_dir else None,
                labels={RUN_LABEL: request.run_id, STEP_LABEL: request.step_key},
                host_config=host_config,
            )
        except docker.errors.ImageNotFound:
            raise image_missing(image) from None
        except docker.errors.DockerException as exc:
            raise SandboxError(f"could not create the container: {_reason(exc)}") from exc
        return str(created["Id"])

    def _require(self, image: str) -> None:
        try:
            self.api().inspect_image(image)
        except docker.errors.ImageNotFound:
            raise image_missing(image) from None
        except docker.errors.DockerException as exc:
            raise SandboxError(f"the Docker engine failed: {_reason(exc)}") from exc

    def _digest(self, image_id: str) -> str:
        """The image's repo digest when a registry gave it one, else its id."""
        try:
            found = self.api().inspect_image(image_id)
        except docker.errors.DockerException as exc:
            raise SandboxError(f"the Docker engine failed: {_reason(exc)}") from exc
        digests = found.get("RepoDigests") or []
        return str(digests[0]).partition("@")[2] if digests else image_id


class _Attached:
    """One container run to its end: output streamed and capped, limits, exit code."""

    def __init__(self, api: StreamingApi, container_id: str, request: SandboxRequest) -> None:
        self.api, self.container_id, self.request = api, container_id, request
        self.deadline, self.timeout_message = effective_deadline(request)

    def run(self, on_stdout: LineSink | None, on_stderr: LineSink | None) -> ContainerResult:
        """Attach, start, stream until it exits, and read its exit code."""
        outputs = {"stdout": Capped(), "stderr": Capped()}
        lines = {"stdout": LineSplitter(on_stdout), "stderr": LineSplitter(on_stderr)}
        api, cid = self.api, self.container_id
        try:
            # Attached before it starts, so not one line of a short-lived container is lost.
            stream = api.attach(cid, stdout=True, stderr=True, stream=True, logs=True, demux=True)
            with Watcher(self._kill, self.request.cancel, self.deadline) as watcher:
                api.start(cid)
                for out, err in stream:
                    self._take(out, outputs["stdout"], lines["stdout"])
                    self._take(err, outputs["stderr"], lines["stderr"])
                for splitter in lines.values():
                    splitter.flush()
                raise_for(watcher.reason, self.timeout_message)
            code = int(api.wait(cid)["StatusCode"])
            self._check_memory(code)
        except docker.errors.DockerException as exc:
            raise SandboxError(f"the container failed: {_reason(exc)}") from exc
        cut = tuple(name for name, capped in outputs.items() if capped.cut)
        stdout, stderr = outputs["stdout"].text(), outputs["stderr"].text()
        return ContainerResult(cid, code, stdout, stderr, cut)

    @staticmethod
    def _take(chunk: bytes | None, capped: Capped, lines: LineSplitter) -> None:
        if chunk:
            capped.add(chunk)
            lines.feed(chunk)

    def _kill(self) -> None:
        with contextlib.suppress(docker.errors.DockerException):  # it ended meanwhile
            self.api.kill(self.container_id)

    def _check_memory(self, code: int) -> None:
        limit = self.request.config.memory_limit
        if limit is None or code != 137:
            return
        if self.api.inspect_container(self.container_id)["State"].get("OOMKilled"):
            raise SandboxError(f"killed: out of memory (memory_limit {limit})")


def _follow(
    api: StreamingApi,
    start: Callable[[], Iterable[dict[str, Any]]],
    feed: Callable[[dict[str, Any]], None],
    cancel: threading.Event,
    deadline: float | None,
    failure: Callable[[str], str],
) -> None:
    """Feed a progress stream to ``feed``, cutting it on cancel or at the deadline."""
    opened: list[Any] = []
    with Watcher(lambda: api.cut(opened[0] if opened else None), cancel, deadline) as watcher:
        try:
            stream = start()
            opened.append(api.current())
            for message in stream:
                feed(message)
        except StepFailed:
            raise
        except Exception as exc:  # a cut stream ends with whatever the HTTP layer raises
            if watcher.reason is None:
                raise StepFailed(failure(_reason(exc))) from exc
    raise_for(watcher.reason, STEP_DEADLINE)


def _split(reference: str) -> tuple[str, str]:
    repository, tag = parse_repository_tag(reference)
    if tag and tag.startswith("sha256:"):
        raise StepFailed(f"{reference} names a digest: give a tag to push or tag")
    return repository, tag or "latest"


def _reason(exc: BaseException) -> str:
    """The engine's own explanation when it gave one, on one line."""
    explanation = getattr(exc, "explanation", None)
    return one_line(explanation) if explanation else one_line(exc)
