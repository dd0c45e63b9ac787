"""Drive files Google flagged as malware or spam (403 cannotDownloadAbusiveFile on alt=media):
skipped with that reason, unless DRIVE_ACKNOWLEDGE_ABUSE acknowledges the risk, which is then
acknowledged for those files only (Drive refuses acknowledgeAbuse=true on any other)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from imageimport.db.models import ImportItem
from imageimport.runtime import Runtime
from imageimport.services.embedded import Snapshot, run_import
from imageimport.settings import Settings
from tests.fakes.folder import FakeFile, FakeFolder, make_image
from tests.fakes.gdrive import make_gdrive_app
from tests.fakes.server import RunningServer
from tests.sources.drive import drive_of

KEY = "drive-key-abuse-test"
FLAGGED = FakeFile("flagged.jpg", make_image(120, 80, "JPEG", seed=61))
PLAIN = [FakeFile(f"plain-{i}.jpg", make_image(50, 40, "JPEG", seed=62 + i)) for i in range(3)]
FOLDER = FakeFolder("flagged-inside", [FLAGGED, *PLAIN])


def run(
    make_settings: Callable[..., Settings], owner_only: bool = False, **settings: object
) -> tuple[Snapshot, dict[str, ImportItem], list[str]]:
    """The import's result, its items by name, and the ids downloaded with acknowledgeAbuse.
    `owner_only`: Drive refuses the flagged file even with the risk acknowledged."""
    app = make_gdrive_app(
        [FOLDER],
        api_key=KEY,
        abusive={FLAGGED.id},
        owner_only={FLAGGED.id} if owner_only else (),
    )
    with RunningServer(app) as server:
        runtime = Runtime(
            make_settings(
                google_api_key=KEY,
                gdrive_api_url=server.url,
                gdrive_web_url=server.url,
                gdrive_download_url=server.url,
                **settings,
            )
        )
        try:
            result = run_import(
                runtime, f"https://drive.google.com/drive/folders/{FOLDER.id}", concurrency=2
            )
            with runtime.session() as session:
                items = {
                    i.name: i
                    for i in session.scalars(
                        select(ImportItem).where(ImportItem.import_id == result.import_id)
                    )
                }
        finally:
            runtime.close()
        acknowledged = [
            r.path.rsplit("/", 1)[-1]
            for r in drive_of(server).requests
            if r.params.get("acknowledgeAbuse") == "true"
        ]
    return result, items, acknowledged


def test_a_flagged_file_is_skipped_with_the_reason(make_settings: Callable[..., Settings]) -> None:
    result, items, acknowledged = run(make_settings)
    assert result.state == "succeeded", result.error
    assert (result.counters.imported, result.counters.skipped, result.counters.failed) == (3, 1, 0)
    assert items["flagged.jpg"].state == "skipped"
    assert items["flagged.jpg"].reason == (
        "'flagged.jpg' was skipped: Google Drive flagged it as malware or spam "
        "(cannotDownloadAbusiveFile) and serves it only to whoever acknowledges the risk; "
        "DRIVE_ACKNOWLEDGE_ABUSE=true does so."
    )
    assert all(items[f.name].state == "done" for f in PLAIN)
    assert acknowledged == []


def test_acknowledging_the_risk_downloads_it_and_leaves_the_other_files_alone(
    make_settings: Callable[..., Settings],
) -> None:
    result, items, acknowledged = run(make_settings, drive_acknowledge_abuse=True)
    assert result.state == "succeeded", result.error
    assert {name: item.state for name, item in items.items()} == {
        f.name: "done" for f in [FLAGGED, *PLAIN]
    }
    # Only the flagged file was asked for with acknowledgeAbuse=true: the fake, like Drive,
    # refuses it (invalidAbuseAcknowledgment) on the plain ones, which were all imported.
    assert acknowledged == [FLAGGED.id]


def test_a_flagged_file_refused_even_when_acknowledged_stays_skipped(
    make_settings: Callable[..., Settings],
) -> None:
    result, items, acknowledged = run(make_settings, owner_only=True, drive_acknowledge_abuse=True)
    assert result.state == "succeeded", result.error
    assert (result.counters.imported, result.counters.skipped) == (3, 1)
    assert items["flagged.jpg"].state == "skipped"
    assert items["flagged.jpg"].reason == (
        "'flagged.jpg' was skipped: Google Drive flagged it as malware or spam "
        "(cannotDownloadAbusiveFile) and refused it even with the risk acknowledged "
        "(DRIVE_ACKNOWLEDGE_ABUSE); Google serves a flagged file only to its owner."
    )
    assert acknowledged == [FLAGGED.id]
