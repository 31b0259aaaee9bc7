"""KUMIR-RESURS hour/day archives → long-term statistics: late data, meter reset, gaps, backfill, no double counting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.recorder import Recorder, get_instance
from homeassistant.components.recorder.statistics import statistics_during_period
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.recorder.common import async_wait_recording_done

from custom_components.meter_cloud.api import KumirClient
from custom_components.meter_cloud.const import DOMAIN
from custom_components.meter_cloud.statistics import BACKFILLED, async_import_history
from simulator.kumir import KumirSimulator, _fmt

from .conftest import kumir_data

NODES = [("Pol_276", "34781353", "m234"), ("Pol_281", "23456789", "m230")]
# An m234 (plain tariffs) and an m230 (6 = sum of 1-4, 5 = losses).
pytestmark = pytest.mark.kumir_nodes(NODES)


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(recorder_mock: Recorder, enable_custom_integrations: None) -> None:
    """The recorder must start before Home Assistant: override the suite's autouse fixture to order them."""


def sensor(hass: HomeAssistant, meter: str, key: str) -> str:
    """The entity id of a node's value sensor: its statistic is the one the archive goes into."""
    found = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"kumir_{meter}_{key}")
    assert found is not None
    return found


async def _rows(hass: HomeAssistant, stat_id: str) -> list[dict[str, Any]]:
    start = datetime.now(UTC) - timedelta(days=30)
    found = await get_instance(hass).async_add_executor_job(
        statistics_during_period, hass, start, None, {stat_id}, "hour", None, {"state", "sum"}
    )
    return found.get(stat_id, [])


def _expected(sim: KumirSimulator, code: str, row: dict[str, Any], system: int = 1) -> Decimal:
    """The simulator's counter at the end of the row's hour: the reading that closes it."""
    end = datetime.fromtimestamp(row["start"], UTC) + timedelta(hours=1)
    return Decimal(_fmt(sim.counter_value(sim.nodes[code], system, "EAi", end)))


def _check_sums(rows: list[dict[str, Any]]) -> None:
    """Every hour adds what the register grew, and never anything negative."""
    for before, after in pairwise(rows):
        added = round(Decimal(str(after["sum"])) - Decimal(str(before["sum"])), 3)
        grew = round(Decimal(str(after["state"])) - Decimal(str(before["state"])), 3)
        assert added >= 0
        assert added == max(grew, Decimal(0))


async def _setup(hass: HomeAssistant, sim: KumirSimulator, server: TestServer, **extra: Any) -> MockConfigEntry:
    data = kumir_data(sim, server, nodes="\n".join(" ".join(node) for node in NODES), **extra)
    entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id=KumirClient.unique_id(data))
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done(wait_background_tasks=True)
    await async_wait_recording_done(hass)
    return entry


async def _import(hass: HomeAssistant, entry: MockConfigEntry) -> int:
    written = await async_import_history(hass, entry.runtime_data)
    await async_wait_recording_done(hass)
    return written


async def test_backfill_then_hourly_lookback(
    hass: HomeAssistant, vendor_morning: FrozenDateTimeFactory, kumir_sim: KumirSimulator, kumir_server: TestServer
) -> None:
    """First setup reads `backfill_days`; later imports only the two-day lookback; values are the simulator's."""
    sim, server = kumir_sim, kumir_server
    entry = await _setup(hass, sim, server, backfill_days=4)
    exports = [info for name, _t, info in sim.requests if name == "export" and info["archives"] == ["hour"]]
    first = exports[1]  # the poll's hour export comes first, then the backfill's
    span = datetime.fromisoformat(first["end"]) - datetime.fromisoformat(first["begin"])
    assert timedelta(days=4) - timedelta(minutes=1) < span <= timedelta(days=4)
    assert entry.runtime_data.commands.meta[BACKFILLED] == ["Pol_276/34781353", "Pol_281/23456789"]

    stat_id = sensor(hass, "Pol_276/34781353", "s1_EAi")
    rows = await _rows(hass, stat_id)
    assert len(rows) >= 4 * 24 - 4  # hourly, less the collector's missed hours
    for row in rows:
        assert Decimal(str(row["state"])) == _expected(sim, "Pol_276", row)
    _check_sums(rows)

    before = len(sim.requests)
    await _import(hass, entry)
    exports = [info for name, _t, info in sim.requests[before:] if name == "export" and info["archives"] == ["hour"]]
    span = datetime.fromisoformat(exports[0]["end"]) - datetime.fromisoformat(exports[0]["begin"])
    assert span <= timedelta(days=2)
    again = await _rows(hass, stat_id)
    assert [r["sum"] for r in again] == [r["sum"] for r in rows]  # a re-import changes nothing


