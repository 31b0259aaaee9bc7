"""Cangnan CNMCSP through Home Assistant against the simulator: flow, readings, commands, money, accounts."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from unittest.mock import ANY, patch

import pytest
import voluptuous as vol
from aiohttp.test_utils import TestClient, TestServer
from homeassistant.config_entries import SOURCE_USER
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.meter_cloud.api.cangnan import ERRORS
from custom_components.meter_cloud.compat import device_by_identifier
from custom_components.meter_cloud.const import DOMAIN
from simulator.cangnan import CangnanEnvelope, CangnanSimulator

from .conftest import CN_PUSH_ID, cangnan_data
from .timing import LOST_ANSWER_HANG, LOST_ANSWER_TIMEOUT, RELAXED_TIMEOUT

PUSH = f"/api/meter_cloud/push/{CN_PUSH_ID}"
ACCOUNT_KEYS = ("base_url", "app_token", "app_secret", "data_from", "billing_side", "meters")


def eid(hass: HomeAssistant, meter_id: str, key: str, platform: str = "sensor") -> str:
    """Entity id of a Cangnan meter's entity."""
    found = er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"cangnan_{meter_id}_{key}")
    assert found is not None, f"no {platform} {key} for {meter_id}"
    return found


def value(hass: HomeAssistant, meter_id: str, key: str) -> Decimal:
    """A sensor state as a Decimal."""
    return Decimal(hass.states.get(eid(hass, meter_id, key)).state)


def device(hass: HomeAssistant, entry: MockConfigEntry, meter_id: str) -> str:
    """Device id of a meter."""
    found = device_by_identifier(hass, (DOMAIN, f"cangnan_{meter_id}"), entry.entry_id)
    assert found is not None
    return found.id


def sent(sim: CangnanSimulator, name: str) -> list[dict[str, Any]]:
    """Payloads the simulator received on an endpoint."""
    return [p for n, p in sim.requests if n == name]


async def call(hass: HomeAssistant, service: str, data: dict[str, Any]) -> Any:
    """Call one of our services and return its response."""
    return await hass.services.async_call(DOMAIN, service, data, blocking=True, return_response=True)


