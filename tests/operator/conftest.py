"""The operator's world: the Kubernetes emulator, real PostgreSQL/NATS/SeaweedFS, a fake Drive,
worker processes, and operators run in-process or as `imageimport operator` processes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
import pytest
from kubernetes import client

from imageimport.kube.secrets import KubernetesSecretReader
from imageimport.operator.handlers import OperatorContext
from imageimport.queue.nats import NatsQueue
from imageimport.services.credentials import CredentialedRuntime
from imageimport.services.imports import Importer
from imageimport.settings import Settings
from tests.distributed.cluster import Cluster, purge_stream
from tests.fakes.folder import FakeFolder
from tests.operator.kube import GROUP, PLURAL, VERSION, KubeHarness
from tests.pipeline.routes import Route, start_route
from tests.servers import free_port

NAMESPACE = "photos"
TERMINAL = {"Succeeded", "CompletedWithFailures", "Failed", "Cancelled"}


@pytest.fixture
def kube() -> Iterator[KubeHarness]:
    harness = KubeHarness()
    try:
        yield harness
    finally:
        harness.stop()


@dataclass
class InProcessOperator:
    runtime: CredentialedRuntime
    queue: NatsQueue
    importer: Importer

    def close(self) -> None:
        self.importer.wait(timeout=30)
        self.queue.close()
        self.runtime.close()


@dataclass
class Stack:
    """One test's Kubernetes, servers, fake Drive and workers."""

    kube: KubeHarness
    cluster: Cluster
    route: Route
    settings: Settings
    tmp: Path
    operators: list[InProcessOperator] = field(default_factory=list)
    processes: list[Any] = field(default_factory=list)

    @property
    def custom_objects(self) -> Any:
        return client.CustomObjectsApi(self.kube.api_client())

    def start_operator(
        self,
        progress_seconds: float = 0.5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> InProcessOperator:
        """An operator in this process; its timers all tick every `progress_seconds`, and
        `clock` is its "now" for sync schedules (a test moves it rather than wait hours)."""
        runtime = CredentialedRuntime(
            self.settings, reader=KubernetesSecretReader(self.kube.api_client())
        )
        queue = NatsQueue(self.settings.nats_url or "", self.settings.max_deliver)
        operator = InProcessOperator(runtime, queue, Importer(runtime, queue))
        self.operators.append(operator)
        context = OperatorContext(
            runtime, operator.importer, resync_seconds=progress_seconds, clock=clock
        )
        memo = kopf.Memo(context=context)
        self.kube.start_operator(memo, [NAMESPACE], progress_seconds)
        return operator

    def operator_process(self, *options: str, standby: bool = False) -> Any:
        """`imageimport operator` as its own process, logged in through a kubeconfig; a
        single replica (--standalone) unless peering options are given. Returns once it
        watches ImageImports, or at once for a `standby` (a paused replica watches none)."""
        kubeconfig = self.kube.write_kubeconfig(self.tmp / "kubeconfig")
        already = self.kube.watch_requests()
        process = self.cluster.command(
            "operator",
            "--namespace",
            NAMESPACE,
            *(options or ("--standalone",)),
            KUBECONFIG=str(kubeconfig),
            HEALTH_PORT=str(free_port()),
        )
        self.processes.append(process)
        if not standby:
            self.kube.wait_for_watch(already, timeout=60)
        return process

    def create(self, name: str, options: dict[str, Any] | None = None, **spec: Any) -> Any:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ImageImport",
            "metadata": {"name": name},
            "spec": {"source": {"url": self.route.url}, "options": options or {}, **spec},
        }
        return self.custom_objects.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, body
        )

    def delete(self, name: str) -> None:
        self.custom_objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)

    def get(self, name: str) -> dict[str, Any] | None:
        return self.kube.get(NAMESPACE, name)

    def wait_for(
        self, name: str, predicate: Callable[[dict[str, Any] | None], bool], timeout: float = 60
    ) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            current = self.get(name)
            if predicate(current):
                return current
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; the resource is {current}\n{self.cluster.logs()}")
            time.sleep(0.1)

    def wait_for_phase(self, name: str, phases: set[str], timeout: float = 60) -> dict[str, Any]:
        found = self.wait_for(
            name,
            lambda obj: obj is not None and obj.get("status", {}).get("phase") in phases,
            timeout,
        )
        assert found is not None
        return found

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                process.wait(30)
        self.kube.stop_operators()
        for operator in self.operators:
            operator.close()
        self.cluster.stop()


@pytest.fixture
def stack_factory(
    tmp_path: Path,
    kube: KubeHarness,
    postgres_database: str,
    nats_server: Any,
    s3_server: Any,
    make_settings: Callable[..., Settings],
) -> Iterator[Callable[[FakeFolder], Stack]]:
    purge_stream(nats_server.url)
    with contextlib.ExitStack() as exits:

        def make(folder: FakeFolder) -> Stack:
            route = exits.enter_context(start_route("gdrive-api", folder))
            cluster = Cluster(tmp_path, postgres_database, nats_server.url, s3_server, route.env)
            settings = make_settings(
                database_url=postgres_database,
                nats_url=nats_server.url,
                s3_bucket=cluster.env["S3_BUCKET"],
                s3_endpoint_url=s3_server.endpoint_url,
                s3_access_key_id=s3_server.access_key,
                s3_secret_access_key=s3_server.secret_key,
                **route.settings,
            )
            stack = Stack(kube, cluster, route, settings, tmp_path)
            exits.callback(stack.close)
            return stack

        yield make
