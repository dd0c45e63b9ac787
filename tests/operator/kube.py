"""A Kubernetes API for tests: kmock's KubernetesEmulator with the gaps that matter to Kopf and
the `kubernetes` client filled in, served on 127.0.0.1 from an event loop of its own thread, so
tests stay synchronous (blocking clients, subprocesses, sleeps) while it serves.

Filled-in gaps of kmock 0.8 (see /work/shared/local-servers.md):
- metadata.uid, resourceVersion, creationTimestamp, generation and namespace are assigned on
  create (and generateName honoured); resourceVersion changes on every update;
- a JSON patch whose `test` operation fails answers 422 (Kopf's optimistic concurrency for
  finalizers), not 500;
- `/status` is not a real subresource: a status patch merges into the object, which is all
  the operator needs.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import jsonpatch
import kmock
import yaml

T = TypeVar("T")

GROUP, VERSION, PLURAL = "imageimport.dev", "v1alpha1", "imageimports"
RESOURCE = f"{GROUP}/{VERSION}/{PLURAL}"
CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "imageimports.yaml"
# Kopf's own, shipped in the chart: where operator replicas find each other.
PEERING_CRD_FILE = (
    Path(__file__).resolve().parents[2] / "charts" / "imageimport" / "crds" / "kopfpeerings.yaml"
)
PEERING_RESOURCE = "kopf.dev/v1/kopfpeerings"


class Emulator(kmock.KubernetesEmulator):
    _versions = itertools.count(1)
    # Plurals that answer 404 as an uninstalled CRD would (kmock serves anything it is sent).
    uninstalled: frozenset[str] = frozenset()

    async def _handle(self, request: kmock.Request) -> Any:
        created = False
        if request.resource is not None:
            if request.resource.plural in self.uninstalled:
                raise kmock.KubernetesResourceNotFoundError()
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                self._on_create(request)
                created = True
            elif request.action == kmock.action.UPDATE and request.name is not None:
                self._on_update(request)
        response = await super()._handle(request)
        if created and response.status == 200 and not response.prepared:
            response.set_status(201)  # the `kubernetes` client reads no body from a 200 here
        return response

    def _next_version(self) -> str:
        return str(next(self._versions))

    def _on_create(self, request: kmock.Request) -> None:
        meta = request.data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta.setdefault(
            "creationTimestamp",
            datetime.datetime.now(datetime.UTC)
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z"),
        )
        meta["resourceVersion"] = self._next_version()

    def _on_update(self, request: kmock.Request) -> None:
        key = (request.resource, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            return  # kmock answers 404 itself
        if isinstance(request.data, list):
            try:
                jsonpatch.apply_patch(copy.deepcopy(self._objects[key].raw), request.data)
            except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict) as error:
                raise kmock.KubernetesError(
                    status=422, reason="Invalid", message=f"the patch does not apply: {error}"
                ) from None
            request.data.append(
                {"op": "add", "path": "/metadata/resourceVersion", "value": self._next_version()}
            )
        elif isinstance(request.data, dict):
            meta = request.data.get("metadata")
            if not isinstance(meta, dict):
                meta = request.data["metadata"] = {}
            meta["resourceVersion"] = self._next_version()


def crd_resource_info(path: Path = CRD_FILE) -> kmock.ResourceInfo:
    """Discovery information taken from a CustomResourceDefinition file."""
    crd = yaml.safe_load(path.read_text())
    names = crd["spec"]["names"]
    return kmock.ResourceInfo(
        kind=names["kind"],
        singular=names["singular"],
        namespaced=crd["spec"]["scope"] == "Namespaced",
        shortnames=names.get("shortNames", []),
        categories=names.get("categories", []),
        verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
        subresources={
            name for version in crd["spec"]["versions"] for name in version.get("subresources", {})
        },
    )


class KubeHarness:
    """The emulator on a port of 127.0.0.1, and in-process operators on the same loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="kmock", daemon=True)
        self._thread.start()
        self.emulator: Emulator
        self._server: kmock.Server
        self._operators: list[tuple[asyncio.AbstractEventLoop, threading.Thread, Any]] = []
        self.call(self._start())

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def sync(self, function: Callable[[], T]) -> T:
        """Run `function` on the emulator's loop (its state is not thread-safe)."""

        async def run() -> T:
            return function()

        return self.call(run())

    async def _start(self) -> None:
        self.emulator = Emulator()
        await self.emulator.__aenter__()
        self._server = kmock.Server(self.emulator)
        await self._server.__aenter__()
        self.emulator.resources.load_bundled()
        self.emulator.resources[RESOURCE] = crd_resource_info()
        self.emulator.resources[PEERING_RESOURCE] = crd_resource_info(PEERING_CRD_FILE)

    @property
    def url(self) -> str:
        return str(self._server.url).rstrip("/")

    def stop(self) -> None:
        self.stop_operators()

        async def shutdown() -> None:
            await self._server.__aexit__(None, None, None)
            await self.emulator.__aexit__(None, None, None)

        try:
            self.call(shutdown(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    # -- clients ----------------------------------------------------------------------------

    def api_client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {}}],
                    "contexts": [
                        {"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}
                    ],
                    "current-context": "kmock",
                }
            )
        )
        return path

    # -- objects ----------------------------------------------------------------------------

    def _objects(self, resource: str) -> list[tuple[str | None, str, Any]]:
        """(namespace, name, kmock Object) of a resource given as "group/version/plural"."""
        group, version, plural = (
            resource.split("/") if resource.count("/") == 2 else ("", *resource.split("/"))
        )
        return [
            (namespace, name, obj)
            for (res, namespace, name), obj in self.emulator.objects.items()
            if (res.group, res.version, res.plural) == (group, version, plural)
        ]

    def get(self, namespace: str, name: str, resource: str = RESOURCE) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            for ns, n, obj in self._objects(resource):
                if (ns, n) == (namespace, name) and not obj.deleted:
                    return copy.deepcopy(dict(obj.raw))
            return None

        return self.sync(read)

    def history(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Every version the ImageImport went through, oldest first."""

        def read() -> list[dict[str, Any]]:
            for ns, n, obj in self._objects(RESOURCE):
                if (ns, n) == (namespace, name):
                    return [copy.deepcopy(dict(v.raw)) for v in obj.history if v is not None]
            return []

        return self.sync(read)

    def objects(self, resource: str) -> list[dict[str, Any]]:
        """The live objects of a resource ("group/version/plural", or "v1/plural")."""

        def read() -> list[dict[str, Any]]:
            return [
                copy.deepcopy(dict(o.raw)) for _, _, o in self._objects(resource) if not o.deleted
            ]

        return self.sync(read)

    def watch_requests(self) -> int:
        """How many watch requests for ImageImports have arrived so far."""

        def count() -> int:
            return sum(
                1
                for r in self.emulator
                if r.action == kmock.action.WATCH
                and r.resource is not None
                and r.resource.plural == PLURAL
            )

        return self.sync(count)

    def wait_for_watch(self, already: int = 0, timeout: float = 30) -> None:
        """Until a (new) watch of ImageImports has started: kmock's watch replays existing
        objects, but events between a list and the watch are lost."""
        deadline = time.monotonic() + timeout
        while self.watch_requests() <= already:
            if time.monotonic() > deadline:
                raise AssertionError("the operator never started watching ImageImports")
            time.sleep(0.05)
        time.sleep(0.2)  # the watch's replay of existing objects has gone out

    # -- in-process operators ---------------------------------------------------------------

    def start_operator(self, memo: Any, namespaces: list[str], progress_seconds: float) -> None:
        """Kopf on an event loop of its own: when it stops, it cancels every task of its loop
        that it did not start with, which must not include the emulator's."""
        import kopf

        from imageimport.operator.handlers import make_registry, make_settings

        url = self.url

        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=url, insecure=True)

        # Finished resources are checked for retries, and resources with spec.sync for a round
        # that is due, as often as running ones for progress.
        registry = make_registry(
            progress_seconds=progress_seconds,
            resync_seconds=progress_seconds,
            sync_seconds=progress_seconds,
            login=login,
        )
        settings = make_settings()
        # Cancelling the task must never SIGKILL the test process later.
        settings.process.ultimate_exiting_timeout = None
        settings.watching.reconnect_backoff = 0.2
        already = self.watch_requests()

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="kopf", daemon=True)
        thread.start()

        async def spawn() -> asyncio.Task[None]:
            return asyncio.create_task(
                kopf.operator(
                    registry=registry,
                    settings=settings,
                    standalone=True,
                    namespaces=namespaces,
                    memo=memo,
                )
            )

        task = asyncio.run_coroutine_threadsafe(spawn(), loop).result(30)
        self._operators.append((loop, thread, task))
        self.wait_for_watch(already)

    def stop_operators(self) -> None:
        operators, self._operators = self._operators, []
        for loop, _, task in operators:
            loop.call_soon_threadsafe(task.cancel)
        deadline = time.monotonic() + 30
        while not all(task.done() for _, _, task in operators):
            if time.monotonic() > deadline:
                raise AssertionError("an in-process operator did not stop")
            time.sleep(0.05)
        for loop, thread, _ in operators:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
