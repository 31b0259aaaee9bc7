"""IoT meter data platform, second and later commands through Home Assistant against the strict simulator.

The simulated meters refuse (0xbb) a remote charge whose charge_times/total_value do not follow on from their own
remote_charge_state, and were charged remotely before by the gas company's own system.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from homeassistant.components.valve import DOMAIN as VALVE_DOMAIN
from homeassistant.const import ATTR_ENTITY_ID, SERVICE_CLOSE_VALVE
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.meter_cloud.const import EVENT_COMMAND_RESULT
from simulator.iotmeter import IotMeterSimulator

from .sequences import act, device, entity, outcomes, state, warnings_about
from .test_iotmeter import settle as settle_queue
from .timing import LOST_ANSWER_HANG, LOST_ANSWER_TIMEOUT, RELAXED_TIMEOUT

BACKEND = "iotmeter"


def first_meter(sim: IotMeterSimulator) -> Any:
    """The first meter (not an RTU) whose valve is open."""
    return next(d for d in sim.devices.values() if d.device_type == 1 and d.flags["valve_open"])


def charges(sim: IotMeterSimulator, comm_no: str) -> list[dict[str, Any]]:
    """The remote charges queued for a meter, oldest first, with their ctrl_data decoded."""
    found = [
        c for c in sim.commands.values() if c["target_comm_no"] == comm_no and c["ctrl_type"].endswith("remotecharge")
    ]
    return [c | {"data": json.loads(c["ctrl_data"])} for c in found]


async def settle(hass: HomeAssistant, sim: IotMeterSimulator) -> None:
    """Every queued task ends and Home Assistant takes the Reports (and what they set off), three rounds over."""
    await settle_queue(hass, sim, rounds=3)


async def test_two_recharges_before_the_counters_are_known(
    hass: HomeAssistant, iot_push: TestClient, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """Both wait for one getchargestate, then go out as n+1 and n+2 with running totals: both arrive."""
    dev = first_meter(iot_sim)
    before, times = dev.remain_money, int(dev.charges["remote_charge_times"])
    total = Decimal(str(dev.charges["remote_total_value"]))
    target = device(hass, iot_entry, BACKEND, dev.comm_no)
    for reference, amount in (("IOT-TWO-1", 30), ("IOT-TWO-2", 12)):
        response = await act(hass, "recharge", {"device_id": target, "amount": amount, "reference": reference})
        assert response["state"] == "preparing"
    await hass.async_block_till_done(wait_background_tasks=True)
    reads = [c for c in iot_sim.commands.values() if c["ctrl_type"].endswith("getchargestate")]
    assert len(reads) == 1
    await settle(hass, iot_sim)
    assert [c["data"] for c in charges(iot_sim, dev.comm_no)] == [
        {"charge_value": 30.0, "total_value": float(total + 30), "charge_times": times + 1},
        {"charge_value": 12.0, "total_value": float(total + 42), "charge_times": times + 2},
    ]
    assert dev.remain_money == before + 42
    commands = iot_entry.runtime_data.commands
    assert [commands.get(r).state.value for r in ("IOT-TWO-1", "IOT-TWO-2")] == ["confirmed", "confirmed"]


async def test_learned_counters_survive_a_restart(
    hass: HomeAssistant, iot_push: TestClient, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """The counters one getchargestate taught are on disk: after a restart the next recharge goes out at once
    with the next numbers, no second read (and the meter takes them)."""
    dev = first_meter(iot_sim)
    target = device(hass, iot_entry, BACKEND, dev.comm_no)
    await act(hass, "recharge", {"device_id": target, "amount": 10, "reference": "IOT-KEEP-1"})
    await settle(hass, iot_sim)
    assert await hass.config_entries.async_reload(iot_entry.entry_id)
    await hass.async_block_till_done()
    before = dev.remain_money
    response = await act(hass, "recharge", {"device_id": target, "amount": 5, "reference": "IOT-KEEP-2"})
    assert response["state"] == "pending"
    assert len([c for c in iot_sim.commands.values() if c["ctrl_type"].endswith("getchargestate")]) == 1
    await settle(hass, iot_sim)
    assert iot_entry.runtime_data.commands.get("IOT-KEEP-2").state.value == "confirmed"
    assert dev.remain_money == before + 5


async def test_another_systems_charge_makes_us_read_the_counters_again(
    hass: HomeAssistant, iot_push: TestClient, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """After our recharge, the gas company charges the meter too: its purchases rise beyond ours, so the
    next recharge reads the counters again instead of sending numbers the meter would refuse."""
    dev = first_meter(iot_sim)
    target = device(hass, iot_entry, BACKEND, dev.comm_no)
    await act(hass, "recharge", {"device_id": target, "amount": 10, "reference": "IOT-A"})
    await settle(hass, iot_sim)
    iot_sim.external_recharge(dev.comm_no, Decimal(25))
    await iot_entry.runtime_data.async_refresh()
    response = await act(hass, "recharge", {"device_id": target, "amount": 5, "reference": "IOT-B"})
    assert response["state"] == "preparing"
    await settle(hass, iot_sim)
    assert iot_entry.runtime_data.commands.get("IOT-B").state.value == "confirmed"
    assert charges(iot_sim, dev.comm_no)[-1]["data"]["charge_times"] == int(dev.charges["remote_charge_times"])


@pytest.mark.parametrize("loss", ["timeout", "lost_502", "lost_garbled"])
@pytest.mark.parametrize("restart", [False, True], ids=["same_run", "after_restart"])
async def test_lost_answer_then_retry_is_charged_once(
    hass: HomeAssistant,
    iot_push: TestClient,
    iot_entry: MockConfigEntry,
    iot_sim: IotMeterSimulator,
    loss: str,
    restart: bool,
) -> None:
    """CtrlData/Add queued the charge but its answer was lost; the same reference again finds it in the queue
    (ours): no second Add, confirmed by the Report, money moved once."""
    dev = first_meter(iot_sim)
    target = device(hass, iot_entry, BACKEND, dev.comm_no)
    await act(hass, "recharge", {"device_id": target, "amount": 1, "reference": "IOT-WARM"})  # learn the counters
    await settle(hass, iot_sim)
    before = dev.remain_money
    iot_entry.runtime_data.client.request_timeout = LOST_ANSWER_TIMEOUT
    iot_sim.hang_seconds = LOST_ANSWER_HANG
    iot_sim.fail_next(loss, endpoint="Add")
    data = {"device_id": target, "amount": 20, "reference": "IOT-LOST"}
    with pytest.raises(HomeAssistantError) as err:
        await act(hass, "recharge", data)
    assert err.value.translation_key == "money_outcome_unknown"
    iot_entry.runtime_data.client.request_timeout = RELAXED_TIMEOUT  # only the lost call may time out
    assert state(hass, entity(hass, BACKEND, dev.comm_no, "recharge_status")) == "unknown"
    if restart:
        assert await hass.config_entries.async_reload(iot_entry.entry_id)
        await hass.async_block_till_done()
    assert (await act(hass, "recharge", data))["state"] == "pending"
    assert [c["ctrl_define_no"] for c in iot_sim.commands.values()].count("IOT-LOST") == 1
    await settle(hass, iot_sim)
    assert state(hass, entity(hass, BACKEND, dev.comm_no, "recharge_status")) == "confirmed"
    assert dev.remain_money == before + 20


async def test_reference_used_by_another_application(
    hass: HomeAssistant, iot_push: TestClient, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """The queue already has a task with our reference that this entry never sent: refused as such."""
    dev = first_meter(iot_sim)
    client = iot_entry.runtime_data.client
    meter = iot_entry.runtime_data.data[dev.comm_no]
    await client.async_set_valve(meter, True, "IOT-THEIRS")  # another application on the platform account
    target = device(hass, iot_entry, BACKEND, dev.comm_no)
    events = async_capture_events(hass, EVENT_COMMAND_RESULT)
    with pytest.raises(HomeAssistantError) as err:
        await act(hass, "set_remaining_balance", {"device_id": target, "amount": 3, "reference": "IOT-THEIRS"})
    assert err.value.translation_key == "reference_in_use"
    await hass.async_block_till_done()
    assert outcomes(events, "IOT-THEIRS") == ["failed"]


async def test_refused_valve_then_retry_that_fails_again(
    hass: HomeAssistant,
    iot_push: TestClient,
    iot_entry: MockConfigEntry,
    iot_sim: IotMeterSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """State 4 for a close: event, attributes, warning. retry_command: its Report, word for word the first one,
    is applied again (failed twice, two events); a third attempt that succeeds closes the valve."""
    caplog.set_level(logging.WARNING)
    dev = first_meter(iot_sim)
    iot_sim.fail_commands = {dev.comm_no}
    events = async_capture_events(hass, EVENT_COMMAND_RESULT)
    valve = entity(hass, BACKEND, dev.comm_no, "valve", "valve")
    await hass.services.async_call(VALVE_DOMAIN, SERVICE_CLOSE_VALVE, {ATTR_ENTITY_ID: valve}, blocking=True)
    assert state(hass, valve) == "closing"
    await settle(hass, iot_sim)
    serial = hass.states.get(valve).attributes["last_command_serial"]
    assert hass.states.get(valve).attributes["last_command_state"] == "failed"
    assert state(hass, valve) == "open"
    assert [w for w in warnings_about(caplog, dev.comm_no) if "Valve close" in w]
    target = device(hass, iot_entry, BACKEND, dev.comm_no)
    assert (await act(hass, "retry_command", {"device_id": target, "serial": serial}))["state"] == "pending"
    assert state(hass, valve) == "closing"
    await settle(hass, iot_sim)
    assert outcomes(events, serial) == ["failed", "failed"]
    assert state(hass, valve) == "open"
    iot_sim.fail_commands = False
    await act(hass, "retry_command", {"device_id": target, "serial": serial})
    await settle(hass, iot_sim)
    assert outcomes(events, serial) == ["failed", "failed", "confirmed"]
    assert state(hass, valve) == "closed"
    assert iot_entry.runtime_data.commands.get(serial).attempts == 3


async def test_a_re_sent_report_changes_nothing(
    hass: HomeAssistant, iot_push: TestClient, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """The platform delivers a Report again, byte for byte: acknowledged, announced once."""
    dev = first_meter(iot_sim)
    events = async_capture_events(hass, EVENT_COMMAND_RESULT)
    valve = entity(hass, BACKEND, dev.comm_no, "valve", "valve")
    await hass.services.async_call(VALVE_DOMAIN, SERVICE_CLOSE_VALVE, {ATTR_ENTITY_ID: valve}, blocking=True)
    await settle(hass, iot_sim)
    serial = hass.states.get(valve).attributes["last_command_serial"]
    ctrl_id = int(iot_entry.runtime_data.commands.get(serial).vendor_id)
    status, answer = await iot_sim.resend_report(ctrl_id)
    await hass.async_block_till_done()
    assert (status, answer["State"]) == (200, "success")
    assert outcomes(events, serial) == ["confirmed"]


async def test_counters_that_cannot_be_read_fail_the_parked_recharge(
    hass: HomeAssistant, iot_push: TestClient, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """The charge-state read fails (task state 4): the recharge waiting for it fails, nothing was sent for it."""
    dev = first_meter(iot_sim)
    before = dev.remain_money
    iot_sim.fail_commands = {dev.comm_no}
    events = async_capture_events(hass, EVENT_COMMAND_RESULT)
    target = device(hass, iot_entry, BACKEND, dev.comm_no)
    assert (await act(hass, "recharge", {"device_id": target, "amount": 9, "reference": "IOT-BLIND"}))[
        "state"
    ] == "preparing"
    await settle(hass, iot_sim)
    command = iot_entry.runtime_data.commands.get("IOT-BLIND")
    assert command.state.value == "failed"
    assert "counters could not be read" in command.message
    assert outcomes(events, "IOT-BLIND") == ["failed"]
    assert charges(iot_sim, dev.comm_no) == []
    assert dev.remain_money == before
