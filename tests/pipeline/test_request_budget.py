"""Every request of an import, through each route's HTTP stack (httplib2 and httpx for the
Drive API, httpx for Drive's pages, the Dropbox SDK's requests session), waits for its slot
in the provider's request budget: the fake never sees more than the rate plus the burst in
any second, and the import completes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from imageimport.runtime import Runtime
from imageimport.services.embedded import run_import
from imageimport.settings import Settings
from tests.fakes.folder import FakeFile, FakeFolder, make_image
from tests.pipeline.routes import start_route

RATE = 4
BURST = 2
FILES = 16


@pytest.mark.parametrize("route_name", ["gdrive-api", "gdrive-public", "dropbox-api"])
def test_an_import_never_asks_a_source_faster_than_its_budget(
    route_name: str, make_settings: Callable[..., Settings]
) -> None:
    files = [FakeFile(f"p-{i}.png", make_image(40, 30, "PNG", seed=700 + i)) for i in range(FILES)]
    folder = FakeFolder(f"budgeted-{route_name}", files)
    provider = route_name.split("-")[0]
    with start_route(route_name, folder) as route:
        runtime = Runtime(
            make_settings(
                concurrency=8,
                **{f"{provider}_requests_per_second": RATE, f"{provider}_requests_burst": BURST},
                **route.settings,
            )
        )
        try:
            result = run_import(runtime, route.url, concurrency=8)
        finally:
            runtime.close()
        arrivals = route.server.faults
    assert result.state == "succeeded", result.error
    assert len(arrivals.arrivals) > FILES  # the listing's requests and every download
    assert arrivals.busiest_second() <= RATE + BURST, sorted(arrivals.arrivals)
