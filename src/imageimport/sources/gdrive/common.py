"""What the two Drive routes (`api`, `public`) share: Drive's types, and what Drive's error
answers mean, whether a folder was being listed or a file downloaded, by either route."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from imageimport.errors import (
    ImageImportError,
    ItemError,
    ItemSkipped,
    SourceUnavailable,
    TransientError,
)
from imageimport.settings import Settings
from imageimport.sources.budget import RequestBudget, SlotBook
from imageimport.sources.http import TRANSIENT_STATUS, GiveUpNow, parse_retry_after

PROVIDER = "gdrive"
FOLDER_MIME: Final = "application/vnd.google-apps.folder"
SHORTCUT_MIME: Final = "application/vnd.google-apps.shortcut"
GOOGLE_APPS_PREFIX: Final = "application/vnd.google-apps."
# Drive answers 403 (not 429) when a per-user or per-project rate is exceeded.
_RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "sharingRateLimitExceeded"}
_QUOTA_REASONS = {"downloadQuotaExceeded", "dailyLimitExceeded", "quotaExceeded"}
_NOT_DOWNLOADABLE_REASONS = {"fileNotDownloadable"}
# A file Drive flagged as malware or spam: its bytes come only with acknowledgeAbuse=true.
ABUSIVE_REASON = "cannotDownloadAbusiveFile"
# Drive's quotas reset in hours: the pipeline tries such an item again no sooner than this.
QUOTA_RETRY_AFTER = 3600.0


def drive_budget(settings: Settings, slots: SlotBook, key: str | None) -> RequestBudget:
    """The budget of requests to Google Drive made with this API key (None: without one)."""
    return RequestBudget.of(
        slots, PROVIDER, key, settings.gdrive_requests_per_second, settings.gdrive_requests_burst
    )


def is_google_apps_type(mime_type: str | None) -> bool:
    """Docs, Sheets, folders, shortcuts...: Drive items that have no bytes to download."""
    return mime_type is not None and mime_type.startswith(GOOGLE_APPS_PREFIX)


@dataclass(frozen=True)
class DriveAnswer:
    """An error answer of Google Drive, and what Google says of it. The API says it in a
    JSON error (a reason and a message). Drive's web pages, which the public route asks
    without a key, say nothing of the kind (`page`): there 401 and 410 mean "not shared",
    as 403 and 404 do, and the refusals carry nothing but their status."""

    status: int
    retry_after: str | None = None
    reason: str = ""
    message: str = ""
    page: bool = False

    @classmethod
    def from_api(cls, status: int, body: bytes, retry_after: str | None, key: str) -> DriveAnswer:
        """The API's error answer, its message cleaned of the key (Google may echo it)."""
        reason, message = _parse_api_error(body)
        message = message.replace(key, "[key]") if key else message
        return cls(status, retry_after, reason, message)

    @property
    def key_problem(self) -> str | None:
        """A sentence when the API key itself is the problem (the same for every request)."""
        text = self.message.lower()
        if self.status == 400 and ("api key" in text or "API_KEY" in self.reason):
            return "The Google API key in GOOGLE_API_KEY is not valid: Google rejects it."
        if self.reason in ("accessNotConfigured", "SERVICE_DISABLED"):
            return (
                "The Google Drive API is not enabled for the Google Cloud project of the "
                "configured API key (GOOGLE_API_KEY); enable it in the Cloud console."
            )
        if self.status == 403 and ("blocked" in text or self.reason.startswith("API_KEY_")):
            return (
                "The configured Google API key (GOOGLE_API_KEY) is not allowed to call the "
                "Google Drive API (check the key's API restrictions)."
            )
        if self.status in (401, 403) and "missing a valid api key" in text:
            return "Google did not accept the configured API key (GOOGLE_API_KEY)."
        return None

    @property
    def gone(self) -> bool:
        """The item was deleted, or is no longer shared."""
        return self.status in ((404, 410) if self.page else (404,))

    @property
    def status_and_details(self) -> str:
        """`HTTP 500: <Google's message>`; a web page's status alone."""
        if self.page:
            return f"HTTP {self.status}"
        return f"HTTP {self.status}: {self.message or self.reason or 'no details'}"


