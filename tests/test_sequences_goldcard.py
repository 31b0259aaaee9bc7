"""Goldcard DAS, second and later commands through Home Assistant against the strict simulator.

The simulator refuses any repeated serialNo (9999 流水号重复) and fails a recharge whose rechargeCount is not the
meter's count + 1 when it executes; its meters were recharged before by the gas company's own system.
"""

from __future__ import annotations

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
from simulator.goldcard import GoldcardSimulator

from .conftest import PUSH_ID
from .sequences import act, device, entity, outcomes, state, warnings_about
from .timing import LOST_ANSWER_HANG, LOST_ANSWER_TIMEOUT, RELAXED_TIMEOUT

COMMAND_RESULT = "api/collect/meter/2002"


def recharges(sim: GoldcardSimulator) -> list[dict[str, Any]]:
    """The 1004 recharge requests the DAS received."""
    return [p for n, p in sim.requests if n == "1004" and p.get("paramNo") == "05"]


async def settle(hass: HomeAssistant, sim: GoldcardSimulator) -> None:
    """The meters execute what they have; Home Assistant takes the 2002 pushes and re-reads."""
    await sim.settle()
    await hass.async_block_till_done(wait_background_tasks=True)


async def test_two_recharges_before_a_poll(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """Both carry the meter's true count + 1 and + 2 (other systems' recharges included): both arrive."""
    meter_no, meter = next(iter(sim.meters.items()))
    before, count = meter.balance, meter.recharge_count
    assert count >= 1
    target = device(hass, setup_entry, "goldcard", meter_no)
    for reference, amount in (("TWO-1", 30), ("TWO-2", 12)):
        assert (await act(hass, "recharge", {"device_id": target, "amount": amount, "reference": reference}))[
            "state"
        ] == "pending"
    assert [r["paramContext"]["data"]["rechargeCount"] for r in recharges(sim)] == [str(count + 1), str(count + 2)]
    await settle(hass, sim)
    assert (meter.balance, meter.recharge_count) == (before + 42, count + 2)
    assert state(hass, entity(hass, "goldcard", meter_no, "recharge_status")) == "confirmed"
    assert setup_entry.runtime_data.commands.get(recharges(sim)[0]["serialNo"]).state.value == "confirmed"
    # A recharge made by another system later is counted too.
    sim.external_recharge(meter_no, Decimal(5))
    await act(hass, "recharge", {"device_id": target, "amount": 1, "reference": "TWO-3"})
    assert recharges(sim)[-1]["paramContext"]["data"]["rechargeCount"] == str(count + 4)
    await settle(hass, sim)
    assert meter.balance == before + 48


@pytest.mark.parametrize("loss", ["timeout", "lost_502", "lost_garbled", "drop"])
@pytest.mark.parametrize("restart", [False, True], ids=["same_run", "after_restart"])
async def test_lost_answer_then_retry_is_charged_once(
    hass: HomeAssistant,
    push_client: TestClient,
    sim: GoldcardSimulator,
    setup_entry: MockConfigEntry,
    loss: str,
    restart: bool,
) -> None:
    """The DAS took the recharge, its answer was lost; the same reference again (9999 重复) is ours: pending,
    confirmed by 2002, money moved once. The error says the money may be on its way, whatever the loss."""
    meter_no, meter = next(iter(sim.meters.items()))
    before = meter.balance
    setup_entry.runtime_data.client.request_timeout = LOST_ANSWER_TIMEOUT
    sim.hang_seconds = LOST_ANSWER_HANG
    sim.fail_next(loss, endpoint="1004")
    data = {"device_id": device(hass, setup_entry, "goldcard", meter_no), "amount": 20, "reference": "LOST-1"}
    with pytest.raises(HomeAssistantError) as err:
        await act(hass, "recharge", data)
    assert err.value.translation_key == "money_outcome_unknown"
    setup_entry.runtime_data.client.request_timeout = RELAXED_TIMEOUT  # only the lost call may time out
    assert err.value.translation_placeholders["reference"] == "LOST-1"
    status = entity(hass, "goldcard", meter_no, "recharge_status")
    assert state(hass, status) == "unknown"
    if restart:
        assert await hass.config_entries.async_reload(setup_entry.entry_id)
        await hass.async_block_till_done()
        assert state(hass, status) == "unknown"
    assert (await act(hass, "recharge", data))["state"] == "pending"
    first, second = recharges(sim)
    # The same serial, recharge time and count: a resend, not a new order (only the request's own time differs).
    assert {**first, "sdateTime": ""} == {**second, "sdateTime": ""}
    await settle(hass, sim)
    assert state(hass, status) == "confirmed"
    assert meter.balance == before + 20
    assert (await act(hass, "recharge", data))["state"] == "confirmed"
    assert len(recharges(sim)) == 2


async def test_new_recharge_waits_for_an_unresolved_one(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """While a recharge's outcome is unknown, another one is refused with the reference to resolve first."""
    meter_no, meter = next(iter(sim.meters.items()))
    before = meter.balance
    target = device(hass, setup_entry, "goldcard", meter_no)
    sim.fail_next("lost_502", endpoint="1004")
    with pytest.raises(HomeAssistantError):
        await act(hass, "recharge", {"device_id": target, "amount": 10, "reference": "OPEN-1"})
    with pytest.raises(HomeAssistantError) as err:
        await act(hass, "recharge", {"device_id": target, "amount": 5, "reference": "OPEN-2"})
    assert (err.value.translation_key, err.value.translation_placeholders["reference"]) == (
        "recharge_unresolved",
        "OPEN-1",
    )
    assert len(recharges(sim)) == 1
    await act(hass, "recharge", {"device_id": target, "amount": 10, "reference": "OPEN-1"})
    await act(hass, "recharge", {"device_id": target, "amount": 5, "reference": "OPEN-2"})
    await settle(hass, sim)
    assert meter.balance == before + 15


async def test_reference_used_by_another_system(
    hass: HomeAssistant,
    push_client: TestClient,
    sim: GoldcardSimulator,
    setup_entry: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The DAS already has our serial from another CIS terminal on the account: refused, said so, nothing charged."""
    meter_no, meter = next(iter(sim.meters.items()))
    client = setup_entry.runtime_data.client
    serial = client.recharge_serial("SHARED-1")
    # Another terminal of the account sends a request with that serial first (any endpoint spends it).
    other = {"serialNo": serial, "companyCode": sim.company_code, "factorNo": sim.factor_no, "meterNo": ""}
    await client._call("api/v2/collect/meter/1013", other | {"readingDate": ""})
    before = meter.balance
    events = async_capture_events(hass, EVENT_COMMAND_RESULT)
    data = {"device_id": device(hass, setup_entry, "goldcard", meter_no), "amount": 9, "reference": "SHARED-1"}
    with pytest.raises(HomeAssistantError) as err:
        await act(hass, "recharge", data)
    assert err.value.translation_key == "reference_in_use"
    await hass.async_block_till_done()
    assert outcomes(events, "SHARED-1") == ["failed"]
    assert events[-1].data["reason"] == "reference_in_use"
    assert state(hass, entity(hass, "goldcard", meter_no, "recharge_status")) == "failed"
    assert (await act(hass, "recharge", data))["state"] == "failed"  # answered from the ledger, not resent
    await settle(hass, sim)
    assert meter.balance == before
    assert warnings_about(caplog, meter_no)


async def test_refused_valve_is_never_silent(
    hass: HomeAssistant,
    push_client: TestClient,
    sim: GoldcardSimulator,
    setup_entry: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """2002 excuteState 2 for a close: an event for automations, the valve's attributes, a warning naming the meter."""
    caplog.set_level(logging.WARNING)
    meter_no = next(iter(sim.meters))
    sim.fail_commands = {meter_no}
    events = async_capture_events(hass, EVENT_COMMAND_RESULT)
    valve = entity(hass, "goldcard", meter_no, "valve", "valve")
    await hass.services.async_call(VALVE_DOMAIN, SERVICE_CLOSE_VALVE, {ATTR_ENTITY_ID: valve}, blocking=True)
    assert state(hass, valve) == "closing"
    await settle(hass, sim)
    assert state(hass, valve) == "open"
    [event] = events
    assert {k: event.data[k] for k in ("command", "state", "previous_state", "meter_id")} == {
        "command": "valve_close",
        "state": "failed",
        "previous_state": "pending",
        "meter_id": meter_no,
    }
    assert event.data["device_id"] == device(hass, setup_entry, "goldcard", meter_no)
    attributes = hass.states.get(valve).attributes
    assert (attributes["last_command"], attributes["last_command_state"]) == ("valve_close", "failed")
    assert attributes["last_command_time"]
    assert [w for w in warnings_about(caplog, meter_no) if "Valve close" in w and "failed" in w]


async def test_success_after_failed_is_confirmed_with_a_warning(
    hass: HomeAssistant,
    push_client: TestClient,
    sim: GoldcardSimulator,
    setup_entry: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 2002 excuteState 2, then (the DAS retried the meter) excuteState 1 for the same command: confirmed."""
    meter_no, meter = next(iter(sim.meters.items()))
    events = async_capture_events(hass, EVENT_COMMAND_RESULT)
    response = await act(
        hass,
        "recharge",
        {"device_id": device(hass, setup_entry, "goldcard", meter_no), "amount": 6, "reference": "LATE-1"},
    )
    serial = response["serial"]
    sim.commands[serial]["state"] = "failed"
    await post_2002(push_client, sim, serial)
    assert state(hass, entity(hass, "goldcard", meter_no, "recharge_status")) == "failed"
    sim.commands[serial]["state"] = "pending"
    await settle(hass, sim)  # executes now and pushes excuteState 1
    assert state(hass, entity(hass, "goldcard", meter_no, "recharge_status")) == "confirmed"
    assert outcomes(events, "LATE-1") == ["failed", "confirmed"]
    assert [w for w in warnings_about(caplog, meter_no) if "confirmed" in w and "LATE-1" in w]
    assert meter.balance == sim.meters[meter_no].balance


async def post_2002(client: TestClient, sim: GoldcardSimulator, serial: str) -> None:
    """POST a signed 2002 for a command to Home Assistant, as the DAS does."""
    headers, body = sim.signed_push(COMMAND_RESULT, sim.command_body(serial))
    resp = await client.post(f"/api/meter_cloud/push/{PUSH_ID}/{COMMAND_RESULT}", data=body, headers=headers)
    assert resp.status == 200
