"""A new installation of a large account stays within Home Assistant 2026's enabled-entity cap per entry."""

from __future__ import annotations

from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.api import IotMeterClient
from custom_components.meter_cloud.const import DOMAIN
from simulator.iotmeter import IotMeterSimulator

from .conftest import iot_data

# homeassistant.helpers.entity_platform.MAX_ENABLED_ENTITIES_PER_CONFIG_ENTRY (2026.x; 2025.4 has no cap): an entity
# past it is not added at all.
ENTITY_CAP = 10_000
EVERYDAY = {
    "reading",
    "balance",
    "price",
    "state_message",
    "recharge_status",
    "valve",
    "alarm",
    "low_power",
    "magnetic_attack",
}
RTU_EVERYDAY = {"state_message", "alarm", "rtu_door_open", "rtu_fence_alarm", "rtu_power", "rtu_vibrate_alarm"}


@pytest.mark.default_entities
async def test_a_1000_meter_iot_account_fits_the_entity_cap(
    hass: HomeAssistant, socket_enabled: None, aiohttp_server: Any
) -> None:
    """1000 meters and 20 RTUs, set up as a new installation: every meter gets its everyday entities, and the entry
    enables fewer than Home Assistant 2026's 10,000 (past it, Home Assistant adds no more: the last meters would
    have no valve)."""
    sim = IotMeterSimulator(meters=1000, rtus=20, command_delay=3600)
    try:
        server = await aiohttp_server(sim.app, host="127.0.0.1")
        data = iot_data(sim, server)
        entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id=IotMeterClient.unique_id(data))
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        entries = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
        enabled = [e for e in entries if e.disabled_by is None]
        shown: dict[str, set[str]] = {}
        for e in enabled:
            device, _, key = e.unique_id.removeprefix("iotmeter_").partition("_")
            shown.setdefault(device, set()).add(key)
        for comm_no, device in sim.devices.items():
            wanted = EVERYDAY if device.device_type == 1 else RTU_EVERYDAY
            assert shown.get(comm_no) == wanted, (comm_no, shown.get(comm_no))
        # Nothing else, and room for the account to grow by 50 meters.
        assert len(enabled) == 1000 * len(EVERYDAY) + 20 * len(RTU_EVERYDAY) == 9120 <= ENTITY_CAP - 500
    finally:
        await sim.close()
