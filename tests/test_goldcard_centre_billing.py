"""Goldcard centre-billed meters (billingModel 2/3): commands ride on our answer to the meter's next 2001 report.

Through Home Assistant against the simulator: its centre-billed meters refuse 1004 (strict), do what our 2001 answer
says, and report the result in their next 2001.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from homeassistant.components.valve import DOMAIN as VALVE_DOMAIN
from homeassistant.const import SERVICE_CLOSE_VALVE, SERVICE_OPEN_VALVE
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.meter_cloud.const import EVENT_COMMAND_RESULT
from simulator.goldcard import GoldcardSimulator

from .sequences import act, device, entity, outcomes, state


async def centre_meter(hass: HomeAssistant, sim: GoldcardSimulator) -> str:
    """The first meter, made centre-billed; one 2001 tells Home Assistant so."""
    meter_no = next(iter(sim.meters))
    sim.meters[meter_no].billing_model = "2"
    status, answer = await sim.push_reading(meter_no)
    await hass.async_block_till_done()
    assert (status, answer["valvecontrol"]) == (200, "2")
    assert "remainquantity" not in answer
    return meter_no


async def report(hass: HomeAssistant, sim: GoldcardSimulator, meter_no: str, serial: str | None = None) -> Any:
    """The meter reports (2001); Home Assistant answers and applies; the answer."""
    status, answer = await sim.push_reading(meter_no, serial)
    assert status == 200
    await hass.async_block_till_done()
    return answer


def valve_commands(sim: GoldcardSimulator, meter_no: str) -> list[dict[str, Any]]:
    """1004 requests the DAS got for a meter."""
    return [p for n, p in sim.requests if n == "1004" and p.get("meterNo") == meter_no]


async def valve(hass: HomeAssistant, meter_no: str, service: str) -> str:
    eid = entity(hass, "goldcard", meter_no, "valve", "valve")
    await hass.services.async_call(VALVE_DOMAIN, service, {"entity_id": eid}, blocking=True)
    return eid


async def test_close_goes_out_in_the_next_answer_and_the_following_report_confirms(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """Close: pending, no 1004; the next answer says valvecontrol 1 and the meter closes; the report after that
    shows it closed: confirmed. A second command (open) then goes the same way."""
    meter_no = await centre_meter(hass, sim)
    events = async_capture_events(hass, EVENT_COMMAND_RESULT)
    eid = await valve(hass, meter_no, SERVICE_CLOSE_VALVE)
    assert state(hass, eid) == "closing"
    assert valve_commands(sim, meter_no) == []
    assert (await report(hass, sim, meter_no))["valvecontrol"] == "1"
    assert sim.meters[meter_no].valve == "closed"
    assert state(hass, eid) == "closing"  # delivered; the meter's next report settles it
    assert (await report(hass, sim, meter_no))["valvecontrol"] == "2"
    assert state(hass, eid) == "closed"
    assert [e.data["state"] for e in events] == ["confirmed"]
    await valve(hass, meter_no, SERVICE_OPEN_VALVE)
    assert (await report(hass, sim, meter_no))["valvecontrol"] == "0"
    assert (await report(hass, sim, meter_no))["valvecontrol"] == "2"
    assert state(hass, eid) == "open"
    assert [(e.data["command"], e.data["state"]) for e in events] == [
        ("valve_close", "confirmed"),
        ("valve_open", "confirmed"),
    ]
    assert valve_commands(sim, meter_no) == []


async def test_lost_answer_is_delivered_again_and_a_resent_report_settles_nothing(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """The DAS re-sends a report (same serial): the same answer, nothing settled. Our answer lost: the following
    report still shows the valve open, so the close goes out again and is then confirmed."""
    meter_no = await centre_meter(hass, sim)
    eid = await valve(hass, meter_no, SERVICE_CLOSE_VALVE)
    sim.lose_answers = 2  # the first answer and the one to the re-sent report
    assert (await report(hass, sim, meter_no, "RPT-1"))["valvecontrol"] == "1"
    assert sim.meters[meter_no].valve == "open"
    assert (await report(hass, sim, meter_no, "RPT-1"))["valvecontrol"] == "1"  # re-sent: same answer
    assert state(hass, eid) == "closing"
    assert setup_entry.runtime_data.client.owed(meter_no)["tries"] == 1
    assert (await report(hass, sim, meter_no))["valvecontrol"] == "1"  # still open: again
    assert sim.meters[meter_no].valve == "closed"
    await report(hass, sim, meter_no)
    assert state(hass, eid) == "closed"


async def test_a_valve_that_never_moves_fails_after_three_answers(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """Three answers said close, three reports still show it open: failed, said so, and the answers stop."""
    meter_no = await centre_meter(hass, sim)
    sim.stuck_valves = {meter_no}
    events = async_capture_events(hass, EVENT_COMMAND_RESULT)
    eid = await valve(hass, meter_no, SERVICE_CLOSE_VALVE)
    answers = [(await report(hass, sim, meter_no))["valvecontrol"] for _ in range(4)]
    assert answers == ["1", "1", "1", "2"]
    assert state(hass, eid) == "open"
    [event] = events
    assert (event.data["state"], event.data["command"]) == ("failed", "valve_close")
    assert "after 3 answers" in event.data["message"]


async def test_remaining_amount_and_price_survive_a_restart(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """A remaining amount and a flat price owed to the meter are delivered after a restart, then confirmed;
    recharge is refused for such a meter, a tiered price too, and a remaining amount for a meter-billed one."""
    meter_no = await centre_meter(hass, sim)
    other = list(sim.meters)[1]
    target = device(hass, setup_entry, "goldcard", meter_no)
    events = async_capture_events(hass, EVENT_COMMAND_RESULT)
    with pytest.raises(ServiceValidationError) as err:
        await act(hass, "recharge", {"device_id": target, "amount": 10, "reference": "CB-1"})
    assert err.value.translation_key == "centre_billed_no_recharge"
    with pytest.raises(ServiceValidationError) as err:
        await act(
            hass, "set_remaining_balance", {"device_id": device(hass, setup_entry, "goldcard", other), "amount": 5}
        )
    assert err.value.translation_key == "meter_billed_no_remaining"
    with pytest.raises(ServiceValidationError) as err:
        await act(hass, "set_price", {"device_id": [target], "price_1": 3, "ladder_1": 100, "price_2": 4})
    assert err.value.translation_key == "centre_billed_flat_price"
    with pytest.raises(ServiceValidationError):  # a schedule is the IoT queue's; the DAS has none
        await act(hass, "set_remaining_balance", {"device_id": target, "amount": 1, "timeout": {"hours": 2}})
    response = await act(hass, "set_remaining_balance", {"device_id": target, "amount": 88.5})
    assert response["state"] == "pending"
    priced = await act(hass, "set_price", {"device_id": [target], "price_1": 2.75})
    assert priced["queued"] == [meter_no]
    assert await hass.config_entries.async_reload(setup_entry.entry_id)
    await hass.async_block_till_done()
    answer = await report(hass, sim, meter_no)
    assert (answer["remainquantity"], answer["currentprice"], answer["valvecontrol"]) == ("88.5000", "2.7500", "2")
    assert (sim.meters[meter_no].balance, sim.meters[meter_no].price) == (Decimal("88.5"), Decimal("2.75"))
    answer = await report(hass, sim, meter_no)
    assert "remainquantity" not in answer
    assert outcomes(events, response["serial"]) == ["confirmed"]
    assert [p for n, p in sim.requests if n in ("1007", "1008")] == []
