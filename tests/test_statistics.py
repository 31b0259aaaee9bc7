"""Archive history → the counter sensor's own long-term statistic: one Energy source, sums that agree with the
recorder's, no negative bars, and the old external statistics merged away."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.recorder import Recorder, get_instance
from homeassistant.components.recorder.statistics import (
    async_add_external_statistics,
    list_statistic_ids,
    statistics_during_period,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.recorder.common import (
    async_wait_recording_done,
    do_adhoc_statistics,
)

from custom_components.meter_cloud.api import HistoryPoint, IotMeterClient
from custom_components.meter_cloud.compat import statistic_metadata
from custom_components.meter_cloud.const import DOMAIN
from custom_components.meter_cloud.statistics import (
    MERGED,
    anchored_rows,
    async_import_history,
    build_rows,
    statistic_id,
)
from simulator.iotmeter import IotMeterSimulator

from .conftest import iot_data


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(recorder_mock: Recorder, enable_custom_integrations: None) -> None:
    """The recorder must start before Home Assistant: override the suite's autouse fixture to order them."""


def point(day: int, value: str) -> HistoryPoint:
    """A frozen reading at midnight UTC of a November day."""
    return HistoryPoint(datetime(2026, 11, day, tzinfo=UTC), Decimal(value))


def hour(day: int, at: int = 0) -> datetime:
    """The start of an hour of November."""
    return datetime(2026, 11, day, at, tzinfo=UTC)


def test_rows_continue_the_baseline_and_never_go_negative() -> None:
    """Forwards from a baseline: a lower reading (replaced meter) adds nothing; a gap adds all."""
    rows = build_rows(
        [point(1, "100"), point(2, "101.5"), point(5, "104"), point(6, "3"), point(7, "4.25")],
        baseline_state=Decimal("99"),
        baseline_sum=Decimal("10"),
    )
    assert [r["sum"] for r in rows] == [11.0, 12.5, 15.0, 15.0, 16.25]
    # A reading frozen at midnight closes the hour before it: the day's use lands on that day.
    assert rows[0]["start"] == datetime(2026, 10, 31, 23, 0, tzinfo=UTC)


def test_rows_anchored_to_the_recorders_newest_row() -> None:
    """Backwards from the anchor, so whatever the recorder writes next continues seamlessly; a lagging live row
    after an archive reading is raised to it; a reset adds nothing; the anchor row is not rewritten."""
    archive = {hour(1): Decimal(100), hour(2): Decimal(110), hour(4): Decimal(3)}
    live = {hour(1, 12): Decimal(104), hour(2, 6): Decimal(105), hour(3): Decimal(112)}  # 105 lags the 110 before it
    rows = anchored_rows(archive, live, (hour(5), Decimal(5), Decimal(500)))
    assert [(r["start"], r["state"]) for r in rows] == [
        (hour(1), 100.0),
        (hour(1, 12), 104.0),
        (hour(2), 110.0),
        (hour(2, 6), 110.0),
        (hour(3), 112.0),
        (hour(4), 3.0),
    ]
    assert [r["sum"] for r in rows] == [486.0, 490.0, 496.0, 496.0, 498.0, 498.0]
    assert all(b["sum"] - a["sum"] == max(b["state"] - a["state"], 0) for a, b in pairwise(rows))
    assert 500 - rows[-1]["sum"] == 5 - 3  # into the anchor
    assert anchored_rows(archive, live, (hour(1), Decimal(100), Decimal(0))) == []  # nothing before the anchor


async def _rows(hass: HomeAssistant, stat_id: str) -> list[dict[str, Any]]:
    start = datetime(2000, 1, 1, tzinfo=UTC)
    found = await get_instance(hass).async_add_executor_job(
        statistics_during_period, hass, start, None, {stat_id}, "hour", None, {"state", "sum"}
    )
    return found.get(stat_id, [])


async def _entry(hass: HomeAssistant, sim: IotMeterSimulator, server: Any) -> MockConfigEntry:
    data = iot_data(sim, server, control=False)
    entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id=IotMeterClient.unique_id(data))
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done(wait_background_tasks=True)
    await async_wait_recording_done(hass)
    return entry


