"""Device triggers through Home Assistant's automation component, fired by the simulators' real pushes and polls."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import voluptuous as vol
from aiohttp.test_utils import TestClient
from homeassistant.components import automation
from homeassistant.components.device_automation import DeviceAutomationType
from homeassistant.components.valve import DOMAIN as VALVE_DOMAIN
from homeassistant.const import ATTR_ENTITY_ID, SERVICE_CLOSE_VALVE
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_get_device_automation_capabilities,
    async_get_device_automations,
    async_mock_service,
)

from custom_components.meter_cloud.const import DOMAIN
from custom_components.meter_cloud.device_trigger import COMMAND_TRIGGERS, TRIGGER_SCHEMA
from simulator.goldcard import GoldcardSimulator
from simulator.iotmeter import IotMeterSimulator
from simulator.kumir import KumirSimulator

from .sequences import act, device, entity, state

GOLDCARD_ALARMS = {
    "communication_fault",
    "gas_leak",
    "reed_switch_fault",
    "valve_leak",
    "valve_fault",
    "battery_fault",
    "magnetic_interference",
    "other",
}
COMMANDS = set(COMMAND_TRIGGERS)


async def settle(hass: HomeAssistant, sim: Any) -> None:
    """The simulated meters execute what they have; Home Assistant takes the results."""
    await sim.settle()
    await hass.async_block_till_done(wait_background_tasks=True)


async def automations(hass: HomeAssistant, *triggers: dict[str, Any]) -> list[ServiceCall]:
    """One automation per trigger, each calling test.automation with its trigger's type; the calls it makes."""
    calls = async_mock_service(hass, "test", "automation")
    assert await async_setup_component(
        hass,
        automation.DOMAIN,
        {
            automation.DOMAIN: [
                {
                    "alias": f"on {trigger['type']}",
                    "trigger": {"platform": "device", "domain": DOMAIN, **trigger},
                    "action": {
                        "service": "test.automation",
                        "data": {"type": trigger["type"], "trigger": "{{ trigger.platform }}"},
                    },
                }
                for trigger in triggers
            ]
        },
    )
    await hass.async_block_till_done()
    return calls


async def ours(hass: HomeAssistant, device_id: str) -> list[dict[str, Any]]:
    """The device's triggers from this integration (its sensors' own numeric triggers left out)."""
    triggers = await async_get_device_automations(hass, DeviceAutomationType.TRIGGER, device_id)
    return [t for t in triggers if t["domain"] == DOMAIN]


def fired(calls: list[ServiceCall]) -> list[str]:
    return [call.data["type"] for call in calls]


