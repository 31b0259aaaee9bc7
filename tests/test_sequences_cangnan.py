"""Cangnan CNMCSP, second and later commands through Home Assistant against the strict simulator.

The simulator shares one TradeNo namespace between recharges, refunds/deductions and other CIS terminals
(80002033 交易流水号已存在), and its meters were recharged before by other terminals. It has no result push for
money: a recharge is confirmed when the meter's cumulative purchases rise by its amount.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest
from homeassistant.components.valve import DOMAIN as VALVE_DOMAIN
from homeassistant.const import ATTR_ENTITY_ID, SERVICE_CLOSE_VALVE
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.meter_cloud.const import EVENT_COMMAND_RESULT
from simulator.cangnan import CangnanSimulator

from .sequences import act, device, entity, outcomes, state, warnings_about
from .timing import LOST_ANSWER_HANG, LOST_ANSWER_TIMEOUT, RELAXED_TIMEOUT


def trades(sim: CangnanSimulator, path: str = "recharge") -> list[dict[str, Any]]:
    """The requests the platform received on an endpoint."""
    return [p for n, p in sim.requests if n == path]


async def settle(hass: HomeAssistant, sim: CangnanSimulator, entry: MockConfigEntry) -> None:
    """The meters take what the platform has for them; then a poll."""
    await sim.settle()
    await entry.runtime_data.async_refresh()
    await hass.async_block_till_done(wait_background_tasks=True)


async def test_two_recharges_before_a_poll(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """Two trades sent before the meter took either: one poll confirms both, oldest first, on the totals."""
    meter = next(iter(cn_sim.meters.values()))
    before, bought = meter.remain_money, meter.total_buy_money
    assert bought > 0  # recharged before, by other terminals
    target = device(hass, cn_entry, "cangnan", meter.meter_id)
    for reference, amount in (("CN-TWO-1", 30), ("CN-TWO-2", 12)):
        assert (await act(hass, "recharge", {"device_id": target, "amount": amount, "reference": reference}))[
            "state"
        ] == "pending"
    await settle(hass, cn_sim, cn_entry)
    assert (meter.remain_money, meter.total_buy_money) == (before + 42, bought + 42)
    commands = cn_entry.runtime_data.commands
    assert [commands.get(r).state.value for r in ("CN-TWO-1", "CN-TWO-2")] == ["confirmed", "confirmed"]


async def test_only_the_trades_the_total_explains_are_confirmed(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """The platform took the first trade, not yet the second: the poll confirms the first only."""
    meter = next(iter(cn_sim.meters.values()))
    target = device(hass, cn_entry, "cangnan", meter.meter_id)
    await act(hass, "recharge", {"device_id": target, "amount": 30, "reference": "CN-ONE-1"})
    await cn_sim.settle()
    await act(hass, "recharge", {"device_id": target, "amount": 10, "reference": "CN-ONE-2"})
    await cn_entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    commands = cn_entry.runtime_data.commands
    assert [commands.get(r).state.value for r in ("CN-ONE-1", "CN-ONE-2")] == ["confirmed", "pending"]
    await settle(hass, cn_sim, cn_entry)
    assert commands.get("CN-ONE-2").state.value == "confirmed"


@pytest.mark.parametrize("loss", ["timeout", "lost_502", "lost_garbled", "drop"])
@pytest.mark.parametrize("restart", [False, True], ids=["same_run", "after_restart"])
async def test_lost_answer_then_retry_is_charged_once(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator, loss: str, restart: bool
) -> None:
    """The platform took the trade, the answer was lost (a 502 too: it says so); the same reference again is
    80002033 for a TradeNo we sent: pending, confirmed by the poll, money moved once."""
    meter = next(iter(cn_sim.meters.values()))
    before = meter.remain_money
    cn_entry.runtime_data.client.request_timeout = LOST_ANSWER_TIMEOUT
    cn_sim.hang_seconds = LOST_ANSWER_HANG
    cn_sim.fail_next(loss, endpoint="recharge")
    data = {"device_id": device(hass, cn_entry, "cangnan", meter.meter_id), "amount": 20, "reference": "CN-LOST"}
    with pytest.raises(HomeAssistantError) as err:
        await act(hass, "recharge", data)
    assert err.value.translation_key == "money_outcome_unknown"
    cn_entry.runtime_data.client.request_timeout = RELAXED_TIMEOUT  # only the lost call may time out
    status = entity(hass, "cangnan", meter.meter_id, "recharge_status")
    assert state(hass, status) == "unknown"
    if restart:
        assert await hass.config_entries.async_reload(cn_entry.entry_id)
        await hass.async_block_till_done()
    assert (await act(hass, "recharge", data))["state"] == "pending"
    assert [t["TradeNo"] for t in trades(cn_sim)] == ["CN-LOST", "CN-LOST"]
    await settle(hass, cn_sim, cn_entry)
    assert state(hass, status) == "confirmed"
    assert meter.remain_money == before + 20


async def test_lost_answer_is_confirmed_by_the_total_without_a_retry(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """Nobody retries: the poll that shows the purchases risen by the amount settles it anyway."""
    meter = next(iter(cn_sim.meters.values()))
    cn_sim.fail_next("lost_502", endpoint="recharge")
    data = {"device_id": device(hass, cn_entry, "cangnan", meter.meter_id), "amount": 8, "reference": "CN-QUIET"}
    with pytest.raises(HomeAssistantError):
        await act(hass, "recharge", data)
    await settle(hass, cn_sim, cn_entry)
    assert cn_entry.runtime_data.commands.get("CN-QUIET").state.value == "confirmed"


@pytest.mark.parametrize("service", ["recharge", "adjust_balance"])
async def test_reference_used_by_another_terminal(
    hass: HomeAssistant,
    cn_entry: MockConfigEntry,
    cn_sim: CangnanSimulator,
    caplog: pytest.LogCaptureFixture,
    service: str,
) -> None:
    """A TradeNo another CIS terminal used (80002033 on our first send) is refused as such, never 'pending'."""
    meter = next(iter(cn_sim.meters.values()))
    cn_sim.foreign_trade("T-ELSEWHERE", meter.meter_id, Decimal(50))
    before = meter.remain_money
    events = async_capture_events(hass, EVENT_COMMAND_RESULT)
    data: dict[str, Any] = {
        "device_id": device(hass, cn_entry, "cangnan", meter.meter_id),
        "amount": 15,
        "reference": "T-ELSEWHERE",
    }
    if service == "adjust_balance":
        data["operation"] = "credit"
    with pytest.raises(HomeAssistantError) as err:
        await act(hass, service, data)
    assert err.value.translation_key == "reference_in_use"
    await hass.async_block_till_done()
    assert outcomes(events, "T-ELSEWHERE") == ["failed"]
    assert (await act(hass, service, data))["state"] == "failed"
    await settle(hass, cn_sim, cn_entry)
    assert meter.remain_money == before
    assert warnings_about(caplog, meter.meter_id)


async def test_refused_valve_is_never_silent(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A close the platform accepted and the meter then failed (valve 11): event, attributes, warning."""
    caplog.set_level(logging.WARNING)
    meter = next(iter(cn_sim.meters.values()))
    cn_sim.fail_valves = {meter.meter_id}
    events = async_capture_events(hass, EVENT_COMMAND_RESULT)
    valve = entity(hass, "cangnan", meter.meter_id, "valve", "valve")
    await hass.services.async_call(VALVE_DOMAIN, SERVICE_CLOSE_VALVE, {ATTR_ENTITY_ID: valve}, blocking=True)
    assert state(hass, valve) == "closing"
    await settle(hass, cn_sim, cn_entry)
    [event] = events
    assert (event.data["command"], event.data["state"], event.data["meter_id"]) == (
        "valve_close",
        "failed",
        meter.meter_id,
    )
    attributes = hass.states.get(valve).attributes
    assert (attributes["last_command"], attributes["last_command_state"]) == ("valve_close", "failed")
    assert "fault" in attributes["last_command_message"]
    assert [w for w in warnings_about(caplog, meter.meter_id) if "Valve close" in w]
