"""Fixtures of the distributed tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.distributed.cluster import Cluster, purge_stream
from tests.pipeline.routes import Route


@pytest.fixture
def cluster_factory(
    tmp_path: Path, postgres_database: str, nats_server: Any, s3_server: Any
) -> Iterator[Callable[[Route], Cluster]]:
    """Clusters of worker processes on the suite's PostgreSQL, NATS and S3, stopped after
    the test; the work-queue stream starts empty."""
    purge_stream(nats_server.url)
    made: list[Cluster] = []

    def make(route: Route) -> Cluster:
        cluster = Cluster(tmp_path, postgres_database, nats_server.url, s3_server, route.env)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()