async def refresh(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Poll now."""
    await entry.runtime_data.async_refresh()
    await hass.async_block_till_done()


# --- config flow ------------------------------------------------------------------------------


async def test_flow_creates_entry_and_reports_unknown_meters(
    hass: HomeAssistant, cn_sim: CangnanSimulator, cn_server: TestServer
) -> None:
    """The account step takes the meter list; unknown pairs are named; fixing them creates the entry."""
    data = cangnan_data(cn_sim, cn_server)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"backend": "cangnan"})
    assert result["step_id"] == "account_cangnan"
    form = {key: data[key] for key in ACCOUNT_KEYS}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**form, "meters": form["meters"] + "\nNOBODY:999999999999"}
    )
    assert result["errors"] == {"base": "unknown_meters"}
    assert result["description_placeholders"]["error"] == "NOBODY:999999999999"
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {**form, "meters": "no pair here"})
    assert result["errors"] == {"base": "invalid_meter_list"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {**form, "encryption_key": "not-hex"})
    assert result["errors"] == {"base": "invalid_encryption_key"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {**form, "app_secret": "wrong"})
    assert result["errors"] == {"base": "invalid_auth_cangnan"}
    with patch("custom_components.meter_cloud.async_setup_entry", return_value=True):
        result = await hass.config_entries.flow.async_configure(result["flow_id"], form)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == f"Cangnan {cn_sim.data_from}"
    assert result["data"]["meters"] == form["meters"]


async def test_reconfigure_edits_meter_list(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """The meter list is editable later; removing a meter removes its device."""
    first, *rest = list(cn_sim.meters.values())
    result = await cn_entry.start_reconfigure_flow(hass)
    form = {key: cn_entry.data[key] for key in ACCOUNT_KEYS}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**form, "meters": "\n".join(f"{m.user_id}:{m.meter_id}" for m in rest)}
    )
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert device_by_identifier(hass, (DOMAIN, f"cangnan_{first.meter_id}"), cn_entry.entry_id) is None
    assert device_by_identifier(hass, (DOMAIN, f"cangnan_{rest[0].meter_id}"), cn_entry.entry_id) is not None


# --- readings ---------------------------------------------------------------------------------


async def test_values_equal_simulator(hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator) -> None:
    """Quirky casing, numbers as strings and unknown keys still give the simulator's exact numbers."""
    cn_sim.tick(60)
    await refresh(hass, cn_entry)
    for meter in cn_sim.meters.values():
        assert value(hass, meter.meter_id, "reading") == meter.reading
        assert value(hass, meter.meter_id, "balance") == meter.remain_money
        assert value(hass, meter.meter_id, "price") == meter.price
        assert value(hass, meter.meter_id, "total_gas") == meter.total_used_gas
        assert value(hass, meter.meter_id, "total_money") == meter.total_used_money
        assert value(hass, meter.meter_id, "total_recharge") == meter.total_buy_money
        assert value(hass, meter.meter_id, "temperature") == meter.temperature
        assert value(hass, meter.meter_id, "pressure") == meter.pressure
        valve = hass.states.get(eid(hass, meter.meter_id, "valve", "valve")).state
        assert valve == {"01": "open", "00": "closed"}[meter.valve]
    assert cn_entry.runtime_data.requests_last_poll == 1


async def test_system_billing_has_no_money(
    hass: HomeAssistant, cn_sim: CangnanSimulator, cn_server: TestServer
) -> None:
    """System-side billing: no balance sensors, and money actions say why they do not apply."""
    cn_sim.billing_mode = "system"
    data = cangnan_data(cn_sim, cn_server)
    entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id="cangnan-system")
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    meter = next(iter(cn_sim.meters.values()))
    registry = er.async_get(hass)
    assert registry.async_get_entity_id("sensor", DOMAIN, f"cangnan_{meter.meter_id}_balance") is None
    assert value(hass, meter.meter_id, "reading") == meter.reading
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "recharge", {"device_id": device(hass, entry, meter.meter_id), "amount": 5})
    assert err.value.translation_key == "system_billing"


async def test_batches_and_bad_pair_isolation(
    hass: HomeAssistant, cn_sim: CangnanSimulator, cn_server: TestServer
) -> None:
    """120 meters take 2 requests a poll; a pair the platform lost costs only its own reading: its batch is split
    once to find it, then it is asked alone (one more request a poll) until the platform knows it again."""
    for _ in range(117):
        cn_sim._seed_meter()
    data = cangnan_data(cn_sim, cn_server)
    entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id="cangnan-big")
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    coordinator = entry.runtime_data
    assert coordinator.requests_last_poll == 2
    assert max(len(p["Meters"]) for p in sent(cn_sim, "ReadCurrentData")) == 100
    assert len(coordinator.data) == 120
    lost = list(cn_sim.meters)[7]
    gone = cn_sim.meters.pop(lost)
    cn_sim.tick(30)
    await refresh(hass, entry)
    assert len(coordinator.data) == 119
    assert lost not in coordinator.data
    kept = list(cn_sim.meters.values())[8]
    assert value(hass, kept.meter_id, "reading") == kept.reading
    assert coordinator.requests_last_poll > 3  # the bad batch was split to find the lost pair
    await refresh(hass, entry)
    assert coordinator.requests_last_poll == 3  # 119 in two batches, the lost pair alone
    assert [p["Meters"] for p in sent(cn_sim, "ReadCurrentData")[-3:]].count([{"UserID": ANY, "MeterID": lost}]) == 1
    assert value(hass, kept.meter_id, "reading") == kept.reading
    cn_sim.meters[lost] = gone  # the platform knows it again: it comes back, and back into the batches
    await refresh(hass, entry)
    assert lost in coordinator.data
    await refresh(hass, entry)
    assert coordinator.requests_last_poll == 2
    assert len(coordinator.data) == 120