def _parse_api_error(body: bytes) -> tuple[str, str]:
    """(reason, message) from Google's JSON error body; empty strings when it has none."""
    try:
        error = json.loads(body.decode("utf-8", "replace")).get("error", {})
    except (ValueError, AttributeError):
        return "", ""
    if not isinstance(error, dict):
        return "", str(error)[:300]
    reason = ""
    errors = error.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        reason = str(errors[0].get("reason") or "")
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("reason") and not reason:
            reason = str(detail["reason"])
    return reason, str(error.get("message") or "")[:300]


def classify(answer: DriveAnswer, what: str) -> TransientError | GiveUpNow | None:
    """What an error answer means when waiting may get past it: retry now (TransientError,
    honouring Retry-After), or hours later (a quota: GiveUpNow). None when it is a failure,
    worded for what was asked by `folder_unavailable` or `file_unavailable`."""
    status, reason = answer.status, answer.reason
    if status in TRANSIENT_STATUS or reason in _RATE_LIMIT_REASONS:
        return TransientError(
            f"{what}: Google Drive answered {status}{f' ({reason})' if reason else ''}; "
            "will retry.",
            retry_after=parse_retry_after(answer.retry_after),
        )
    if reason in _QUOTA_REASONS:
        return quota_used_up(
            f"{what}: Google Drive's quota is used up ({answer.message or reason}); "
            "try again later."
        )
    return None


def quota_used_up(sentence: str) -> GiveUpNow:
    """A quota that resets in hours: no quick retries, the pipeline retries the item later."""
    return GiveUpNow(TransientError(sentence, retry_after=QUOTA_RETRY_AFTER))


def folder_unavailable(answer: DriveAnswer, shown: str) -> SourceUnavailable:
    """A folder that could not be listed (`shown` names it: its link, or its path)."""
    if answer.key_problem:
        return SourceUnavailable(answer.key_problem)
    if answer.status in ((401, 403, 404, 410) if answer.page else (403, 404)):
        return SourceUnavailable(
            f"The Google Drive folder {shown} was not found or is not shared with "
            "'Anyone with the link'."
        )
    verb = "show" if answer.page else "list"
    return SourceUnavailable(
        f"Google Drive refused to {verb} the folder {shown} ({answer.status_and_details})."
    )


def file_unavailable(
    answer: DriveAnswer, path: str, acknowledged_abuse: bool = False
) -> ImageImportError:
    """A file that could not be downloaded (`path` is where it was listed; `acknowledged_abuse`
    when the request acknowledged the risk of a file flagged as abusive)."""
    if answer.key_problem:
        return SourceUnavailable(answer.key_problem)
    if answer.gone:
        return file_gone(path)
    if answer.reason == ABUSIVE_REASON and acknowledged_abuse:
        return ItemSkipped(
            f"{path!r} was skipped: Google Drive flagged it as malware or spam "
            f"({ABUSIVE_REASON}) and refused it even with the risk acknowledged "
            "(DRIVE_ACKNOWLEDGE_ABUSE); Google serves a flagged file only to its owner."
        )
    if answer.reason == ABUSIVE_REASON:
        return ItemSkipped(
            f"{path!r} was skipped: Google Drive flagged it as malware or spam "
            f"({ABUSIVE_REASON}) and serves it only to whoever acknowledges the risk; "
            "DRIVE_ACKNOWLEDGE_ABUSE=true does so."
        )
    if answer.reason in _NOT_DOWNLOADABLE_REASONS:
        return ItemError(
            f"{path!r} cannot be downloaded from Google Drive ({answer.message or answer.reason})."
        )
    return ItemError(
        f"{path!r} could not be downloaded from Google Drive ({answer.status_and_details})."
    )


def file_gone(path: str) -> ItemError:
    return ItemError(
        f"{path!r} could not be downloaded: it was deleted from Google Drive or is no longer "
        "shared."
    )
