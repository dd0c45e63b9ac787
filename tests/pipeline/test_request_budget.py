"""Every request of an import, through each route's HTTP stack (httplib2 and httpx for the
Drive API, httpx for Drive's pages, the Dropbox SDK's requests session), waits for its slot
in the provider's request budget: the fake never sees more than the rate plus the burst in
any second, and the import completes. Waiting for a slot is never taken for a slow download."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from imageimport.pipeline.download import Limits, download
from imageimport.runtime import Runtime
from imageimport.services.embedded import run_import
from imageimport.settings import Settings
from imageimport.sources.budget import MemorySlotBook
from imageimport.sources.registry import open_source
from tests.fakes.folder import FakeFile, FakeFolder, make_image
from tests.pipeline.routes import start_route

RATE = 4
BURST = 2
# The budget times when requests leave; the fake counts when they arrive, later by a lag that
# varies with the machine's load. Lags that differ by up to LAG seconds can bring the requests
# of 1 + LAG seconds into one second at the fake: RATE x LAG more than the budget lets out.
LAG = 0.5
SEEN_AT_MOST = BURST + int(RATE * (1 + LAG))
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
    assert arrivals.busiest_second() <= SEEN_AT_MOST, sorted(arrivals.arrivals)


def test_asking_for_a_checksum_again_waits_for_its_slot_without_being_taken_for_slowness(
    make_settings: Callable[..., Settings],
) -> None:
    photo = FakeFile("photo.jpg", make_image(80, 60, "JPEG", seed=61))
    with start_route("gdrive-api", FakeFolder("slow budget", [photo])) as route:
        settings = make_settings(
            gdrive_requests_per_second=0.5,  # a slot every 2 s
            download_min_bytes_per_second=1,
            download_low_speed_seconds=0.5,
            **route.settings,
        )
        with open_source(route.url, settings, MemorySlotBook()) as source:
            listed = next(iter(source.list()))
            # Changed since it was listed: the download's checksum is asked for again
            # (files.get), which waits 2 s for its slot after the body has arrived.
            photo.content = make_image(80, 60, "JPEG", seed=62)
            fetched = download(source, listed, Limits.of(settings))
            fetched.file.close()
    drive = route.server.app.app.state.drive  # type: ignore[attr-defined]
    asked = [r.params.get("fields") for r in drive.calls(f"/drive/v3/files/{photo.id}")]
    assert asked[-1] == "md5Checksum"  # the checksum was asked for again
    assert fetched.sha256 == hashlib.sha256(photo.content).hexdigest()