async def test_a_smaller_batch_size_is_learned_once_and_kept_across_a_restart(
    hass: HomeAssistant, cn_sim: CangnanSimulator, cn_server: TestServer
) -> None:
    """A platform that takes at most 30 meters a request: set-up's first poll finds 20 (every meter shown), the
    next polls ask 20 at a time, and so does the first poll after Home Assistant restarts (the ledger's store)."""
    for _ in range(57):
        cn_sim._seed_meter()
    cn_sim.max_meters = 30
    entry = MockConfigEntry(domain=DOMAIN, data=cangnan_data(cn_sim, cn_server), unique_id="cangnan-capped")
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert len(entry.runtime_data.data) == 60
    assert all(value(hass, m.meter_id, "reading") == m.reading for m in cn_sim.meters.values())
    cn_sim.tick(30)
    await refresh(hass, entry)
    assert entry.runtime_data.requests_last_poll == 3
    assert [len(p["Meters"]) for p in sent(cn_sim, "ReadCurrentData")[-3:]] == [20, 20, 20]
    assert all(value(hass, m.meter_id, "reading") == m.reading for m in cn_sim.meters.values())
    assert await hass.config_entries.async_unload(entry.entry_id)
    cn_sim.requests.clear()
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert [len(p["Meters"]) for p in sent(cn_sim, "ReadCurrentData")] == [20, 20, 20]
    assert len(entry.runtime_data.data) == 60


# --- valve ------------------------------------------------------------------------------------


async def test_valve_round_trip_and_fault(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """Close: closing until a poll shows 00; a valve that ends 11 fails the command."""
    meter = next(m for m in cn_sim.meters.values() if m.valve == "01")
    valve = eid(hass, meter.meter_id, "valve", "valve")
    await hass.services.async_call("valve", "close_valve", {"entity_id": valve}, blocking=True)
    assert hass.states.get(valve).state == "closing"
    assert sent(cn_sim, "controlValve")[-1]["Control"] in (2010, "2010")
    await refresh(hass, cn_entry)
    assert hass.states.get(valve).state == "closing"  # the platform shows 10, moving
    await cn_sim.settle()
    await refresh(hass, cn_entry)
    assert hass.states.get(valve).state == "closed"

    cn_sim.fail_valves = True
    await hass.services.async_call("valve", "open_valve", {"entity_id": valve}, blocking=True)
    await cn_sim.settle()
    await refresh(hass, cn_entry)
    assert hass.states.get(valve).state == "unknown"
    commands = cn_entry.runtime_data.commands.all()
    assert commands[0].state.value == "failed"


# --- money ------------------------------------------------------------------------------------


async def test_recharge_confirmed_by_poll_and_idempotent(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """TradeNo = reference; the poll seeing TotalBuyMoney rise confirms it; a lost answer's retry charges once."""
    meter = next(iter(cn_sim.meters.values()))
    dev = device(hass, cn_entry, meter.meter_id)
    before = meter.remain_money
    response = await call(hass, "recharge", {"device_id": dev, "amount": 50, "reference": "CN-ORDER-1"})
    assert (response["state"], response["serial"]) == ("pending", "CN-ORDER-1")
    payload = sent(cn_sim, "recharge")[-1]
    assert (payload["TradeNo"], payload["RechargeAmt"]) == ("CN-ORDER-1", "50.0000")
    await cn_sim.settle()
    await refresh(hass, cn_entry)
    status = eid(hass, meter.meter_id, "recharge_status")
    assert hass.states.get(status).state == "confirmed"
    assert meter.remain_money == before + 50

    cn_entry.runtime_data.client.request_timeout = LOST_ANSWER_TIMEOUT
    cn_sim.hang_seconds = LOST_ANSWER_HANG
    cn_sim.fail_next("timeout", endpoint="recharge")
    data = {"device_id": dev, "amount": 20, "reference": "CN-ORDER-2"}
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "recharge", data)
    assert err.value.translation_key == "money_outcome_unknown"
    cn_entry.runtime_data.client.request_timeout = RELAXED_TIMEOUT  # only the lost call may time out
    # 80002033 for a TradeNo this entry sent before: it was received, pending.
    assert (await call(hass, "recharge", data))["state"] == "pending"
    assert [p["TradeNo"] for p in sent(cn_sim, "recharge")][-2:] == ["CN-ORDER-2", "CN-ORDER-2"]
    await cn_sim.settle()
    assert meter.remain_money == before + 70


async def test_cancel_recharge_and_adjust_balance(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """cancelRecharge carries TradeNo and amount; a valve command cannot be cancelled; credits and deducts."""
    meter = next(iter(cn_sim.meters.values()))
    dev = device(hass, cn_entry, meter.meter_id)
    before = meter.remain_money
    await call(hass, "recharge", {"device_id": dev, "amount": 30, "reference": "CN-CANCEL"})
    response = await call(hass, "cancel_command", {"device_id": dev})
    assert response["state"] == "cancelled"
    cancel = sent(cn_sim, "cancelRecharge")[-1]
    assert (cancel["TradeNo"], cancel["CancelAmt"]) == ("CN-CANCEL", "30.0000")
    await cn_sim.settle()
    assert meter.remain_money == before

    await hass.services.async_call(
        "valve", "close_valve", {"entity_id": eid(hass, meter.meter_id, "valve", "valve")}, blocking=True
    )
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "cancel_command", {"device_id": dev})
    assert err.value.translation_key == "not_supported"

    await call(hass, "adjust_balance", {"device_id": dev, "amount": 12.5, "operation": "credit", "reference": "A1"})
    await call(hass, "adjust_balance", {"device_id": dev, "amount": 2, "operation": "deduct", "reference": "A2"})
    options = sent(cn_sim, "remainOption")
    assert [(p["CMDOption"], p["OptionAmt"]) for p in options] == [(1000, "12.5000"), (2000, "2.0000")]
    await cn_sim.settle()
    assert meter.remain_money == before + Decimal("10.5")
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "adjust_balance", {"device_id": dev, "amount": 5, "operation": "credit", "reference": "A2"})
    assert err.value.translation_key == "reference_conflict"