def _reading_sensor(hass: HomeAssistant, meter: str) -> str:
    found = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"iotmeter_{meter}_reading")
    assert found is not None
    return found


def _gas_meter(sim: IotMeterSimulator) -> str:
    """The simulator's first gas meter (its RTUs keep no volume archive)."""
    return next(no for no, d in sim.devices.items() if d.device_type == 1)


async def _imported(
    hass: HomeAssistant, sim: IotMeterSimulator, server: Any
) -> tuple[MockConfigEntry, str, str, list[dict[str, Any]]]:
    """Set up (which imports the archive); the first gas meter, its reading sensor and that statistic's rows."""
    entry = await _entry(hass, sim, server)
    meter = _gas_meter(sim)
    sensor = _reading_sensor(hass, meter)
    rows = await _rows(hass, sensor)
    assert len(rows) >= 29
    _check(rows)
    return entry, meter, sensor, rows


def _check(rows: list[dict[str, Any]]) -> None:
    """Every hour adds what the counter grew, never anything negative."""
    for before, after in pairwise(rows):
        added = round(Decimal(str(after["sum"])) - Decimal(str(before["sum"])), 3)
        grew = round(Decimal(str(after["state"])) - Decimal(str(before["state"])), 3)
        assert added == max(grew, Decimal(0))


async def test_one_source_per_counter_with_the_archive(
    hass: HomeAssistant, iot_sim: IotMeterSimulator, iot_server: Any
) -> None:
    """The frozen archive lands in the reading sensor's own statistic (its name, its id): the Energy pickers offer
    that one statistic per meter and nothing of ours besides; re-imports repair late data; resets and gaps never
    make a negative bar."""
    entry, meter, sensor, rows = await _imported(hass, iot_sim, iot_server)
    days = sorted(datetime.fromisoformat(r["acquisition_time"]).date() for r in iot_sim.history[meter])
    frozen = {Decimal(str(r["std_sum"])) for r in iot_sim.history[meter]}
    assert {Decimal(str(r["state"])) for r in rows} <= {*(round(v, 3) for v in frozen), Decimal(str(rows[-1]["state"]))}
    offered = {
        s["statistic_id"]
        for s in await get_instance(hass).async_add_executor_job(list_statistic_ids, hass, None, "sum")
    }
    assert sensor in offered
    assert not [stat for stat in offered if stat.startswith(f"{DOMAIN}:")]  # no second statistic of the counter

    iot_sim.late_history(meter, days[-5], float(rows[-5]["state"]) + 0.5)
    iot_sim.gap(meter, [days[-3]])
    iot_sim.reset_meter(meter, 1)
    iot_sim.freeze_day()
    await entry.runtime_data.async_refresh()
    await async_import_history(hass, entry.runtime_data)
    await async_wait_recording_done(hass)
    rows = await _rows(hass, sensor)
    _check(rows)
    assert min(r["state"] for r in rows) < 10  # the replaced meter's low reading is a state, not subtracted


async def test_rows_imported_before_the_first_compile_follow_the_next_hours_anchor(
    hass: HomeAssistant, iot_sim: IotMeterSimulator, iot_server: Any, freezer: FrozenDateTimeFactory
) -> None:
    """Before the recorder's first compile an import anchors at the sensor's state of that hour with sum 0 (where
    the recorder will start); an import an hour later, still before any compile, anchors at the later state: the
    rows the first import wrote are re-based on it, so no hour shows a jump (they were kept, a jump as large as the
    gas used meanwhile)."""
    # 23:58 at the platform (Asia/Shanghai): the next hour also brings the new day's frozen reading.
    now = dt_util.utcnow()
    evening = now.replace(hour=15, minute=58, second=0, microsecond=0)
    freezer.move_to(evening if evening > now else evening + timedelta(days=1))
    entry, _, sensor, first = await _imported(hass, iot_sim, iot_server)
    before = Decimal(hass.states.get(sensor).state)
    freezer.tick(timedelta(minutes=4))  # the next hour; the recorder compiled nothing
    iot_sim.tick(60)
    iot_sim.freeze_day()
    await entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    assert Decimal(hass.states.get(sensor).state) > before
    await async_import_history(hass, entry.runtime_data)
    await async_wait_recording_done(hass)
    rows = await _rows(hass, sensor)
    assert rows[0]["start"] == first[0]["start"]
    assert rows[0]["sum"] < first[0]["sum"]  # re-based: the gas used since lies between it and the new anchor
    _check(rows)
    assert Decimal(str(rows[-1]["sum"])) == -max(
        Decimal(0), Decimal(hass.states.get(sensor).state) - Decimal(str(rows[-1]["state"]))
    )


