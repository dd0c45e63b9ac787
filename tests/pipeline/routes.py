"""Start the fake service behind each of the four import routes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.fakes.dropbox import make_dropbox_app, shared_link
from tests.fakes.folder import FakeFolder
from tests.fakes.gdrive import make_gdrive_app
from tests.fakes.server import FaultPlan, RunningServer

ROUTES = ("gdrive-api", "gdrive-public", "dropbox-api", "dropbox-zip")
API_KEY = "drive-key-do-not-leak"
DROPBOX_CREDENTIALS = {
    "dropbox_app_key": "app-key",
    "dropbox_app_secret": "app-secret-do-not-leak",
    "dropbox_refresh_token": "refresh-token-do-not-leak",
}


@dataclass
class Route:
    name: str
    url: str  # the link a user pastes
    settings: dict[str, Any]  # Settings keyword arguments that point at the fake
    server: RunningServer
    faults: FaultPlan

    @property
    def env(self) -> dict[str, str]:
        return {key.upper(): str(value) for key, value in self.settings.items()}


@contextmanager
def start_route(
    name: str,
    folder: FakeFolder,
    faults: FaultPlan | None = None,
    corrupt: Mapping[str, int] | None = None,
) -> Iterator[Route]:
    """`corrupt`: file ids -> how many of their downloads answer wrong bytes (Corruption)."""
    faults = faults or FaultPlan()
    if name.startswith("gdrive"):
        app = make_gdrive_app(
            [folder], api_key=API_KEY, large_file_threshold=256 * 1024, corrupt=corrupt
        )
        with RunningServer(app, faults) as server:
            settings: dict[str, Any] = {
                "gdrive_api_url": server.url,
                "gdrive_web_url": server.url,
                "gdrive_download_url": server.url,
            }
            if name == "gdrive-api":
                settings["google_api_key"] = API_KEY
            url = f"https://drive.google.com/drive/folders/{folder.id}?usp=sharing"
            yield Route(name, url, settings, server, faults)
        return
    app = make_dropbox_app([folder], *DROPBOX_CREDENTIALS.values(), faults=faults, corrupt=corrupt)
    with RunningServer(app) as server:
        settings = {
            "dropbox_api_url": server.url,
            "dropbox_content_url": server.url,
            "dropbox_web_url": server.url,
        }
        if name == "dropbox-api":
            settings.update(DROPBOX_CREDENTIALS)
        yield Route(name, shared_link("www.dropbox.com", folder), settings, server, faults)