async def test_set_price_single_and_batch(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """One meter → changePrice; several → one batchChangePrice; limits are whole m³; at most 3 tiers."""
    meters = list(cn_sim.meters.values())
    devs = [device(hass, cn_entry, m.meter_id) for m in meters]
    await call(hass, "set_price", {"device_id": devs[0], "price_1": 2.8, "price_code": "P28"})
    single = sent(cn_sim, "changePrice")[-1]
    assert (single["PriceID"], single["PriceMode"], single["Price1"]) == ("P28", "100", "2.8000")
    assert "Version" not in single  # optional: never a made-up version
    assert "IniDate" not in single
    assert value(hass, meters[0].meter_id, "price") == Decimal("2.8")
    tiered = {"device_id": devs, "price_1": 1.2, "ladder_1": 2000, "price_2": 1.8, "ladder_2": 5000, "price_3": 3}
    await call(
        hass, "set_price", {**tiered, "price_code": "T3", "price_version": " 309 ", "effective_date": "2026-07-01"}
    )
    batch = sent(cn_sim, "batchChangePrice")
    assert (batch[0]["Version"], batch[0]["IniDate"]) == ("309", "2026-07-01 00:00:00")
    assert (cn_sim.prices["T3"]["version"], cn_sim.prices["T3"]["ini_date"]) == ("309", "2026-07-01 00:00:00")
    assert len(batch) == 1
    assert len(batch[0]["Meters"]) == 3
    assert (batch[0]["PriceMode"], batch[0]["Level1"], batch[0]["Level2"], batch[0]["MonthCount"]) == (
        "101",
        2000,
        5000,
        "12",
    )
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "set_price", {**tiered, "ladder_1": 2000.5})
    assert err.value.translation_key == "ladder_not_integer"
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "set_price", {**tiered, "ladder_3": 6000, "price_4": 4})
    assert err.value.translation_key == "invalid_price_schedule"
    with pytest.raises(vol.Invalid):
        await call(hass, "set_price", {**tiered, "price_version": "v" * 21})


# --- accounts ---------------------------------------------------------------------------------


