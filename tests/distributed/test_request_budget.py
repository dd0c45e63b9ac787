"""One request budget for the whole installation: four worker processes and the planner,
each with a pool of threads, importing from one Drive API key never ask the source faster
than GDRIVE_REQUESTS_PER_SECOND (+ the burst) together, and the import completes.
Without the budget, the fake sees all of them (some 42 requests) within one second."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.distributed.cluster import Cluster
from tests.fakes.folder import FakeFile, FakeFolder, make_image
from tests.pipeline.routes import Route, start_route

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.nats, pytest.mark.timeout(420)]

RATE = 4
BURST = 2
# The budget times when requests leave; the fake counts when they arrive, later by a lag that
# varies with the machine's load. Lags that differ by up to LAG seconds can bring the requests
# of 1 + LAG seconds into one second at the fake: RATE x LAG more than the budget lets out.
LAG = 0.5
SEEN_AT_MOST = BURST + int(RATE * (1 + LAG))
FILES = 40
WORKERS = 4


def test_four_workers_share_one_request_budget(
    cluster_factory: Callable[[Route], Cluster],
) -> None:
    files = [FakeFile(f"p-{i}.png", make_image(40, 30, "PNG", seed=900 + i)) for i in range(FILES)]
    with start_route("gdrive-api", FakeFolder("budgeted", files)) as route:
        cluster = cluster_factory(route)
        cluster.env["GDRIVE_REQUESTS_PER_SECOND"] = str(RATE)
        cluster.env["GDRIVE_REQUESTS_BURST"] = str(BURST)
        for _ in range(WORKERS):
            cluster.start_worker(concurrency=8)
        import_id = cluster.plan(route.url)
        counts = cluster.wait_finished(import_id)
        arrivals = route.faults
    assert counts == {"done": FILES}, counts
    # The planner's listing (files.get, files.list) and every worker's download.
    assert len(arrivals.arrivals) >= FILES + 2
    assert arrivals.busiest_second() <= SEEN_AT_MOST, sorted(arrivals.arrivals)
