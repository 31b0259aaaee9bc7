"""Goldcard 2001: the engineering values a compensated meter reports, as (disabled-by-default) sensors."""

from __future__ import annotations

from decimal import Decimal

from aiohttp.test_utils import TestClient
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.const import DOMAIN
from simulator.goldcard import GoldcardSimulator

VALUES = {
    "temperature": "temperature",
    "pressure": "pressureValue",
    "std_volume": "standardTotalValue",
    "work_volume": "workTotalValue",
    "std_flow": "standardInstantValue",
    "work_flow": "workInstantValue",
}


async def test_compensated_meter_values_from_its_report(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """A 10523 meter's 2001 carries temperature, pressure, both totals and both flows: each lands on its sensor
    exactly; a meter that leaves them blank shows unknown, never 0; the standard total is no second Energy source."""
    registry = er.async_get(hass)
    first, plain = list(sim.meters)[:2]
    meter = sim.meters[first]
    meter.meter_type = "10523"  # temperature-compensated 10
    body = sim.reading_body(meter.meter_no)
    status, _ = await sim.push_reading(meter.meter_no)
    await sim.push_reading(plain)
    await hass.async_block_till_done()
    assert status == 200
    for key, field in VALUES.items():
        entity_id = registry.async_get_entity_id("sensor", DOMAIN, f"goldcard_{meter.meter_no}_{key}")
        assert entity_id is not None, key
        assert registry.async_get(entity_id).disabled_by is None  # the suite enables every entity
        assert Decimal(hass.states.get(entity_id).state) == Decimal(body[field]), key
        other = registry.async_get_entity_id("sensor", DOMAIN, f"goldcard_{plain}_{key}")
        assert hass.states.get(other).state == "unknown", key
    std = registry.async_get_entity_id("sensor", DOMAIN, f"goldcard_{meter.meter_no}_std_volume")
    assert "state_class" not in hass.states.get(std).attributes