async def test_account_lifecycle(hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator) -> None:
    """Open → the list grows and a device appears; modify, suspend, resume; replace; close → the device goes."""
    registration = {
        "config_entry_id": cn_entry.entry_id,
        "user_no": "KYNYN200001",
        "meter_no": "012345679001",
        "meter_type": "CNMCPUJE",
        "meter_protocol": "CNModbusV61",
        "price_1": 2.5,
        "price_version": "12",
        "effective_date": "2026-12-01",
        "opening_balance": 100,
        "user_name": "新用户",
        "building": "3栋",
    }
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "register_meter", {k: v for k, v in registration.items() if k != "meter_protocol"})
    assert err.value.translation_key == "missing_field"
    await call(hass, "register_meter", registration)
    await hass.async_block_till_done()
    assert "KYNYN200001:012345679001" in cn_entry.data["meters"]
    assert value(hass, "012345679001", "balance") == Decimal(100)
    opened = sent(cn_sim, "meteradd")[-1]
    assert (opened["PreSaving"], opened["PriceMode"], opened["BuildingName"]) == ("100.0000", "100", "3栋")
    assert (opened["Version"], opened["IniDate"]) == ("12", "2026-12-01 00:00:00")

    dev = device(hass, cn_entry, "012345679001")
    await call(hass, "modify_customer", {"device_id": dev, "phone": "13566956201"})
    assert cn_sim.meters["012345679001"].phone == "13566956201"
    await call(hass, "suspend_meter", {"device_id": dev})
    assert cn_sim.meters["012345679001"].state == -1
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "recharge", {"device_id": dev, "amount": 5})
    assert err.value.translation_key == "account_inactive"
    await call(hass, "resume_meter", {"device_id": dev})
    assert cn_sim.meters["012345679001"].state == 1

    await call(
        hass,
        "replace_meter",
        {
            "device_id": dev,
            "new_meter_no": "012345679002",
            "new_meter_type": "CNMCPUJE",
            "new_meter_protocol": "CNNBIoTV1",
            "transfer_amount": 100,
        },
    )
    await hass.async_block_till_done()
    assert "KYNYN200001:012345679002" in cn_entry.data["meters"]
    assert "012345679001" not in cn_entry.data["meters"]
    new_dev = device(hass, cn_entry, "012345679002")
    await call(hass, "deregister_meter", {"device_id": new_dev})
    await hass.async_block_till_done()
    assert "012345679002" not in cn_entry.data["meters"]
    assert device_by_identifier(hass, (DOMAIN, "cangnan_012345679002"), cn_entry.entry_id) is None


# --- pushes -----------------------------------------------------------------------------------