async def test_archive_rows_agree_with_what_the_recorder_compiles(
    hass: HomeAssistant, iot_sim: IotMeterSimulator, iot_server: Any
) -> None:
    """An hour the recorder compiled from the sensor's states is the anchor: the archive rows before it end where
    it starts, and an import after more compiles rewrites nothing of the recorder's newest row."""
    entry = await _entry(hass, iot_sim, iot_server)
    meter = _gas_meter(iot_sim)
    sensor = _reading_sensor(hass, meter)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    do_adhoc_statistics(hass, start=now - timedelta(hours=1))
    await async_wait_recording_done(hass)
    compiled = (await _rows(hass, sensor))[-1]
    await async_import_history(hass, entry.runtime_data)
    await async_wait_recording_done(hass)
    rows = await _rows(hass, sensor)
    assert rows[-1] == compiled  # the anchor itself is the recorder's
    _check(rows)


async def test_old_external_statistic_is_merged_and_the_energy_dashboard_follows(
    hass: HomeAssistant, iot_sim: IotMeterSimulator, iot_server: Any
) -> None:
    """An install from before 0.5 had a second statistic, meter_cloud:iotmeter_<no>_volume, maybe picked for the
    Energy dashboard: its history (older than any backfill) moves into the sensor's statistic, the dashboard
    points at the sensor, and the old statistic is gone."""
    assert await async_setup_component(hass, "energy", {})
    meter = _gas_meter(iot_sim)
    old = statistic_id("iotmeter", meter)
    # Its oldest row is years older than anything else: it must not be lost with the old statistic.
    ancient = [HistoryPoint(datetime(2019, 6, 1, tzinfo=UTC), Decimal(5))]
    ancient += [HistoryPoint(datetime(2025, 1, day, tzinfo=UTC), Decimal(10 + day)) for day in range(1, 6)]
    metadata = statistic_metadata(statistic_id=old, name="IoT meter platform volume", unit="m³", unit_class="volume")
    async_add_external_statistics(hass, metadata, build_rows(ancient, None, Decimal(0)))  # type: ignore[arg-type]
    from homeassistant.components.energy.data import async_get_manager

    manager = await async_get_manager(hass)
    gas = {"type": "gas", "stat_energy_from": old, "stat_cost": None, "entity_energy_price": None}
    await manager.async_update({"energy_sources": [gas | {"number_energy_price": None}]})  # type: ignore[typeddict-item]
    await async_wait_recording_done(hass)

    entry = await _entry(hass, iot_sim, iot_server)
    sensor = _reading_sensor(hass, meter)
    assert await _rows(hass, old) == []
    rows = await _rows(hass, sensor)
    assert datetime.fromtimestamp(rows[0]["start"], UTC) == datetime(2019, 5, 31, 23, tzinfo=UTC)
    assert datetime.fromtimestamp(rows[1]["start"], UTC) == datetime(2024, 12, 31, 23, tzinfo=UTC)
    _check(rows)
    assert manager.data is not None
    assert manager.data["energy_sources"][0]["stat_energy_from"] == sensor
    assert old in entry.runtime_data.commands.meta[MERGED]
    offered = await get_instance(hass).async_add_executor_job(list_statistic_ids, hass, None, "sum")
    assert not [s for s in offered if s["statistic_id"].startswith(f"{DOMAIN}:")]
