"""Sensors show exactly the simulator's numbers."""

from __future__ import annotations

from decimal import Decimal

import pytest
from homeassistant.const import STATE_UNAVAILABLE, STATE_UNKNOWN
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.compat import device_by_identifier
from custom_components.meter_cloud.const import DOMAIN
from simulator.goldcard import GoldcardSimulator


def entity_id(hass: HomeAssistant, meter_no: str, key: str, platform: str = "sensor") -> str:
    """Entity id of a meter's entity by its unique id."""
    found = er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"goldcard_{meter_no}_{key}")
    assert found is not None, f"no {platform} {key} for {meter_no}"
    return found


def state_decimal(hass: HomeAssistant, eid: str) -> Decimal:
    """A sensor's state as a Decimal."""
    return Decimal(hass.states.get(eid).state)


async def test_devices_and_values(hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator) -> None:
    """Every meter is a device; each sensor equals the simulator's number."""
    devices = dr.async_entries_for_config_entry(dr.async_get(hass), setup_entry.entry_id)
    assert {d.serial_number for d in devices} == set(sim.meters)
    for meter_no, meter in sim.meters.items():
        device = device_by_identifier(hass, (DOMAIN, f"goldcard_{meter_no}"), setup_entry.entry_id)
        assert device is not None
        assert device.manufacturer == "Goldcard"
        assert device.model in {
            "IoT 10",
            "IoT 40",
            "NB-IoT 10",
            "NB-IoT 40",
            "Thermal R1",
            "Temperature-compensated 10",
        }
        assert state_decimal(hass, entity_id(hass, meter_no, "reading")) == meter.reading
        assert state_decimal(hass, entity_id(hass, meter_no, "balance")) == meter.balance
        assert state_decimal(hass, entity_id(hass, meter_no, "price")) == meter.price
        assert state_decimal(hass, entity_id(hass, meter_no, "total_gas")) == meter.sum_gas
        assert state_decimal(hass, entity_id(hass, meter_no, "total_money")) == meter.sum_money
        assert state_decimal(hass, entity_id(hass, meter_no, "total_recharge")) == meter.sum_recharge
        assert state_decimal(hass, entity_id(hass, meter_no, "battery_voltage")) == meter.voltage
        assert state_decimal(hass, entity_id(hass, meter_no, "signal_strength")) == Decimal(meter.signal)
        assert hass.states.get(entity_id(hass, meter_no, "status")).state == "active"
        reading = hass.states.get(entity_id(hass, meter_no, "reading"))
        assert reading.attributes["unit_of_measurement"] == "m³"
        assert reading.attributes["device_class"] == "gas"
        assert reading.attributes["state_class"] == "total_increasing"
        balance = hass.states.get(entity_id(hass, meter_no, "balance"))
        assert balance.attributes["unit_of_measurement"] == "CNY"
        assert hass.states.get(entity_id(hass, meter_no, "price")).attributes["unit_of_measurement"] == "CNY/m³"
        read_at = hass.states.get(entity_id(hass, meter_no, "reading_time")).state
        assert read_at == meter.read_time.astimezone(read_at_tz()).isoformat()
        assert hass.states.get(entity_id(hass, meter_no, "recharge_status")).state == STATE_UNKNOWN


def read_at_tz():
    """Timestamps are shown in UTC."""
    from datetime import UTC

    return UTC


async def test_poll_updates_values(hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator) -> None:
    """After the simulator ticks, a refresh shows the new readings."""
    sim.tick(60)
    meter_no, meter = next(iter(sim.meters.items()))
    await setup_entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    assert state_decimal(hass, entity_id(hass, meter_no, "reading")) == meter.reading
    assert state_decimal(hass, entity_id(hass, meter_no, "balance")) == meter.balance


async def test_cloud_down_then_recovers(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """A failing cloud makes entities unavailable (not zero); the next good poll restores them."""
    meter_no, meter = next(iter(sim.meters.items()))
    eid = entity_id(hass, meter_no, "balance")
    coordinator = setup_entry.runtime_data
    for mode in ("http500", "malformed", "error"):
        sim.fail_next(mode, endpoint="1013")
        await coordinator.async_refresh()
        await hass.async_block_till_done()
        assert hass.states.get(eid).state == STATE_UNAVAILABLE, mode
        await coordinator.async_refresh()
        await hass.async_block_till_done()
        assert state_decimal(hass, eid) == meter.balance, mode


@pytest.mark.default_entities
async def test_entity_budget_per_meter(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """A new install enables only the everyday entities: Home Assistant 2026 caps an entry at 10,000."""
    registry = er.async_get(hass)
    meter_no = next(iter(sim.meters))
    ours = [e for e in registry.entities.values() if e.config_entry_id == setup_entry.entry_id]
    enabled = {
        e.unique_id.removeprefix(f"goldcard_{meter_no}_") for e in ours if meter_no in e.unique_id and not e.disabled
    }
    # Gas cost is the Energy dashboard's cost entity; the foresight sensors are there to switch on.
    assert enabled == {"reading", "balance", "price", "status", "recharge_status", "valve", "alarm", "gas_cost"}
    disabled = [e for e in ours if e.disabled_by is er.RegistryEntryDisabler.INTEGRATION]
    assert {e.unique_id.rsplit("_", 2)[-1] for e in disabled} >= {"voltage", "strength"}
    assert hass.states.get(entity_id(hass, meter_no, "battery_voltage")) is None
