"""A confirmed command re-reads its meter at once (Goldcard: 1013 with meterNo), so values agree with it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from aiohttp.test_utils import TestClient
from homeassistant.components.valve import DOMAIN as VALVE_DOMAIN
from homeassistant.const import ATTR_ENTITY_ID, SERVICE_CLOSE_VALVE
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.api import Capability, GoldcardClient
from simulator.cangnan import CangnanSimulator
from simulator.goldcard import GoldcardSimulator

from .test_sensor import entity_id, state_decimal
from .test_services import call, device


def readings_of(sim: GoldcardSimulator) -> list[str]:
    """meterNo of every 1013 the simulator answered ("" = all meters)."""
    return [str(p.get("meterNo", "")).strip() for n, p in sim.requests if n == "1013"]


async def test_recharge_confirmed_by_2002_shows_the_new_balance_at_once(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """2002 excuteState 1 → one 1013 for that meter → the balance sensor shows the simulator's balance, no poll."""
    meter_no, meter = next(iter(sim.meters.items()))
    before = meter.balance
    polls = readings_of(sim)
    await call(hass, "recharge", {"device_id": device(hass, setup_entry, meter_no), "amount": 30, "reference": "R-1"})
    assert state_decimal(hass, entity_id(hass, meter_no, "balance")) == before
    await sim.settle()
    await hass.async_block_till_done(wait_background_tasks=True)
    assert hass.states.get(entity_id(hass, meter_no, "recharge_status")).state == "confirmed"
    assert meter.balance == before + Decimal(30)
    assert state_decimal(hass, entity_id(hass, meter_no, "balance")) == meter.balance
    assert readings_of(sim) == [*polls, meter_no]  # one request, for this meter only


async def test_valve_confirmed_by_2002_reads_the_meter_and_a_lagging_table_does_not_undo_it(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """Closed on 2002; the re-read agrees; a poll whose row predates the result keeps it; a newer row wins."""
    meter_no, meter = next(iter(sim.meters.items()))
    eid = entity_id(hass, meter_no, "valve", "valve")
    polls = readings_of(sim)
    await hass.services.async_call(VALVE_DOMAIN, SERVICE_CLOSE_VALVE, {ATTR_ENTITY_ID: eid}, blocking=True)
    await sim.settle()
    await hass.async_block_till_done(wait_background_tasks=True)
    assert hass.states.get(eid).state == "closed"
    assert readings_of(sim) == [*polls, meter_no]

    # The cloud's reading table lags its result push: the row (read before the command) still says open.
    meter.valve = "open"
    await setup_entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    assert hass.states.get(eid).state == "closed"
    # A reading the meter made after the command is the truth again (opened by hand, say).
    meter.read_time = meter.read_time + timedelta(days=1)
    await setup_entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    assert hass.states.get(eid).state == "open"


async def test_failed_command_reads_nothing(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """2002 excuteState 2 leaves the valve as it was and costs no extra read."""
    meter_no = next(iter(sim.meters))
    sim.fail_commands = True
    eid = entity_id(hass, meter_no, "valve", "valve")
    polls = readings_of(sim)
    await hass.services.async_call(VALVE_DOMAIN, SERVICE_CLOSE_VALVE, {ATTR_ENTITY_ID: eid}, blocking=True)
    await sim.settle()
    await hass.async_block_till_done(wait_background_tasks=True)
    assert hass.states.get(eid).state == "open"
    assert readings_of(sim) == polls


async def test_cangnan_reads_one_meter_alone(
    hass: HomeAssistant, cn_sim: CangnanSimulator, cn_entry: MockConfigEntry
) -> None:
    """Cangnan can read one followed meter with a one-pair ReadCurrentData (Goldcard's 1013 is tested above)."""
    assert Capability.SINGLE_READ in GoldcardClient.capabilities
    client = cn_entry.runtime_data.client
    assert client.supports(Capability.SINGLE_READ)
    meter = next(iter(cn_sim.meters.values()))
    read = await client.async_get_meter(meter.meter_id)
    assert read is not None
    assert (read.meter_id, read.reading, read.balance) == (meter.meter_id, meter.reading, meter.remain_money)
    assert cn_sim.requests[-1][1]["Meters"] == [{"UserID": meter.user_id, "MeterID": meter.meter_id}]
    assert await client.async_get_meter("not-followed") is None
