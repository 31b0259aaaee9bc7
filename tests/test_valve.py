"""Valve round trip: pending while the command travels, settled by 2002 or by the next poll."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient
from homeassistant.components.valve import DOMAIN as VALVE_DOMAIN
from homeassistant.const import ATTR_ENTITY_ID, SERVICE_CLOSE_VALVE, SERVICE_OPEN_VALVE
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from pytest_homeassistant_custom_component.common import MockConfigEntry

from simulator.goldcard import GoldcardSimulator

from .test_sensor import entity_id


async def move(hass: HomeAssistant, eid: str, service: str) -> None:
    """Call open/close on a valve."""
    await hass.services.async_call(VALVE_DOMAIN, service, {ATTR_ENTITY_ID: eid}, blocking=True)
    await hass.async_block_till_done()


def last_1004(sim: GoldcardSimulator) -> dict:
    """The newest 1004 request the simulator received."""
    return next(p for n, p in reversed(sim.requests) if n == "1004")


async def test_close_confirmed_by_2002(hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator) -> None:
    """Close → closing (1004 paramNo 03 valveSet 1) → 2002 success → closed."""
    meter_no = next(iter(sim.meters))
    eid = entity_id(hass, meter_no, "valve", "valve")
    assert hass.states.get(eid).state == "open"
    await move(hass, eid, SERVICE_CLOSE_VALVE)
    assert hass.states.get(eid).state == "closing"
    sent = last_1004(sim)
    assert (sent["paramNo"], str(sent["paramContext"]["data"]["valveSet"])) == ("03", "1")
    await sim.settle()  # the simulator executes and calls 2002 back over HTTP
    await hass.async_block_till_done()
    assert hass.states.get(eid).state == "closed"
    assert sim.meters[meter_no].valve == "closed"


async def test_open_confirmed_by_poll(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """Without a push, the next poll showing the valve open settles the command."""
    meter_no = next(iter(sim.meters))
    sim.meters[meter_no].valve = "closed"
    await setup_entry.runtime_data.async_refresh()
    eid = entity_id(hass, meter_no, "valve", "valve")
    assert hass.states.get(eid).state == "closed"
    await move(hass, eid, SERVICE_OPEN_VALVE)
    assert hass.states.get(eid).state == "opening"
    assert str(last_1004(sim)["paramContext"]["data"]["valveSet"]) == "0"
    await setup_entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    assert hass.states.get(eid).state == "opening"  # not executed yet
    await sim.settle()
    await setup_entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    assert hass.states.get(eid).state == "open"


async def test_failed_command(hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator) -> None:
    """2002 with excuteState 2 ends the pending state; the valve stays where it was."""
    meter_no = next(iter(sim.meters))
    sim.fail_commands = True
    eid = entity_id(hass, meter_no, "valve", "valve")
    await move(hass, eid, SERVICE_CLOSE_VALVE)
    await sim.settle()
    await hass.async_block_till_done()
    assert hass.states.get(eid).state == "open"


async def test_refused_command(hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator) -> None:
    """A vendor refusal is a translated error, and nothing is left pending."""
    meter_no = next(iter(sim.meters))
    eid = entity_id(hass, meter_no, "valve", "valve")
    sim.fail_next("error", endpoint="1004", code="9999")
    with pytest.raises(HomeAssistantError) as err:
        await move(hass, eid, SERVICE_CLOSE_VALVE)
    assert err.value.translation_key == "command_failed"
    assert hass.states.get(eid).state == "open"


async def test_valve_unavailable_when_cloud_down(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """The valve follows the coordinator's availability."""
    eid = entity_id(hass, next(iter(sim.meters)), "valve", "valve")
    sim.fail_next("http500", endpoint="1013")
    await setup_entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    assert hass.states.get(eid).state == "unavailable"
