"""Plugins found through entry points: step types, sandbox kinds and providers.

The entry-point name is the only place a step type's name is written
(``step.shell_exec = conveyor.steps.shell_exec:ShellExec``), so third-party packages add
steps the same way the built-in ones are added.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .contracts import ArtifactStore, SandboxFactory, StepType
from .errors import PluginError
from .settings import Settings

STEP_GROUP = "conveyor.steps"
SANDBOX_GROUP = "conveyor.sandboxes"
ARTIFACT_GROUP = "conveyor.artifact_stores"
PROVIDER_GROUP = "conveyor.providers"


class StepTypes(Mapping[str, StepType]):
    """Step types by name, loaded on first use."""

    def __init__(self, types: Mapping[str, StepType] | None = None) -> None:
        self._eps: dict[str, EntryPoint] = {}
        self._loaded: dict[str, StepType] = dict(types or {})
        if types is None:
            self._eps = {ep.name: ep for ep in entry_points(group=STEP_GROUP)}

    def __getitem__(self, name: str) -> StepType:
        if name not in self._loaded:
            if name not in self._eps:
                raise KeyError(name)
            self._loaded[name] = _instantiate(self._eps[name], StepType)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self._eps) | set(self._loaded)))

    def __len__(self) -> int:
        return len(set(self._eps) | set(self._loaded))


class Sandboxes:
    """Sandbox factories by kind (``local``, ``docker``), built once with the settings."""

    def __init__(
        self, settings: Settings, factories: Mapping[str, SandboxFactory] | None = None
    ) -> None:
        self.settings = settings
        self._factories: dict[str, SandboxFactory] = dict(factories or {})
        self._eps = {ep.name: ep for ep in entry_points(group=SANDBOX_GROUP)}
        #: Providers (``docker``, ``aws``…) steps reach through ``ctx.provider(name)``.
        self.providers = Providers(settings)

    def get(self, kind: str) -> SandboxFactory:
        """The factory for ``kind``; PluginError naming what is installed if missing."""
        if kind not in self._factories:
            if kind not in self._eps:
                known = ", ".join(sorted(self._eps)) or "none"
                raise PluginError(f"no {kind} sandbox is installed (installed: {known})")
            self._factories[kind] = self._eps[kind].load()(self.settings)
        return self._factories[kind]

    def cleanup_run(self, run_id: str) -> None:
        """Ask every sandbox kind and provider used here to remove what the run left."""
        self.providers.cleanup_run(run_id)
        for factory in self._factories.values():
            factory.cleanup_run(run_id)


class Providers:
    """Adapters to the outside world (entry-point group ``conveyor.providers``).

    Each entry point names a class built once per process with the settings; steps
    reach it through ``ctx.provider(name)`` and never import it.
    """

    def __init__(self, settings: Settings, providers: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self._built: dict[str, Any] = dict(providers or {})
        self._eps = {ep.name: ep for ep in entry_points(group=PROVIDER_GROUP)}

    def get(self, name: str) -> Any:
        """The provider ``name``; PluginError naming what is installed if missing."""
        if name not in self._built:
            if name not in self._eps:
                known = ", ".join(sorted(self._eps)) or "none"
                raise PluginError(f"no provider {name!r} is installed (installed: {known})")
            try:
                self._built[name] = self._eps[name].load()(self.settings)
            except PluginError:
                raise
            except Exception as exc:  # a broken plugin fails the step, not the worker
                raise PluginError(f"provider {name} could not be loaded: {exc}") from exc
        return self._built[name]

    def cleanup_run(self, run_id: str) -> None:
        """Let each provider built here remove what the run left (``cleanup_run``, if any)."""
        for provider in self._built.values():
            cleanup = getattr(provider, "cleanup_run", None)
            if callable(cleanup):
                cleanup(run_id)


def load_artifact_store(settings: Settings) -> ArtifactStore:
    """The artifact store the settings name (``local`` or ``s3``, or a plugin's)."""
    found = {ep.name: ep for ep in entry_points(group=ARTIFACT_GROUP)}
    if settings.artifact_store not in found:
        known = ", ".join(sorted(found)) or "none"
        raise PluginError(f"no artifact store {settings.artifact_store!r} (installed: {known})")
    store: ArtifactStore = found[settings.artifact_store].load()(settings)
    return store


def _instantiate(ep: EntryPoint, protocol: Any) -> Any:
    try:
        obj = ep.load()
        instance = obj() if isinstance(obj, type) else obj
    except Exception as exc:  # a broken third-party plugin must not crash the whole CLI
        raise PluginError(f"step type {ep.name} could not be loaded: {exc}") from exc
    if not isinstance(instance, protocol):
        raise PluginError(f"{ep.value} is not a {protocol.__name__}")
    return instance
