"""What the gateway schedules: the heartbeat in every process, the jobs in the leader only,
the SQS poller when queued purchases are on, and the intervals SCHEDULE_INTERVALS sets."""

from __future__ import annotations

import pytest

from edgemart.services import Services
from edgemart.settings import SettingsError
from gateway.scheduler import default_schedules, first_delay, gateway_schedules
from tests.conftest import settings_for


def schedules_for(**settings: object) -> dict[str, tuple[float, bool]]:
    services = Services.from_settings(settings_for(None, **settings))
    return {s.name: (s.every_s, s.in_every_process) for s in gateway_schedules(services)}


def test_only_the_heartbeat_runs_in_every_process() -> None:
    assert schedules_for() == {
        "heartbeat": (10.0, True),
        "refresh_views": (300, False),
        "maintenance": (86_400, False),
        "score_listings": (60, False),
    }
    assert [s.name for s in default_schedules() if s.in_every_process] == ["heartbeat"]


def test_the_queue_poller_is_a_leaders_schedule_when_queued_purchases_are_on() -> None:
    found = schedules_for(purchase_queue_url="http://127.0.0.1:9/queue/orders")
    assert found["order_worker"] == (1.0, False)


def test_schedule_intervals_replace_the_named_defaults() -> None:
    found = schedules_for(
        schedule_intervals=(("score_listings", 0.5), ("heartbeat", 2.0), ("order_worker", 3.0))
    )
    assert found["score_listings"] == (0.5, False)
    assert found["heartbeat"] == (2.0, True)
    assert found["refresh_views"] == (300, False)
    assert "order_worker" not in found  # named, but queued purchases are off


def test_an_interval_for_no_schedule_is_an_error_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^SCHEDULE_INTERVALS names refresh_view, which"):
        schedules_for(schedule_intervals=(("refresh_view", 60.0),))


@pytest.mark.parametrize(
    ("since", "delay"),
    [
        (None, 60.0),  # never run (or unknown): one interval
        (0.0, 60.0),  # just started elsewhere
        (45.0, 15.0),  # due in 15 s
        (60.0, 0.0),
        (3600.0, 0.0),  # overdue: at once
        (-5.0, 60.0),  # a start dated ahead (a clock that went back): never more than one
    ],
)
def test_a_new_leader_runs_a_job_when_its_interval_since_the_fleets_last_start_is_up(
    since: float | None, delay: float
) -> None:
    assert first_delay(60.0, since) == delay
