"""Cangnan meter state (chapter 8: 0 opened, 1 in use, -1 suspended, -2 cancelled) as a translated sensor.

No documented call returns it: the entry learns it from its own account operations and the platform's refusals
(80002023), keeps it across restarts, and takes the platform's word whenever a row carries the state.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from pytest_homeassistant_custom_component.common import MockConfigEntry

from simulator.cangnan import CANCELLED, IN_USE, SUSPENDED, CangnanSimulator

from .sequences import act, device, entity, state

BACKEND = "cangnan"


async def refresh(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """One poll, and whatever it started."""
    await entry.runtime_data.async_refresh()
    await hass.async_block_till_done()


async def restart(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Unload and set up the entry again (what it knows must come back from disk)."""
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()


def status_of(hass: HomeAssistant, meter_id: str) -> str:
    """The meter state sensor's state."""
    return state(hass, entity(hass, BACKEND, meter_id, "status"))


async def test_unknown_until_learned_then_kept_over_restarts(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """Nothing said it yet: unknown, not 'in use'. Suspend and resume through Home Assistant show, and survive
    a restart; a suspended meter's refused recharge leaves it suspended."""
    meter = next(iter(cn_sim.meters.values()))
    target = device(hass, cn_entry, BACKEND, meter.meter_id)
    assert status_of(hass, meter.meter_id) == "unknown"

    await act(hass, "suspend_meter", {"device_id": target})
    assert (meter.state, status_of(hass, meter.meter_id)) == (SUSPENDED, "suspended")
    await restart(hass, cn_entry)
    assert status_of(hass, meter.meter_id) == "suspended"
    with pytest.raises(HomeAssistantError) as err:
        await act(hass, "recharge", {"device_id": target, "amount": 5, "reference": "CN-SUSP"})
    assert err.value.translation_key == "account_inactive"
    assert status_of(hass, meter.meter_id) == "suspended"  # not the vaguer 'inactive'

    await act(hass, "resume_meter", {"device_id": target})
    assert (meter.state, status_of(hass, meter.meter_id)) == (IN_USE, "active")
    await restart(hass, cn_entry)
    assert status_of(hass, meter.meter_id) == "active"


async def test_refusal_and_acceptance_teach_the_state(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """Another terminal cancelled one meter: our command's 80002023 makes it 'inactive' (cancelled, suspended
    or dormant: the platform does not say). A command the platform carries out makes another 'active'; the
    first goes back to 'active' once a command is accepted for it again."""
    first, second = list(cn_sim.meters.values())[:2]
    cn_sim.set_state(first.meter_id, CANCELLED)
    with pytest.raises(HomeAssistantError) as err:
        await act(hass, "recharge", {"device_id": device(hass, cn_entry, BACKEND, first.meter_id), "amount": 5})
    assert err.value.translation_key == "account_inactive"
    assert status_of(hass, first.meter_id) == "inactive"
    await refresh(hass, cn_entry)
    assert status_of(hass, first.meter_id) == "inactive"  # the poll has no state column: what we learned stays

    await act(hass, "recharge", {"device_id": device(hass, cn_entry, BACKEND, second.meter_id), "amount": 5})
    assert status_of(hass, second.meter_id) == "active"

    cn_sim.set_state(first.meter_id, IN_USE)  # reopened elsewhere
    valve = entity(hass, BACKEND, first.meter_id, "valve", "valve")
    await hass.services.async_call("valve", "close_valve", {"entity_id": valve}, blocking=True)
    assert status_of(hass, first.meter_id) == "active"


async def test_registered_meter_is_opened_until_it_reports(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """meteradd opens an account (state 0); the first reading taken after it means gas flows (state 1)."""
    registration: dict[str, Any] = {
        "config_entry_id": cn_entry.entry_id,
        "user_no": "KYNYN300001",
        "meter_no": "012345679301",
        "meter_type": "CNMCPUJE",
        "meter_protocol": "CNModbusV61",
        "price_1": 2.5,
    }
    await act(hass, "register_meter", registration)
    await hass.async_block_till_done()  # the entry reloads with the longer list
    assert status_of(hass, "012345679301") == "opened"
    await refresh(hass, cn_entry)
    assert status_of(hass, "012345679301") == "opened"  # its reading is the one it was opened with
    cn_sim.tick(15)
    cn_sim.meters["012345679301"].read_time += timedelta(minutes=1)  # the platform's clock has seconds only
    await refresh(hass, cn_entry)
    assert status_of(hass, "012345679301") == "active"
    await restart(hass, cn_entry)
    assert status_of(hass, "012345679301") == "active"


@pytest.mark.parametrize("column", ["MeterState", "meterStatus", "State"])
async def test_the_platforms_state_wins(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator, column: str
) -> None:
    """A platform that fills a reserved column with the state (any plausible name, number or string) is
    believed over what Home Assistant learned, for every meter, poll by poll."""
    meters = list(cn_sim.meters.values())
    target = device(hass, cn_entry, BACKEND, meters[0].meter_id)
    await act(hass, "suspend_meter", {"device_id": target})
    cn_sim.state_column = column
    cn_sim.set_state(meters[0].meter_id, IN_USE)  # resumed by another terminal
    cn_sim.set_state(meters[1].meter_id, CANCELLED)
    await refresh(hass, cn_entry)
    expected = {m.meter_id: {IN_USE: "active", SUSPENDED: "suspended", CANCELLED: "cancelled"}[m.state] for m in meters}
    assert {m.meter_id: status_of(hass, m.meter_id) for m in meters} == expected
    assert expected[meters[0].meter_id] == "active"
    cn_sim.state_column = None  # the column disappears again: the last word of the platform stays
    await refresh(hass, cn_entry)
    assert status_of(hass, meters[1].meter_id) == "cancelled"


async def test_state_sensor_is_translated(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """An enum sensor whose options are the states, each named in en, ru and zh-Hans."""
    meter = next(iter(cn_sim.meters.values()))
    current = hass.states.get(entity(hass, BACKEND, meter.meter_id, "status"))
    assert current is not None
    assert current.attributes["options"] == ["opened", "active", "suspended", "inactive", "cancelled"]
