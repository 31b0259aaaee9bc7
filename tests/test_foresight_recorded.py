"""With the recorder: daily spend from the balance Home Assistant recorded (Cangnan has no daily money), the Gas cost
statistic from Goldcard's daily bill, and the Energy dashboard's validation of our price and cost entities."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from itertools import pairwise
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.recorder import Recorder, get_instance
from homeassistant.components.recorder.statistics import async_import_statistics, statistics_during_period
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.recorder.common import async_wait_recording_done

from custom_components.meter_cloud.compat import statistic_metadata
from custom_components.meter_cloud.foresight import midnight
from simulator.cangnan import VALVE_CLOSED, VALVE_OPEN, CangnanSimulator
from simulator.goldcard import GoldcardSimulator

from .test_foresight import CENT, eid, settle, state

HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(recorder_mock: Recorder, enable_custom_integrations: None) -> None:
    """The recorder must start before Home Assistant: override the suite's autouse fixture to order them."""


async def _rows(hass: HomeAssistant, stat_id: str, start: datetime) -> list[dict[str, Any]]:
    found = await get_instance(hass).async_add_executor_job(
        statistics_during_period, hass, start, None, {stat_id}, "hour", None, {"state", "sum"}
    )
    return found.get(stat_id, [])


async def test_spend_from_the_recorded_balance(
    hass: HomeAssistant, vendor_morning: FrozenDateTimeFactory, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """Hour by hour the simulator's balance runs down and is recorded; a recharge mid-window is a rise, not negative
    spend; a day Home Assistant did not see (and the day after it, whose start it did not see) is left out."""
    meter = next(m for m in cn_sim.meters.values() if m.valve == VALVE_OPEN)
    others = [m for m in cn_sim.meters.values() if m is not meter]
    for other in others:
        other.valve = VALVE_CLOSED  # only this meter's money moves
    tz = cn_sim.tz
    today = datetime.now(tz).date()
    down, recharge_day = today - timedelta(days=6), today - timedelta(days=3)
    rows, spent = [], dict[date, Decimal]()
    hour = midnight(today - timedelta(days=9), tz)
    while hour < midnight(today, tz):
        day = hour.astimezone(tz).date()
        before = meter.remain_money
        if day == recharge_day and hour.astimezone(tz).hour == 10:
            meter.remain_money += Decimal(100)  # the gas company's counter; no gas this hour
        else:
            cn_sim.tick(60)
            spent[day] = spent.get(day, Decimal(0)) + before - meter.remain_money
        if day != down:
            rows.append({"start": hour, "state": float(meter.remain_money), "sum": 0.0})
        hour += HOUR
    balance = eid(hass, f"cangnan_{meter.meter_id}_balance")
    metadata = statistic_metadata(statistic_id=balance, name=None, unit="CNY", unit_class=None)
    metadata["source"] = "recorder"
    async_import_statistics(hass, metadata, rows)  # type: ignore[arg-type]
    await async_wait_recording_done(hass)
    await cn_entry.runtime_data.async_refresh()
    await cn_entry.runtime_data.foresight.async_refresh()
    await settle(hass)

    week = [today - timedelta(days=n) for n in range(1, 8)]
    known = [day for day in week if day not in (down, down + timedelta(days=1))]
    assert len(known) == 5
    assert recharge_day in known
    average = sum((spent[day] for day in known), Decimal(0)) / len(known)
    sensor = hass.states.get(eid(hass, f"cangnan_{meter.meter_id}_daily_spend_7d"))
    assert Decimal(sensor.state) == average.quantize(CENT, ROUND_HALF_UP)
    assert (sensor.attributes["source"], sensor.attributes["days_with_data"]) == ("recorded", 5)
    assert Decimal(state(hass, f"cangnan_{meter.meter_id}_days_left")) > 0
    assert state(hass, f"cangnan_{others[0].meter_id}_daily_spend_7d") == "unknown"  # nothing recorded for it


async def test_gas_cost_statistic_from_the_daily_bill(
    hass: HomeAssistant, config_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """Each day's closing hour adds that day's 1015 money (its tiers together) to the Gas cost statistic, ending at
    the sensor's cumulative money; a day the cloud reports late is filled in at the next refresh and the total at
    the anchor is unchanged (nothing counted twice)."""
    meter = next(iter(sim.meters.values()))
    tz, today = sim.tz, datetime.now(sim.tz).date()
    late = today - timedelta(days=9)  # well inside the window, older than a few days
    held_back = meter.history.pop(late)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await settle(hass)
    await async_wait_recording_done(hass)
    cost = eid(hass, f"goldcard_{meter.meter_no}_gas_cost")
    assert Decimal(hass.states.get(cost).state) == meter.sum_money

    def closing(day: date) -> float:
        return (midnight(day + timedelta(days=1), tz) - HOUR).timestamp()

    def check(rows: list[dict[str, Any]], days: list[date]) -> None:
        by_start = {row["start"]: row for row in rows}
        for before, day in pairwise(days):
            added = Decimal(str(by_start[closing(day)]["sum"])) - Decimal(str(by_start[closing(before)]["sum"]))
            expected = meter.history[day].amount if day in meter.history else Decimal(0)
            assert round(added, 4) == expected, day

    start = midnight(today - timedelta(days=40), tz)
    rows = await _rows(hass, cost, start)
    window = [today - timedelta(days=n) for n in range(30, 0, -1)]
    assert {closing(day) for day in window} <= {row["start"] for row in rows}
    check(rows, window)
    anchor_sum = rows[-1]["sum"]

    meter.history[late] = held_back  # the day arrives
    await config_entry.runtime_data.foresight.async_refresh()
    await async_wait_recording_done(hass)
    rows = await _rows(hass, cost, start)
    check(rows, window)  # every day of the window right, the days before the late one included
    assert rows[-1]["sum"] == anchor_sum


async def test_energy_validation_accepts_price_and_cost(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """A gas source with our reading, and either our price as "entity with current price" or Gas cost as "entity
    tracking the total costs", passes the Energy integration's own validation without an issue."""
    assert await async_setup_component(hass, "energy", {})
    await settle(hass)
    await async_wait_recording_done(hass)
    from homeassistant.components.energy.data import async_get_manager
    from homeassistant.components.energy.validate import async_validate

    meter = next(iter(sim.meters))
    reading = eid(hass, f"goldcard_{meter}_reading")
    price = eid(hass, f"goldcard_{meter}_price")
    cost = eid(hass, f"goldcard_{meter}_gas_cost")
    assert hass.states.get(price).attributes["unit_of_measurement"] == "CNY/m³"
    gas = {"type": "gas", "stat_energy_from": reading, "number_energy_price": None}
    sources = [
        gas | {"stat_cost": None, "entity_energy_price": price},
        gas | {"stat_cost": cost, "entity_energy_price": None},
    ]
    manager = await async_get_manager(hass)
    # The reading's own statistic is compiled by the recorder; only the cost statistic is ours to write here.
    await manager.async_update({"energy_sources": sources})  # type: ignore[typeddict-item]
    result = (await async_validate(hass)).as_dict()
    issues = [issue for source in result["energy_sources"] for issue in source]
    # The reading's statistic is the recorder's to compile (not within this test); anything else is a real issue.
    compiled_later = [i for i in issues if i["type"] == "statistics_not_defined"]
    assert all({entity for entity, _ in i["affected_entities"]} == {reading} for i in compiled_later)
    assert [i for i in issues if i not in compiled_later] == []