async def test_goldcard_meter_offers_its_alarms_commands_and_balance(
    hass: HomeAssistant, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """Every alarm kind Goldcard declares, the valve and recharge outcomes, a balance threshold; all valid."""
    target = device(hass, setup_entry, "goldcard", next(iter(sim.meters)))
    triggers = await ours(hass, target)
    types = {t["type"] for t in triggers}
    assert types == GOLDCARD_ALARMS | COMMANDS | {"balance_below"}
    for trigger in triggers:
        assert trigger["device_id"] == target
        if trigger["type"] != "balance_below":
            TRIGGER_SCHEMA(trigger)
    [balance] = [t for t in triggers if t["type"] == "balance_below"]
    capabilities = await async_get_device_automation_capabilities(hass, DeviceAutomationType.TRIGGER, balance)
    [field] = capabilities["extra_fields"]
    assert (field["name"], field["required"], field["description"]) == ("below", True, {"suffix": "CNY"})


async def test_kumir_node_offers_nothing_it_cannot_do(
    hass: HomeAssistant, kumir_sim: KumirSimulator, kumir_entry: MockConfigEntry
) -> None:
    """A KUMIR-RESURS node has no alarms, valve, recharge or balance: no triggers to choose that never fire."""
    devices = dr.async_entries_for_config_entry(dr.async_get(hass), kumir_entry.entry_id)
    assert devices
    for node in devices:
        assert await ours(hass, node.id) == []


async def test_iot_meter_offers_alarm_and_event_kinds(
    hass: HomeAssistant, iot_sim: IotMeterSimulator, iot_entry: MockConfigEntry
) -> None:
    """The IoT platform's alarm kinds and device-event kinds are both triggers, besides commands and balance."""
    meter = next(d for d in iot_sim.devices.values() if d.device_type == 1)
    target = device(hass, iot_entry, "iotmeter", meter.comm_no)
    types = {t["type"] for t in await ours(hass, target)}
    assert {"gas_leak", "tampering", "door_open", "valve_opened", "valve_closed", "recharged"} <= types
    assert COMMANDS | {"balance_below"} <= types


def test_schema_threshold_only_for_balance() -> None:
    """A threshold belongs to the balance trigger alone, and the balance trigger needs one."""
    base = {"platform": "device", "domain": DOMAIN, "device_id": "abc"}
    assert TRIGGER_SCHEMA({**base, "type": "balance_below", "below": "12.5"})["below"] == 12.5
    for bad in ({"type": "balance_below"}, {"type": "gas_leak", "below": 3}, {"type": "no_such_kind"}):
        with pytest.raises(vol.Invalid, match=r"threshold|value must be one of|not a valid value"):
            TRIGGER_SCHEMA({**base, **bad})


async def test_alarm_triggers_fire_on_their_kind_and_meter_only(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """A gas-leak automation fires on a gas leak pushed for its meter: not on tampering, not for another meter,
    not twice for a re-sent push."""
    first, second = list(sim.meters)[:2]
    target = device(hass, setup_entry, "goldcard", first)
    calls = await automations(
        hass,
        {"device_id": target, "type": "gas_leak"},
        {"device_id": target, "type": "magnetic_interference"},
    )
    await sim.push_alarm(first, alarm_type="07", content="强磁干扰")
    await sim.push_alarm(second, alarm_type="02")
    await hass.async_block_till_done()
    assert fired(calls) == ["magnetic_interference"]
    status, _ = await sim.push_alarm(first, alarm_type="02", serial="LEAK-1")
    assert status == 200
    await sim.push_alarm(first, alarm_type="02", serial="LEAK-1")  # the same report again
    await hass.async_block_till_done()
    assert fired(calls) == ["magnetic_interference", "gas_leak"]
    assert calls[-1].data["trigger"] == "device"


async def test_valve_close_failed_fires_on_a_refused_close_only(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """2002 excuteState 2 for a close fires "valve failed to close"; a close that succeeds does not."""
    first, second = list(sim.meters)[:2]
    calls = await automations(
        hass,
        {"device_id": device(hass, setup_entry, "goldcard", first), "type": "valve_close_failed"},
        {"device_id": device(hass, setup_entry, "goldcard", second), "type": "valve_close_failed"},
        {"device_id": device(hass, setup_entry, "goldcard", first), "type": "valve_open_failed"},
    )
    sim.fail_commands = {first}
    for meter_no in (first, second):
        valve = entity(hass, "goldcard", meter_no, "valve", "valve")
        await hass.services.async_call(VALVE_DOMAIN, SERVICE_CLOSE_VALVE, {ATTR_ENTITY_ID: valve}, blocking=True)
    await settle(hass, sim)
    assert state(hass, entity(hass, "goldcard", second, "valve", "valve")) == "closed"
    assert fired(calls) == ["valve_close_failed"]
    assert [c for c in calls if c.data["type"] == "valve_close_failed"] == calls


async def test_recharge_triggers_follow_the_outcome(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """Two recharges in a row: each confirmed fires once; then one the meter fails fires "recharge failed"."""
    meter_no = next(iter(sim.meters))
    target = device(hass, setup_entry, "goldcard", meter_no)
    calls = await automations(
        hass,
        {"device_id": target, "type": "recharge_confirmed"},
        {"device_id": target, "type": "recharge_failed"},
        {"device_id": target, "type": "recharge_unknown"},
    )
    for reference in ("TRG-1", "TRG-2"):
        await act(hass, "recharge", {"device_id": target, "amount": 10, "reference": reference})
    await settle(hass, sim)
    assert fired(calls) == ["recharge_confirmed", "recharge_confirmed"]
    sim.fail_commands = {meter_no}
    await act(hass, "recharge", {"device_id": target, "amount": 10, "reference": "TRG-3"})
    await settle(hass, sim)
    assert fired(calls) == ["recharge_confirmed", "recharge_confirmed", "recharge_failed"]


async def test_balance_below_fires_once_per_crossing(
    hass: HomeAssistant, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """The balance falls under the threshold on a poll: one call; lower still: none; back above and under: one more."""
    meter_no = next(iter(sim.meters))
    meter = sim.meters[meter_no]
    balance = entity(hass, "goldcard", meter_no, "balance")
    assert Decimal(state(hass, balance)) == meter.balance
    threshold = meter.balance - Decimal(10)
    target = device(hass, setup_entry, "goldcard", meter_no)
    calls = await automations(hass, {"device_id": target, "type": "balance_below", "below": threshold})
    coordinator = setup_entry.runtime_data
    for value in (threshold + 1, threshold - 1, threshold - 5, threshold + 20, threshold - 2):
        meter.balance = value
        await coordinator.async_refresh()
        await hass.async_block_till_done()
        assert Decimal(state(hass, balance)) == value
    assert fired(calls) == ["balance_below", "balance_below"]


async def test_valve_close_with_a_lost_answer_fires_once_then_settles(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """The DAS took the close but its answer was lost (502): "valve failed to close" fires for the unknown
    outcome (a gas-leak automation must not wait for it); when 2002 confirms the close, nothing fires again."""
    meter_no = next(iter(sim.meters))
    calls = await automations(
        hass, {"device_id": device(hass, setup_entry, "goldcard", meter_no), "type": "valve_close_failed"}
    )
    valve = entity(hass, "goldcard", meter_no, "valve", "valve")
    sim.fail_next("lost_502", endpoint="1004")
    with pytest.raises(HomeAssistantError):
        await hass.services.async_call(VALVE_DOMAIN, SERVICE_CLOSE_VALVE, {ATTR_ENTITY_ID: valve}, blocking=True)
    await hass.async_block_till_done()
    assert fired(calls) == ["valve_close_failed"]
    await settle(hass, sim)
    assert state(hass, valve) == "closed"
    assert fired(calls) == ["valve_close_failed"]


async def test_iot_alarm_and_event_words_fire_their_triggers(
    hass: HomeAssistant, iot_push: TestClient, iot_sim: IotMeterSimulator, iot_entry: MockConfigEntry
) -> None:
    """The IoT platform's pushed words pick the trigger: 燃气泄漏 → gas leak, 关阀 (an event) → valve closed."""
    meter = next(d for d in iot_sim.devices.values() if d.device_type == 1)
    target = device(hass, iot_entry, "iotmeter", meter.comm_no)
    calls = await automations(
        hass,
        {"device_id": target, "type": "gas_leak"},
        {"device_id": target, "type": "valve_closed"},
        {"device_id": target, "type": "tampering"},
    )
    status, _ = await iot_sim.push_alarm(meter.comm_no, 4)
    assert status == 200
    await hass.async_block_till_done()
    assert fired(calls) == ["gas_leak"]
    status, _ = await iot_sim.push_event(meter.comm_no, 102)
    assert status == 200
    await hass.async_block_till_done()
    assert fired(calls) == ["gas_leak", "valve_closed"]
