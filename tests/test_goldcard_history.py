"""Goldcard reading history into the reading sensor's own statistic: 1013 readingDate (one request a day for every
meter), and 2001 addGas back-fills of days a meter was silent."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.recorder import Recorder, get_instance
from homeassistant.components.recorder.statistics import statistics_during_period
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.recorder.common import async_wait_recording_done

from custom_components.meter_cloud.const import DOMAIN
from custom_components.meter_cloud.statistics import async_import_history
from simulator.goldcard import GoldcardSimulator


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(recorder_mock: Recorder, enable_custom_integrations: None) -> None:
    """The recorder must start before Home Assistant: override the suite's autouse fixture to order them."""


async def rows(hass: HomeAssistant, stat_id: str) -> list[dict[str, Any]]:
    start = datetime.now(UTC) - timedelta(days=60)
    found = await get_instance(hass).async_add_executor_job(
        statistics_during_period, hass, start, None, {stat_id}, "hour", None, {"state", "sum"}
    )
    return found.get(stat_id, [])


def start_of(row: dict[str, Any]) -> datetime:
    """A statistics row's start (a timestamp on newer Home Assistant, a datetime on older)."""
    start = row["start"]
    return datetime.fromtimestamp(start, UTC) if isinstance(start, (int, float)) else start


def day_end_readings(sim: GoldcardSimulator, meter_no: str, days: list[date]) -> dict[datetime, Decimal]:
    """What the simulator's DAS says each day closed at (its 1013 readingDate rows), by the hour they fall in."""
    meter = sim.meters[meter_no]
    found = {}
    for day in days:
        row = sim._reading_row(meter, sim._contact_day(meter, day))
        when = datetime.strptime(row["readDate"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=sim.tz)
        found[when.replace(minute=0, second=0).astimezone(UTC)] = Decimal(row["readNum"])
    return found


def readings_1013(sim: GoldcardSimulator) -> list[dict[str, Any]]:
    return [p for n, p in sim.requests if n == "1013" and p.get("readingDate")]


async def settled(hass: HomeAssistant) -> None:
    await hass.async_block_till_done(wait_background_tasks=True)
    await async_wait_recording_done(hass)


async def test_backfill_is_one_request_a_day_for_all_meters(
    hass: HomeAssistant, vendor_morning: FrozenDateTimeFactory, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """The first import reads 30 days, one 1013 per day without meterNo; each meter's reading statistic then holds
    each day's closing reading exactly where the DAS put it; the next import reads only the last days."""
    await settled(hass)
    asked = readings_1013(sim)
    today = datetime.now(sim.tz).date()
    assert sorted(p["readingDate"] for p in asked) == [
        (today - timedelta(days=n)).isoformat() for n in range(30, -1, -1)
    ]
    assert all(p["meterNo"] == "" for p in asked)
    for meter_no, meter in sim.meters.items():
        sensor = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"goldcard_{meter_no}_reading")
        assert sensor is not None
        by_hour = {start_of(r): Decimal(str(r["state"])) for r in await rows(hass, sensor)}
        days = [d for d in (today - timedelta(days=n) for n in range(30, 0, -1)) if d >= meter.set_up_time]
        expected = day_end_readings(sim, meter_no, days)
        assert expected
        assert {hour: by_hour.get(hour) for hour in expected} == expected
    sim.requests.clear()
    await async_import_history(hass, setup_entry.runtime_data)
    assert sorted(p["readingDate"] for p in readings_1013(sim)) == [
        (today - timedelta(days=n)).isoformat() for n in range(2, -1, -1)
    ]


async def test_add_gas_fills_silent_days_even_beyond_the_usual_window(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """Days 9-7 ago the meter was silent: 1013 answers the reading before them; its next 2001 back-fills them, and
    the next import (widened to reach day 9) writes those days' readings into the statistic, once."""
    await settled(hass)
    meter_no = next(iter(sim.meters))
    today = datetime.now(sim.tz).date()
    silent = {today - timedelta(days=n) for n in (9, 8, 7)}
    sim.silent_days[meter_no] = silent
    filled = sim.add_gas(meter_no)
    status, _ = await sim.push_reading(meter_no)
    assert status == 200
    client = setup_entry.runtime_data.client
    assert client.lookback() >= timedelta(days=10)
    sim.requests.clear()
    await async_import_history(hass, setup_entry.runtime_data)
    await settled(hass)
    assert min(p["readingDate"] for p in readings_1013(sim)) <= min(silent).isoformat()
    assert client.lookback() == timedelta(days=2)
    sensor = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"goldcard_{meter_no}_reading")
    assert sensor is not None
    by_hour = {start_of(r): r["state"] for r in await rows(hass, sensor)}
    for text, value in filled.items():
        closing = datetime.combine(date.fromisoformat(text), time(23), tzinfo=sim.tz).astimezone(UTC)
        assert Decimal(str(by_hour[closing])) == Decimal(value)
    _, again = await sim.push_reading(meter_no)
    assert again["echoCode"] == "0000"
    assert client.lookback() == timedelta(days=2)  # back-filled once; a later report repeats nothing