async def test_pushes(hass: HomeAssistant, cn_push: TestClient, cn_sim: CangnanSimulator) -> None:
    """Readings apply at once, alarms fire, replays are applied once, forgeries change nothing."""
    meter = next(iter(cn_sim.meters.values()))
    cn_sim.tick(120)
    status, answer = await cn_sim.push_reading(meter.meter_id)
    await hass.async_block_till_done()
    assert (status, answer["ReturnCode"]) == (200, "0")
    assert value(hass, meter.meter_id, "reading") == meter.reading

    events = []
    hass.bus.async_listen("meter_cloud_alarm", events.append)
    for code, kind in (("02", "gas_leak"), ("08", "low_balance"), ("09", "tampering"), ("77", "other")):
        status, _ = await cn_sim.push_alarm(meter.meter_id, alarm_type=code, message="x")
        await hass.async_block_till_done()
        assert hass.states.get(eid(hass, meter.meter_id, "alarm", "event")).attributes["event_type"] == kind
    headers, body = cn_sim.signed_push("alarm", cn_sim.alarm_body(meter.meter_id, serial="r" * 32))
    for _ in range(2):
        resp = await cn_push.post(f"{PUSH}/alarm", data=body, headers=headers)
        assert resp.status == 200
    await hass.async_block_till_done()
    assert len(events) == 5

    headers["AccessToken"] = "0" * 32
    resp = await cn_push.post(f"{PUSH}/reading", data=body, headers=headers)
    assert resp.status == 401
    headers, _ = cn_sim.signed_push("reading", {})
    resp = await cn_push.post(f"{PUSH}/reading", data=b"{oops", headers=headers)
    assert resp.status == 400
    assert (await resp.json())["ReturnCode"] == "80002001"


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(ERRORS))
async def test_every_error_code_has_its_message(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator, code: str
) -> None:
    """Each chapter-7 code surfaces as its own translated error."""
    meter = next(iter(cn_sim.meters.values()))
    cn_sim.fail_next("error", endpoint="controlValve", code=code)
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(
            "valve", "close_valve", {"entity_id": eid(hass, meter.meter_id, "valve", "valve")}, blocking=True
        )
    assert err.value.translation_key == ERRORS[code][1]
    assert err.value.translation_placeholders["code"] == code
    assert code in str(err.value)  # the English message was rendered from the translations


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({}, "0123456789ABCDEFFEDCBA9876543210"),
        (
            {"mode": "ecb", "padding": "zero", "mac": "hmac_sha256", "encoding": "hex"},
            "00112233445566778899AABBCCDDEEFF0011223344556677",
        ),
    ],
)
async def test_encrypted_account_end_to_end(
    hass: HomeAssistant,
    cn_sim: CangnanSimulator,
    cn_server: TestServer,
    hass_client_no_auth: Any,
    settings: dict[str, str],
    key: str,
) -> None:
    """With 3DES + MAC on, the flow validates, polls read, money moves and sealed pushes are accepted."""
    cn_sim.envelope = CangnanEnvelope.from_hex(key, **settings)
    data = cangnan_data(cn_sim, cn_server)
    form = (
        {k: data[k] for k in ACCOUNT_KEYS}
        | {"encryption_key": key}
        | {f"encryption_{name}": value for name, value in settings.items()}
    )
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"backend": "cangnan"})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {**form, "encryption_key": key[:-2]})
    assert result["errors"] == {"base": "invalid_encryption_key"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], form)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    entry = result["result"]
    await hass.async_block_till_done()
    meter = next(iter(cn_sim.meters.values()))
    assert value(hass, meter.meter_id, "balance") == meter.remain_money
    await call(hass, "recharge", {"device_id": device(hass, entry, meter.meter_id), "amount": 8, "reference": "ENC1"})
    assert sent(cn_sim, "recharge")[-1]["TradeNo"] == "ENC1"

    client: TestClient = await hass_client_no_auth()
    cn_sim.push_url = str(client.make_url(f"/api/meter_cloud/push/{entry.data['push_id']}")).rstrip("/")
    cn_sim.tick(60)
    status, answer = await cn_sim.push_reading(meter.meter_id)
    await hass.async_block_till_done()
    assert (status, answer["ReturnCode"]) == (200, "0")  # the simulator opened our sealed answer
    assert value(hass, meter.meter_id, "reading") == meter.reading
    headers, _ = cn_sim.signed_push("reading", {})
    plain = json.dumps(cn_sim.reading_body(meter.meter_id)).encode()
    resp = await client.post(f"/api/meter_cloud/push/{entry.data['push_id']}/reading", data=plain, headers=headers)
    assert resp.status == 400  # an unsealed push is refused when encryption is on


async def test_refused_signature_starts_reauth(
    hass: HomeAssistant, cn_entry: MockConfigEntry, cn_sim: CangnanSimulator
) -> None:
    """HTTP 401 from the platform is an auth failure: entities go unavailable and reauth starts."""
    meter = next(iter(cn_sim.meters.values()))
    cn_sim.fail_next("auth", endpoint="ReadCurrentData")
    await refresh(hass, cn_entry)
    assert hass.states.get(eid(hass, meter.meter_id, "reading")).state == "unavailable"
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [f["context"]["source"] for f in flows] == ["reauth"]
    result = await hass.config_entries.flow.async_configure(flows[0]["flow_id"], {"app_secret": cn_sim.app_secret})
    assert result["reason"] == "reauth_successful"
    await hass.async_block_till_done()
    assert value(hass, meter.meter_id, "reading") == meter.reading
