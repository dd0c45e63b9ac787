"""When spec.sync wants its next round: intervals from the last round's start, cron schedules
(in a time zone), missed fire times collapsing into one round, and the sentences for a
spec.sync that cannot be followed. The CRD's patterns agree with the operator's parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest

from imageimport.operator.schedule import SyncSpec, SyncSpecError, next_sync_time
from tests.k8s.manifests import crd_version_schema, imageimport_crd

T0 = datetime(2026, 1, 5, 10, 0, 7, tzinfo=UTC)  # when the last round started


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def sync(**fields: Any) -> SyncSpec:
    return SyncSpec.from_spec(fields)


def test_an_interval_counts_from_the_last_rounds_start() -> None:
    every_6h = sync(interval="6h")
    assert every_6h.interval == timedelta(hours=6)
    assert (every_6h.suspend, every_6h.prune) == (False, False)
    assert next_sync_time(every_6h, T0, T0 + timedelta(minutes=5)) == T0 + timedelta(hours=6)
    assert next_sync_time(sync(interval="1h30m"), T0, T0) == T0 + timedelta(minutes=90)
    assert next_sync_time(sync(interval="90s"), T0, T0) == T0 + timedelta(seconds=90)
    # Due exactly then.
    assert next_sync_time(every_6h, T0, T0 + timedelta(hours=6)) == T0 + timedelta(hours=6)


def test_missed_intervals_collapse_into_one_round() -> None:
    hourly = sync(interval="1h")
    # The operator was away for 5.5 hours: one round is due, for the latest time missed...
    now = T0 + timedelta(hours=5, minutes=30)
    due = next_sync_time(hourly, T0, now)
    assert due == T0 + timedelta(hours=5) and due <= now
    # ...and once it has started, the next one is an interval after it, not the other four.
    assert next_sync_time(hourly, now, now + timedelta(seconds=1)) == now + timedelta(hours=1)


def test_a_schedule_fires_at_its_cron_times() -> None:
    nightly = sync(schedule="0 3 * * *")
    assert nightly.interval is None
    assert next_sync_time(nightly, T0, T0) == at("2026-01-06T03:00:00")
    # Strictly after the last start: a round started at a fire time is not due again.
    assert next_sync_time(nightly, at("2026-01-06T03:00:00"), at("2026-01-06T03:00:30")) == (
        at("2026-01-07T03:00:00")
    )
    weekdays = sync(schedule="30 8 * * 1-5")
    friday = at("2026-01-09T09:00:00")
    assert next_sync_time(weekdays, friday, friday) == at("2026-01-12T08:30:00")  # Monday
    assert next_sync_time(sync(schedule="@hourly"), T0, T0) == at("2026-01-05T11:00:00")


def test_missed_fire_times_collapse_into_one_round() -> None:
    hourly = sync(schedule="0 * * * *")
    # A round started at 10:00:07 ran (or the operator was away) until 13:30: the fires of
    # 11:00, 12:00 and 13:00 make one round, due now...
    now = at("2026-01-05T13:30:00")
    due = next_sync_time(hourly, T0, now)
    assert due == at("2026-01-05T13:00:00") and due <= now
    # ...and once it has started, the next is the next fire time after its start.
    assert next_sync_time(hourly, now, now) == at("2026-01-05T14:00:00")
    # Exactly at a fire time, that fire is the one due.
    assert next_sync_time(hourly, T0, at("2026-01-05T11:00:00")) == at("2026-01-05T11:00:00")


def test_a_schedule_in_a_time_zone_follows_its_daylight_saving_time() -> None:
    new_york = sync(schedule="0 9 * * *", timeZone="America/New_York")
    # 9:00 in New York is 14:00 UTC in winter; the clocks move forward on 2026-03-08.
    start = at("2026-03-07T12:00:00")
    first = next_sync_time(new_york, start, start)
    assert first == at("2026-03-07T14:00:00")
    assert next_sync_time(new_york, first, first) == at("2026-03-08T13:00:00")
    # Without a time zone, UTC.
    assert next_sync_time(sync(schedule="0 9 * * *"), start, start) == at("2026-03-08T09:00:00")


def test_suspend_and_prune_are_read() -> None:
    spec = sync(interval="1h", suspend=True, prune=True)
    assert (spec.suspend, spec.prune) == (True, True)


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        ({}, "spec.sync needs exactly one of interval (a duration such as 6h) and schedule"),
        ({"interval": "1h", "schedule": "@daily"}, "spec.sync needs exactly one of interval"),
        ({"interval": "30s"}, "spec.sync.interval is 30s, but it must be at least 1m."),
        ({"interval": "0m"}, "spec.sync.interval is 0m, but it must be at least 1m."),
        ({"interval": "6 hours"}, "spec.sync.interval is '6 hours', but it must be a duration"),
        ({"interval": "1d"}, "spec.sync.interval is '1d', but it must be a duration"),
        ({"interval": ""}, "spec.sync.interval is '', but it must be a duration"),
        ({"interval": 3600}, "spec.sync.interval is 3600, but it must be a duration"),
        ({"schedule": "61 * * * *"}, "spec.sync.schedule is '61 * * * *', but it must be a cron"),
        ({"schedule": "* * * *"}, "spec.sync.schedule is '* * * *', but it must be a cron"),
        ({"schedule": "0 * * * * *"}, "spec.sync.schedule is '0 * * * * *', but it must be"),
        ({"schedule": "0 0 30 2 *"}, "spec.sync.schedule is '0 0 30 2 *', but it must be"),
        ({"schedule": "@every 5m"}, "spec.sync.schedule is '@every 5m', but it must be"),
        (
            {"schedule": "@daily", "timeZone": "Mars/Olympus"},
            "spec.sync.timeZone is 'Mars/Olympus', but it must name a time zone of the IANA",
        ),
        (
            {"interval": "1h", "timeZone": "Europe/Berlin"},
            "spec.sync.timeZone applies to a schedule, not to an interval.",
        ),
    ],
)
def test_a_sync_that_cannot_be_followed_says_why(fields: dict[str, Any], sentence: str) -> None:
    with pytest.raises(SyncSpecError) as raised:
        SyncSpec.from_spec(fields)
    assert str(raised.value).startswith(sentence)
    assert str(raised.value).endswith(".")


# -- the CRD agrees ------------------------------------------------------------------------------


def sync_schema() -> dict[str, Any]:
    spec = crd_version_schema(imageimport_crd(), "v1alpha1")["properties"]["spec"]
    schema: dict[str, Any] = spec["properties"]["sync"]
    return schema


@pytest.mark.parametrize("interval", ["1m", "30m", "6h", "1h30m", "90s", "2h0m5s", "168h"])
def test_intervals_the_operator_follows_pass_the_crd(interval: str) -> None:
    SyncSpec.from_spec({"interval": interval})
    jsonschema.validate(interval, sync_schema()["properties"]["interval"])


@pytest.mark.parametrize("interval", ["", "6 hours", "1d", "h", "1.5h", "-1h", "1m1h"])
def test_intervals_the_crd_refuses_the_operator_refuses(interval: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(interval, sync_schema()["properties"]["interval"])
    with pytest.raises(SyncSpecError):
        SyncSpec.from_spec({"interval": interval})


@pytest.mark.parametrize(
    "schedule", ["0 3 * * *", "*/15 * * * *", "30 8 * * 1-5", "0 0 1 */3 *", "@daily", "@hourly"]
)
def test_schedules_the_operator_follows_pass_the_crd(schedule: str) -> None:
    SyncSpec.from_spec({"schedule": schedule})
    jsonschema.validate(schedule, sync_schema()["properties"]["schedule"])


@pytest.mark.parametrize("schedule", ["", "* * * *", "0 * * * * *", "@every 1h", " 0 3 * * *"])
def test_schedules_the_crd_refuses_the_operator_refuses(schedule: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(schedule, sync_schema()["properties"]["schedule"])
    with pytest.raises(SyncSpecError):
        SyncSpec.from_spec({"schedule": schedule})


def test_the_crd_states_the_rules_it_cannot_express_as_a_schema_in_cel() -> None:
    """The API server evaluates these (nothing here evaluates CEL): the same rules as
    SyncSpec.from_spec."""
    rules = {r["rule"]: r["message"] for r in sync_schema()["x-kubernetes-validations"]}
    assert rules == {
        "has(self.interval) != has(self.schedule)": (
            "spec.sync needs exactly one of interval and schedule"
        ),
        "!has(self.interval) || duration(self.interval) >= duration('1m')": (
            "spec.sync.interval must be at least 1m"
        ),
        "!has(self.timeZone) || has(self.schedule)": (
            "spec.sync.timeZone applies to a schedule, not to an interval"
        ),
    }
    # The minimum of the CEL rule is the operator's.
    with pytest.raises(SyncSpecError):
        SyncSpec.from_spec({"interval": "59s"})
    SyncSpec.from_spec({"interval": "1m"})
