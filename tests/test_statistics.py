"""Frozen history → long-term statistics: sums without gaps, double counting or negative bars."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from homeassistant.components.recorder import Recorder
from homeassistant.components.recorder.statistics import statistics_during_period
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.recorder.common import async_wait_recording_done

from custom_components.meter_cloud.api import HistoryPoint, IotMeterClient
from custom_components.meter_cloud.const import DOMAIN
from custom_components.meter_cloud.statistics import async_import_history, build_rows, statistic_id
from simulator.iotmeter import IotMeterSimulator

from .conftest import iot_data


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(recorder_mock: Recorder, enable_custom_integrations: None) -> None:
    """The recorder must start before Home Assistant: override the suite's autouse fixture to order them."""


def point(day: int, value: str) -> HistoryPoint:
    """A frozen reading at midnight UTC of a November day."""
    return HistoryPoint(datetime(2026, 11, day, tzinfo=UTC), Decimal(value))


def test_rows_continue_the_baseline_and_never_go_negative() -> None:
    """Sums continue from the stored baseline; a lower reading (replaced meter) adds nothing; a gap adds all."""
    rows = build_rows(
        [point(1, "100"), point(2, "101.5"), point(5, "104"), point(6, "3"), point(7, "4.25")],
        baseline_state=Decimal("99"),
        baseline_sum=Decimal("10"),
    )
    assert [r["sum"] for r in rows] == [11.0, 12.5, 15.0, 15.0, 16.25]
    assert [r["state"] for r in rows] == [100.0, 101.5, 104.0, 3.0, 4.25]
    # A reading frozen at midnight closes the hour before it: the day's use lands on that day.
    assert rows[0]["start"] == datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
    first = build_rows([point(1, "100"), point(2, "102")], baseline_state=None, baseline_sum=Decimal(0))
    assert [r["sum"] for r in first] == [0.0, 2.0]


async def _sums(hass: HomeAssistant, stat_id: str) -> list[dict[str, Any]]:
    from homeassistant.components.recorder import get_instance

    start = datetime.now(UTC) - timedelta(days=400)
    found = await get_instance(hass).async_add_executor_job(
        statistics_during_period, hass, start, None, {stat_id}, "hour", None, {"state", "sum"}
    )
    return found.get(stat_id, [])


async def test_import_late_data_reset_and_gap(hass: HomeAssistant, iot_sim: IotMeterSimulator, iot_server: Any) -> None:
    """Setup imports the window; re-imports repair late data; a reset or a gap never makes a negative bar."""
    data = iot_data(iot_sim, iot_server, control=False)
    entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id=IotMeterClient.unique_id(data))
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done(wait_background_tasks=True)
    await async_wait_recording_done(hass)
    meter = next(no for no, d in iot_sim.devices.items() if d.device_type == 1)
    stat_id = statistic_id("iotmeter", meter)
    rows = await _sums(hass, stat_id)
    assert len(rows) >= 29
    values = [Decimal(str(r["state"])) for r in rows]
    assert Decimal(str(rows[-1]["sum"])) == values[-1] - values[0]
    assert [n for n, *_ in iot_sim.requests].count("GetHistoryList2") >= 3  # meters × months, paged

    days = sorted(datetime.fromisoformat(r["acquisition_time"]).date() for r in iot_sim.history[meter])
    late_day = days[-5]
    iot_sim.late_history(meter, late_day, float(values[-5]) + 0.5)
    iot_sim.gap(meter, [days[-3]])
    iot_sim.reset_meter(meter, 1)
    iot_sim.freeze_day()
    await async_import_history(hass, entry.runtime_data)
    await async_wait_recording_done(hass)
    rows = await _sums(hass, stat_id)
    sums = [Decimal(str(r["sum"])) for r in rows]
    assert all(b >= a for a, b in pairwise(sums))
    assert rows[-1]["state"] < 10  # the replaced meter's low reading is the state, not subtracted from the sum