async def test_sum_and_losses_tariffs_are_not_imported(
    hass: HomeAssistant, kumir_sim: KumirSimulator, kumir_server: TestServer
) -> None:
    """Mercury 230 ART: tariff 6 repeats 1-4 and 5 is losses: no statistics for them, so no double counting."""
    sim, server = kumir_sim, kumir_server
    await _setup(hass, sim, server, backfill_days=1)
    for system in (1, 2, 3):
        assert await _rows(hass, sensor(hass, "Pol_281/23456789", f"s{system}_EAi"))
    for system in (5, 6):
        assert not await _rows(hass, sensor(hass, "Pol_281/23456789", f"s{system}_EAi"))
    # Following only the sum tariff makes it the consumption.
    coordinator = hass.config_entries.async_entries(DOMAIN)[0].runtime_data
    client, meter = coordinator.client, coordinator.data["Pol_281/23456789"]
    client.systems = [6]
    assert client.value_info(meter, "s6_EAi").statistic
    assert client.value_info(meter, "s6_EAi").state_class == "total_increasing"
    assert not client.value_info(meter, "s5_EAi").statistic


async def test_late_data_reset_and_gap(
    hass: HomeAssistant, kumir_sim: KumirSimulator, kumir_server: TestServer
) -> None:
    """Late hours fill in on the next import; a replaced meter and a collector gap never make a negative bar."""
    sim, server = kumir_sim, kumir_server
    now = sim._now()
    gap_start = (now - timedelta(hours=20)).replace(minute=0, second=0)
    sim.gap("Pol_276", gap_start, gap_start + timedelta(hours=3))
    sim.late(4)
    entry = await _setup(hass, sim, server, backfill_days=1, archives=["hour", "total"])
    stat_id = sensor(hass, "Pol_276/34781353", "s1_EAi")
    rows = await _rows(hass, stat_id)
    newest = datetime.fromtimestamp(rows[-1]["start"], UTC)
    assert newest < now - timedelta(hours=4)
    starts = {datetime.fromtimestamp(r["start"], UTC) for r in rows}
    assert gap_start.astimezone(UTC) not in starts  # the gap's hours have no rows...
    _check_sums(rows)  # ...and the hour after it carries their consumption

    sim.release_late()
    reset_at = (now - timedelta(hours=2)).replace(minute=0, second=0)
    sim.reset("Pol_276", "EAi", 0.0, at=reset_at)
    await _import(hass, entry)
    rows = await _rows(hass, stat_id)
    assert datetime.fromtimestamp(rows[-1]["start"], UTC) > now - timedelta(hours=2)
    for row in rows:
        assert Decimal(str(row["state"])) == _expected(sim, "Pol_276", row)
    _check_sums(rows)
    assert min(Decimal(str(r["state"])) for r in rows) < 1  # the reset reached the statistics
    total = sum(max(Decimal(str(b["state"])) - Decimal(str(a["state"])), Decimal(0)) for a, b in pairwise(rows))
    assert round(Decimal(str(rows[-1]["sum"])) - Decimal(str(rows[0]["sum"])), 3) == round(total, 3)


async def test_failed_import_is_retried_whole(
    hass: HomeAssistant, kumir_sim: KumirSimulator, kumir_server: TestServer
) -> None:
    """An export failing during a backfill leaves it to do: the next import reads the whole window again."""
    sim, server = kumir_sim, kumir_server
    entry = await _setup(hass, sim, server, backfill_days=3)
    meta = entry.runtime_data.commands.meta
    meta[BACKFILLED] = []
    sim.fail_next("http500", count=50, endpoint="export")
    assert await _import(hass, entry) == 0
    assert meta[BACKFILLED] == []
    sim.faults.faults.clear()
    before = len(sim.requests)
    assert await _import(hass, entry) > 3 * 24
    assert meta[BACKFILLED] == ["Pol_276/34781353", "Pol_281/23456789"]
    hour = next(info for name, _t, info in sim.requests[before:] if name == "export" and info["archives"] == ["hour"])
    assert datetime.fromisoformat(hour["end"]) - datetime.fromisoformat(hour["begin"]) > timedelta(days=2)
