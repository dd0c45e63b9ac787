"""All configuration, read from the environment (and `.env`) in one place."""

from __future__ import annotations

import ipaddress
import re
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# full: every image is decoded, verified and thumbnailed while it is imported. lean: only its
# headers are read then (format, size, EXIF); the thumbnail is made later (pipeline/lean.py).
ImportMode = Literal["full", "lean"]
IMPORT_MODES: tuple[ImportMode, ...] = ("full", "lean")


class Settings(BaseSettings):
    # Errors name the variable, never echo its value: values may hold credentials.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # Where the embedded default keeps its SQLite file and local object store.
    data_dir: Path = Path("data")

    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; SQLite file under DATA_DIR when unset."
    )

    # Object store: S3 when S3_BUCKET is set, a local folder otherwise.
    objects_dir: Path | None = None
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = ""
    s3_create_bucket: bool = True
    s3_multipart_threshold_bytes: int = 16 * 1024 * 1024

    # Queue: NATS JetStream when NATS_URL is set, in-process otherwise.
    nats_url: str | None = None
    nats_ack_wait_seconds: float = Field(default=60.0, ge=5)
    # How long the first connection may take; once connected, outages are waited out.
    nats_connect_timeout_seconds: float = Field(default=10.0, gt=0)

    # Source credentials; each one switches its provider from the public route to the API.
    google_api_key: SecretStr | None = None
    dropbox_app_key: SecretStr | None = None
    dropbox_app_secret: SecretStr | None = None
    dropbox_refresh_token: SecretStr | None = None
    # Download Drive files Google flagged as malware or spam (cannotDownloadAbusiveFile) by
    # acknowledging the risk (acknowledgeAbuse=true); otherwise they are skipped, with a reason.
    drive_acknowledge_abuse: bool = False
    # The request budget each provider's hosts get from the whole installation, per credential
    # (sources/budget.py): at most REQUESTS_PER_SECOND on average, BURST of them at once after
    # a quiet spell. 0: no limit.
    gdrive_requests_per_second: float = Field(default=0.0, ge=0)
    gdrive_requests_burst: int = Field(default=1, ge=1)
    dropbox_requests_per_second: float = Field(default=0.0, ge=0)
    dropbox_requests_burst: int = Field(default=1, ge=1)

    # Every external host a source talks to; tests point them at the fakes.
    gdrive_api_url: str = "https://www.googleapis.com"
    gdrive_web_url: str = "https://drive.google.com"
    gdrive_download_url: str = "https://drive.usercontent.google.com"
    dropbox_api_url: str = "https://api.dropboxapi.com"
    dropbox_content_url: str = "https://content.dropboxapi.com"
    dropbox_web_url: str = "https://www.dropbox.com"

    # Limits on what strangers can make us do.
    max_file_size_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=100_000_000, gt=0)
    # The decoded images one process holds at once: each decode first reserves an upper bound
    # of what it needs from this budget (pipeline/decode_budget.py). With it, a process stays
    # under pipeline/memory.py's bound: a baseline + this + CONCURRENCY x per-file buffers.
    decode_memory_bytes: int = Field(default=1024**3, ge=32 * 1024**2)
    zip_max_total_bytes: int = Field(default=20 * 1024**3, gt=0)
    zip_max_entries: int = Field(default=200_000, gt=0)
    zip_max_ratio: int = Field(default=200, gt=0)
    # What an open Dropbox ZIP costs a process. Its central directory is read from disk a
    # record at a time, never held, and refused past this size: enough for ZIP_MAX_ENTRIES
    # files with 600-byte paths (real ones are under 260 characters). Each file costs the
    # open archive's index a bounded few hundred bytes, and a process keeps at most this many
    # archives open (pipeline/memory.py counts both; sources/dropbox/open_archives.py).
    zip_max_index_bytes: int = Field(default=128 * 1024**2, gt=0)
    zip_max_open_archives: int = Field(default=2, ge=1)

    # Listing limits: what listing one import may cost, whatever the folder (or a source that
    # answers the same page token forever) does. A 100,000-image folder stays far below them.
    listing_max_files: int = Field(default=500_000, ge=1)
    listing_max_folders: int = Field(default=20_000, ge=1)
    listing_max_pages: int = Field(default=50_000, ge=1)
    listing_max_seconds: float = Field(default=4 * 3600.0, gt=0)

    # Services.
    mode: str = Field(
        default="standalone",
        pattern="^(standalone|kubernetes)$",
        validation_alias="IMAGEIMPORT_MODE",
        description="kubernetes: the API creates ImageImport resources instead of planning.",
    )
    api_token: SecretStr | None = None
    cors_origins: list[str] = Field(default_factory=list)
    health_port: int = Field(default=8081, ge=1, le=65535)

    # Who may use the API when it is reachable (SECURITY.md, "Secure by default").
    # Host names the API and page answer to; a page on another site that rebinds its own DNS
    # name to our address sends that name and is refused. "*.example.com" for subdomains.
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1"], min_length=1, max_length=100
    )
    # Without API_TOKEN: true lets anyone who can reach the API make changes; unset leaves it
    # to the command (only `serve` on a loopback address allows it), false never allows it.
    allow_anonymous: bool | None = None

    # Behaviour.
    # How imports run unless one asks otherwise (its options' "mode").
    import_mode: ImportMode = "full"
    concurrency: int = Field(default=8, ge=1, le=256)
    thumbnail_size: int = Field(default=400, ge=16, le=4096)
    http_timeout_seconds: float = Field(default=60.0, gt=0)
    source_retry_attempts: int = Field(default=6, ge=1)
    source_retry_max_wait_seconds: float = Field(default=60.0, gt=0)
    max_deliver: int = Field(default=10, ge=1)

    # Crash leftovers. Temporary files of processes that are gone are removed at once; what
    # no process can be checked for (an S3 multipart upload, a temporary file written by an
    # older version or on a filesystem without locks) once it is this old.
    temp_max_age_seconds: float = Field(default=86400.0, ge=10)

    # Time: how long one file may hold a slot, how the slots are shared between imports, and
    # how long a process takes to stop. A file's body must arrive within the deadline and
    # never slow below the minimum speed for the whole low-speed window (0 turns that off).
    download_deadline_seconds: float = Field(default=3600.0, gt=0)
    download_min_bytes_per_second: int = Field(default=10 * 1024, ge=0)
    download_low_speed_seconds: float = Field(default=60.0, gt=0)
    # The largest fraction of a process's CONCURRENCY slots one import's files may hold.
    import_concurrency_share: float = Field(default=0.75, gt=0, le=1)
    # After SIGTERM: time for the files in hand to finish before downloads are interrupted.
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)

    @field_validator(
        "gdrive_api_url",
        "gdrive_web_url",
        "gdrive_download_url",
        "dropbox_api_url",
        "dropbox_content_url",
        "dropbox_web_url",
    )
    @classmethod
    def _endpoint_is_http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host")
        return value.rstrip("/")

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_are_names(cls, hosts: list[str]) -> list[str]:
        normalised = []
        for number, host in enumerate(hosts, 1):
            pattern = normalise_host_pattern(host)
            if pattern is None:
                raise ValueError(
                    f"entry {number} is not a host name or IP address (without a port), "
                    "'*.example.com' or '*'"
                )
            normalised.append(pattern)
        return normalised

    @field_validator("allow_anonymous", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # As compose passes a variable the shell does not set: `${ALLOW_ANONYMOUS:-}`.
        return None if value == "" else value

    @property
    def anonymous_writes(self) -> bool:
        """Whether requests without a token may change things: never once API_TOKEN is set
        (an empty API_TOKEN, as compose passes an unset one, is no token)."""
        return not secret(self.api_token) and self.allow_anonymous is True

    @cached_property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'imageimport.db').as_posix()}"

    @cached_property
    def effective_objects_dir(self) -> Path:
        return self.objects_dir or self.data_dir / "objects"

    @property
    def source_endpoints(self) -> list[str]:
        return [
            self.gdrive_api_url,
            self.gdrive_web_url,
            self.gdrive_download_url,
            self.dropbox_api_url,
            self.dropbox_content_url,
            self.dropbox_web_url,
        ]


def normalise_host_pattern(pattern: str) -> str | None:
    """An ALLOWED_HOSTS entry in the form Host headers are compared with (lower case, IPv6
    compressed without brackets, no trailing dot), or None if it is none of a host name, an
    IP address, "*.domain" (its subdomains) or "*" (any host)."""
    host = pattern.strip().lower().removesuffix(".")
    if host == "*":
        return host
    name = host.removeprefix("*.")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return host if _HOST_NAME.fullmatch(name) else None
    return None if host.startswith("*.") else address.compressed


# Letters, digits, hyphens and underscores in dot-separated labels (as DNS names are used).
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*"
)


def secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def redact_url(url: str) -> str:
    """`url` fit for a message or a log: user name and password (or token) replaced by ***."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
