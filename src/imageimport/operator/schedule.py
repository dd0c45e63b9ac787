"""When an ImageImport's `spec.sync` wants its next sync round, as plain functions.

`spec.sync` holds either an `interval` (a duration such as "30m" or "6h", counted from the
start of the last round) or a cron `schedule` (five fields, or a macro such as "@daily", as a
Kubernetes CronJob's; in `timeZone`, UTC without one). Fire times missed while a round ran or
the operator was away collapse into one round, as a CronJob with concurrencyPolicy Forbid.
The CRD checks the same rules where the API server can; the operator checks them again, as it
cannot check a cron expression or a time zone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from imageimport.errors import ImageImportError

MIN_INTERVAL = timedelta(minutes=1)
# Go's duration syntax as the CRD's CEL rule reads it, in whole hours, minutes and seconds.
_INTERVAL = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
# Five fields, or a macro a CronJob's schedule accepts (its @every is an interval here); the
# CRD's pattern is the same.
_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_SCHEDULE = re.compile(r"@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+( +\S+){4}")


class SyncSpecError(ImageImportError):
    """spec.sync cannot be followed; the sentence says why."""


@dataclass(frozen=True)
class SyncSpec:
    interval: timedelta | None
    schedule: str | None
    time_zone: ZoneInfo
    suspend: bool
    prune: bool

    @classmethod
    def from_spec(cls, sync: Mapping[str, Any]) -> SyncSpec:
        """spec.sync checked; SyncSpecError with a sentence for status.sync.error."""
        interval, schedule = sync.get("interval"), sync.get("schedule")
        if (interval is None) == (schedule is None):
            raise SyncSpecError(
                "spec.sync needs exactly one of interval (a duration such as 6h) and "
                "schedule (a cron expression such as '0 3 * * *')."
            )
        zone = sync.get("timeZone")
        if zone is not None and schedule is None:
            raise SyncSpecError("spec.sync.timeZone applies to a schedule, not to an interval.")
        return cls(
            interval=_interval(interval) if interval is not None else None,
            schedule=_schedule(schedule) if schedule is not None else None,
            time_zone=_time_zone(zone) if zone is not None else ZoneInfo("UTC"),
            suspend=bool(sync.get("suspend", False)),
            prune=bool(sync.get("prune", False)),
        )


def next_sync_time(spec: SyncSpec, last_start: datetime, now: datetime) -> datetime:
    """The fire time the next round is for, given when the last one started (or, before the
    first, when the import was created). At or before `now` the round is due: then it is
    the latest fire time missed, however many were (they collapse into this one round)."""
    if spec.interval is not None:
        missed = (now - last_start) // spec.interval
        return last_start + max(missed, 1) * spec.interval
    assert spec.schedule is not None  # from_spec makes sure it has one of the two
    zone = spec.time_zone
    first: datetime = croniter(spec.schedule, last_start.astimezone(zone)).get_next(datetime)
    if first > now:
        return first.astimezone(UTC)
    latest: datetime = croniter(spec.schedule, now.astimezone(zone)).get_prev(datetime)
    return max(first, latest).astimezone(UTC)


def _interval(value: Any) -> timedelta:
    match = _INTERVAL.fullmatch(value) if isinstance(value, str) else None
    if not value or match is None:
        raise SyncSpecError(
            f"spec.sync.interval is {value!r}, but it must be a duration in hours, minutes "
            "and seconds, such as 30m, 6h or 1h30m."
        )
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    interval = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if interval < MIN_INTERVAL:
        raise SyncSpecError(f"spec.sync.interval is {value}, but it must be at least 1m.")
    return interval


def _schedule(value: Any) -> str:
    wrong = (
        f"spec.sync.schedule is {value!r}, but it must be a cron expression of five fields "
        "(minute hour day-of-month month day-of-week, such as '0 3 * * *') or one of "
        f"{', '.join(_MACROS)}, as a CronJob's"
    )
    if not isinstance(value, str) or _SCHEDULE.fullmatch(value) is None:
        raise SyncSpecError(wrong + ".")
    try:
        croniter(value, datetime.now(UTC)).get_next(datetime)
    except CroniterError as error:
        raise SyncSpecError(f"{wrong} ({error}).") from None
    return value


def _time_zone(value: Any) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise SyncSpecError(
            f"spec.sync.timeZone is {value!r}, but it must name a time zone of the IANA "
            "database, such as Europe/Berlin or America/New_York."
        ) from None
