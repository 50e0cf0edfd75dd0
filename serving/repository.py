"""The served models: several models and versions at once, load/unload, readiness.

A version becomes ready only after its bundle verified (sha256), its runtime loaded and a
warm-up inference ran. Requests without a version go to the highest ready version.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from lumenserve.bundle import BundleError, list_models, list_versions, model_folder
from serving.errors import InvalidInput, ModelNotFound, Unavailable
from serving.metrics import ServingMetrics
from serving.model_config import ModelConfig, ModelConfigError, read_model_config
from serving.priority import thread_pool
from serving.served import ServedModel, load_served_model
from serving.settings import ServingSettings

log = logging.getLogger("lumenserve.serving")
StateListener = Callable[[str], None]


@dataclass
class VersionState:
    name: str
    version: str
    state: str  # LOADING, READY, UNAVAILABLE
    reason: str = ""


class ModelRepository:
    def __init__(self, settings: ServingSettings, metrics: ServingMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, dict[str, ServedModel]] = {}
        self.states: dict[tuple[str, str], VersionState] = {}
        self.listeners: list[StateListener] = []
        self.expected: set[str] = set()
        """Models server readiness waits for (startup models, plus API loads, minus API unloads)."""
        self.started = False
        self._locks: dict[str, asyncio.Lock] = {}
        threads = settings.preprocess_threads or os.cpu_count() or 2
        self.decode_pool = thread_pool(threads, "preprocess", settings.compute_nice)
        """Decodes raw images and tokenises texts for every model (shared, one per CPU by default)."""

    # ---- lookup -------------------------------------------------------------------------
    def get(self, name: str, version: str = "") -> ServedModel:
        """The ready model version (highest when ``version`` is empty)."""
        versions = self.models.get(name)
        if not versions:
            state = next((s for s in self.states.values() if s.name == name and s.state == "LOADING"), None)
            if state is not None:
                raise Unavailable(f"model {name!r} is loading")
            raise ModelNotFound(f"unknown model {name!r}")
        if not version:
            ready = [m for m in versions.values() if m.ready]
            if not ready:
                raise Unavailable(f"model {name!r} is not ready")
            return max(ready, key=lambda m: int(m.version))
        model = versions.get(version)
        if model is None:
            raise ModelNotFound(f"model {name!r} has no version {version!r} (loaded: {sorted(versions)})")
        if not model.ready:
            raise Unavailable(f"model {name!r} version {version} is not ready")
        return model

    def ready_versions(self, name: str) -> list[ServedModel]:
        """The ready versions of ``name``, lowest first (ModelNotFound for an unknown model)."""
        if name not in self.models:
            self.get(name)  # raises the lookup's own error (unknown, or still loading)
        return sorted((m for m in self.models.get(name, {}).values() if m.ready), key=lambda m: int(m.version))

    def versions_of(self, name: str) -> list[str]:
        return sorted(self.models.get(name, {}), key=int)

    def ready_names(self) -> list[str]:
        return [n for n, vs in self.models.items() if any(m.ready for m in vs.values())]

    def all_ready(self) -> bool:
        """Every expected model (loaded at startup or through the API, not unloaded) is ready."""
        ready = set(self.ready_names())
        return self.started and all(name in ready for name in self.expected)

    def wanted_models(self) -> list[str]:
        """The models to load at startup: ``settings.models`` or everything in the repository."""
        return list(self.settings.models) or list_models(self.settings.repository)

    async def load_startup_models(self) -> None:
        names = self.wanted_models()
        self.expected.update(names)
        for name in names:
            await self.load(name)
        self.started = True

    def index(self) -> list[dict[str, str]]:
        """Every model version on disk with its state (Triton's repository index shape)."""
        rows: dict[tuple[str, str], dict[str, str]] = {}
        try:
            on_disk = list_models(self.settings.repository)
        except BundleError:
            on_disk = []
        for name in on_disk:
            for version in list_versions(model_folder(self.settings.repository, name)):
                rows[(name, str(version))] = {"name": name, "version": str(version), "state": "UNAVAILABLE"}
        for key, state in self.states.items():
            rows[key] = {"name": state.name, "version": state.version, "state": state.state}
            if state.reason:
                rows[key]["reason"] = state.reason
        return [rows[k] for k in sorted(rows)]

    # ---- load / unload ------------------------------------------------------------------
    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def load(self, name: str) -> None:
        """(Re)load ``name``: its config.yaml read again, the versions its version policy picks
        loaded; old versions keep serving meanwhile and those no longer picked are unloaded."""
        try:  # REPO/NAME, or REPO itself when it is one model's folder (KServe's /mnt/models)
            model_dir = model_folder(self.settings.repository, name)
        except BundleError as exc:
            raise InvalidInput(str(exc)) from None
        on_disk = list_versions(model_dir)
        if not on_disk:
            raise ModelNotFound(f"model {name!r} is not in the repository")
        try:
            config = read_model_config(model_dir)
            versions = config.version_policy.select(on_disk)
        except (ModelConfigError, ValueError) as exc:
            raise InvalidInput(f"model {name!r}: {exc}") from None
        async with self._lock(name):
            loaded: dict[str, ServedModel] = {}
            errors: list[str] = []
            for number in versions:
                try:
                    loaded[str(number)] = await self._load_version(name, str(number), config)
                except BundleError as exc:
                    errors.append(str(exc))
            if not loaded:
                raise InvalidInput(f"model {name!r} failed to load: {'; '.join(errors)}")
            old = self.models.get(name, {})
            self.models[name] = loaded
            self.expected.add(name)
            self._notify(name)
            for version, model in old.items():
                await self._retire(model, keep_state=version in loaded)

    async def _load_version(self, name: str, version: str, config: ModelConfig) -> ServedModel:
        key = (name, version)
        self.states[key] = VersionState(name, version, "LOADING")
        folder = model_folder(self.settings.repository, name) / version
        try:
            model = await load_served_model(
                folder,
                self.settings,
                self.metrics.for_model(name, version),
                self.decode_pool,
                model_name=name,
                config=config,
            )
        except Exception as exc:
            reason = str(exc) if isinstance(exc, BundleError) else f"load failed: {exc!r}"
            log.error("model %s version %s failed to load: %s", name, version, reason)
            self.states[key] = VersionState(name, version, "UNAVAILABLE", reason)
            raise BundleError(reason) from exc
        self.metrics.model_load_seconds.labels(name, version).set(model.load_seconds)
        self.metrics.model_ready.labels(name, version).set(1)
        self.metrics.model_max_batch_size.labels(name, version).set(model.max_batch_size)
        self.metrics.model_instances.labels(name, version).set(model.instances)
        self.states[key] = VersionState(name, version, "READY")
        log.info("model %s version %s ready in %.2f s (%s)", name, version, model.load_seconds, model.runtime.kind)
        return model

    async def unload(self, name: str) -> None:
        async with self._lock(name):
            self.expected.discard(name)
            versions = self.models.pop(name, None)
            if versions is None:
                raise ModelNotFound(f"model {name!r} is not loaded")
            self._notify(name)
            for model in versions.values():
                await self._retire(model, keep_state=False)

    async def _retire(self, model: ServedModel, *, keep_state: bool) -> None:
        await model.retire()
        key = (model.name, model.version)
        if not keep_state:
            self.states[key] = VersionState(model.name, model.version, "UNAVAILABLE", "unloaded")
            self.metrics.model_ready.labels(model.name, model.version).set(0)

    async def close(self) -> None:
        for name in list(self.models):
            await self.unload(name)
        self.decode_pool.shutdown(wait=False, cancel_futures=True)

    def _notify(self, name: str) -> None:
        for listener in self.listeners:
            listener(name)
