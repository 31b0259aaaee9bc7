"""Services through Home Assistant against the simulator: money, prices, usage, accounts."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from decimal import Decimal
from typing import Any
from unittest.mock import patch

import pytest
from aiohttp.test_utils import TestClient
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError, Unauthorized
from pytest_homeassistant_custom_component.common import MockConfigEntry, MockUser

from custom_components.meter_cloud.api import Capability, GoldcardClient
from custom_components.meter_cloud.compat import device_by_identifier
from custom_components.meter_cloud.const import DOMAIN
from simulator.goldcard import GoldcardSimulator

from .test_sensor import entity_id, state_decimal
from .timing import LOST_ANSWER_HANG, LOST_ANSWER_TIMEOUT, RELAXED_TIMEOUT


def device(hass: HomeAssistant, entry: MockConfigEntry, meter_no: str) -> str:
    """Device id of a meter."""
    found = device_by_identifier(hass, (DOMAIN, f"goldcard_{meter_no}"), entry.entry_id)
    assert found is not None
    return found.id


async def call(hass: HomeAssistant, service: str, data: dict[str, Any], **kwargs: Any) -> Any:
    """Call a service of ours, returning its response."""
    return await hass.services.async_call(DOMAIN, service, data, blocking=True, return_response=True, **kwargs)


def sent(sim: GoldcardSimulator, number: str) -> list[dict[str, Any]]:
    """Payloads the simulator received on an endpoint."""
    return [p for n, p in sim.requests if n == number]


async def test_recharge_idempotent(
    hass: HomeAssistant, push_client: TestClient, sim: GoldcardSimulator, setup_entry: MockConfigEntry
) -> None:
    """A recharge goes out once per reference, is pending until 2002, and is never charged twice."""
    meter_no, meter = next(iter(sim.meters.items()))
    before = meter.balance
    data = {"device_id": device(hass, setup_entry, meter_no), "amount": 100.5, "reference": "ORDER-1"}
    response = await call(hass, "recharge", data)
    assert response["state"] == "pending"
    assert response["amount"] == "100.50"
    expected_serial = hashlib.md5(f"{GoldcardClient.unique_id(setup_entry.data)}:ORDER-1".encode()).hexdigest()
    assert response["serial"] == expected_serial
    (payload,) = sent(sim, "1004")
    assert payload["serialNo"] == expected_serial
    assert payload["paramNo"] == "05"
    assert payload["paramContext"]["data"]["rechargeAmount"] == "100.50"
    assert payload["paramContext"]["data"]["rechargeStream"] == "ORDER-1"
    status = entity_id(hass, meter_no, "recharge_status")
    assert hass.states.get(status).state == "pending"
    assert hass.states.get(status).attributes["reference"] == "ORDER-1"

    await sim.settle()
    await hass.async_block_till_done()
    assert hass.states.get(status).state == "confirmed"
    assert meter.balance == before + Decimal("100.50")
    await setup_entry.runtime_data.async_refresh()
    await hass.async_block_till_done()
    assert state_decimal(hass, entity_id(hass, meter_no, "balance")) == meter.balance
    assert state_decimal(hass, entity_id(hass, meter_no, "last_recharge_amount")) == Decimal("100.50")

    again = await call(hass, "recharge", data)
    assert again["state"] == "confirmed"
    assert len(sent(sim, "1004")) == 1
    assert meter.balance == before + Decimal("100.50")

    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "recharge", {**data, "amount": 5})
    assert err.value.translation_key == "reference_conflict"


async def test_recharge_timeout_never_resent_blindly(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """A lost answer leaves the recharge 'unknown'; an explicit retry reuses the serial and charges once."""
    meter_no, meter = next(iter(sim.meters.items()))
    before = meter.balance
    setup_entry.runtime_data.client.request_timeout = LOST_ANSWER_TIMEOUT
    sim.hang_seconds = LOST_ANSWER_HANG
    sim.fail_next("timeout", endpoint="1004")
    data = {"device_id": device(hass, setup_entry, meter_no), "amount": 20, "reference": "R-TIMEOUT"}
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "recharge", data)
    assert err.value.translation_key == "money_outcome_unknown"
    setup_entry.runtime_data.client.request_timeout = RELAXED_TIMEOUT  # only the lost call may time out
    await hass.async_block_till_done()
    assert hass.states.get(entity_id(hass, meter_no, "recharge_status")).state == "unknown"
    assert len(sent(sim, "1004")) == 1

    response = await call(hass, "recharge", data)
    assert response["state"] == "pending"
    first, second = sent(sim, "1004")
    assert first["serialNo"] == second["serialNo"]
    await sim.settle()
    assert meter.balance == before + Decimal("20.00")


async def test_recharge_refused_and_unreachable(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """A refusal marks the recharge failed; the same reference is then answered from the ledger."""
    meter_no = next(iter(sim.meters))
    data = {"device_id": device(hass, setup_entry, meter_no), "amount": 10, "reference": "R-REFUSED"}
    sim.fail_next("error", endpoint="1004", code="9999")
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "recharge", data)
    assert err.value.translation_key == "command_failed"
    assert (await call(hass, "recharge", data))["state"] == "failed"
    assert len(sent(sim, "1004")) == 1


async def test_recharge_validation(hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator) -> None:
    """Bad amounts and references are refused before anything is sent."""
    dev = device(hass, setup_entry, next(iter(sim.meters)))
    for amount in (0, -5, 1.234):
        with pytest.raises(ServiceValidationError) as err:
            await call(hass, "recharge", {"device_id": dev, "amount": amount})
        assert err.value.translation_key == "invalid_amount"
    with pytest.raises(Exception, match="reference"):
        await call(hass, "recharge", {"device_id": dev, "amount": 1, "reference": "bad ref!"})
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "recharge", {"device_id": "nope", "amount": 1})
    assert err.value.translation_key == "unknown_device"
    assert sent(sim, "1004") == []


async def test_recharge_admin_only(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator, hass_read_only_user: MockUser
) -> None:
    """A non-admin user cannot move money."""
    dev = device(hass, setup_entry, next(iter(sim.meters)))
    with pytest.raises(Unauthorized):
        await call(hass, "recharge", {"device_id": dev, "amount": 1}, context=Context(user_id=hass_read_only_user.id))
    assert sent(sim, "1004") == []


async def test_cancel_command(hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator) -> None:
    """1005 cancels the newest pending command; the valve is no longer closing and never closes."""
    meter_no = next(iter(sim.meters))
    dev = device(hass, setup_entry, meter_no)
    eid = entity_id(hass, meter_no, "valve", "valve")
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "cancel_command", {"device_id": dev})
    assert err.value.translation_key == "no_pending_command"
    await hass.services.async_call("valve", "close_valve", {"entity_id": eid}, blocking=True)
    assert hass.states.get(eid).state == "closing"
    response = await call(hass, "cancel_command", {"device_id": dev})
    assert response["state"] == "cancelled"
    assert sent(sim, "1005")[0]["sendSerialNo"] == response["serial"]
    await hass.async_block_till_done()
    assert hass.states.get(eid).state == "open"
    await sim.settle()
    assert sim.meters[meter_no].valve == "open"


async def test_set_price_flat_and_tiered(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """Flat: 1007 type 1 then 1008; tiered: 1007 type 2 with ladders, for several meters at once."""
    meters = list(sim.meters)
    devs = [device(hass, setup_entry, m) for m in meters]
    response = await call(hass, "set_price", {"device_id": devs[0], "price_1": 3.1, "price_code": "FLAT31"})
    assert response == {"price_code": "FLAT31", "meters": [meters[0]]}
    assert sim.prices["FLAT31"]["priceDetail"] == {"priceLength": "1", "price1": "3.1000"}
    await hass.async_block_till_done()
    assert state_decimal(hass, entity_id(hass, meters[0], "price")) == Decimal("3.1")

    tiered = {
        "device_id": devs[1:],
        "price_1": 2.28,
        "ladder_1": 300,
        "price_2": 2.74,
        "ladder_2": 600,
        "price_3": 3.42,
        "cycle_months": 12,
        "price_code": "TIER3",
    }
    response = await call(hass, "set_price", tiered)
    assert response["meters"] == meters[1:]
    stored = sim.prices["TIER3"]
    assert stored["priceType"] == "2"
    assert stored["priceDetail"] == {
        "priceLength": "3",
        "price1": "2.2800",
        "price2": "2.7400",
        "price3": "3.4200",
        "ladder1End": "300",
        "ladder2End": "600",
    }
    assert all(sim.meters[m].price_code == "TIER3" for m in meters[1:])

    response = await call(
        hass,
        "set_price",
        {"device_id": devs[0], "price_1": 3.3, "price_code": "FLAT31", "adjust": True, "effective_date": "2026-12-01"},
    )
    adjust = sent(sim, "1007")[-1]
    assert (adjust["priceProperty"], adjust["priceBeginDate"], adjust["clearFlag"]) == ("2", "2026-12-01", "1")

    for bad in (
        {"price_2": 3},
        {"price_1": 1, "price_2": 2},
        {"price_1": 1, "ladder_1": 5},
        {"price_1": 1, "price_2": 2, "ladder_1": 0},
    ):
        with pytest.raises(ServiceValidationError) as err:
            await call(hass, "set_price", {"device_id": devs[0], **bad})
        assert err.value.translation_key == "invalid_price_schedule"

    sim.fail_next("error", endpoint="1007", code="2004")
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "set_price", {"device_id": devs[0], "price_1": 1, "price_code": "X"})
    assert err.value.translation_key == "command_failed"
    assert err.value.translation_placeholders["code"] == "2004"


async def test_daily_usage(hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator) -> None:
    """1015 records come back exactly as the simulator holds them."""
    meter_no, meter = next(iter(sim.meters.items()))
    end = max(meter.history)
    start = end - timedelta(days=6)
    response = await call(
        hass,
        "get_daily_usage",
        {
            "device_id": device(hass, setup_entry, meter_no),
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
        },
    )
    expected = [
        {"date": day.isoformat(), "meter_id": meter_no, "volume": use.gas, "amount": use.amount, "price": use.price}
        for day, use in sorted(meter.history.items())
        if start <= day <= end
    ]
    got = [
        {**r, "volume": Decimal(r["volume"]), "amount": Decimal(r["amount"]), "price": Decimal(r["price"])}
        for r in response["records"]
    ]
    assert got == expected
    assert len(got) == 7
    with pytest.raises(ServiceValidationError) as err:
        await call(
            hass,
            "get_daily_usage",
            {
                "device_id": device(hass, setup_entry, meter_no),
                "start_date": end.isoformat(),
                "end_date": start.isoformat(),
            },
        )
    assert err.value.translation_key == "invalid_date_range"


async def test_register_replace_deregister(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """1001 adds a device, 1009 swaps it for the new meter number, 1002 removes it."""
    response = await call(
        hass,
        "register_meter",
        {
            "config_entry_id": setup_entry.entry_id,
            "user_no": "U-NEW-1",
            "meter_no": "202611220001",
            "meter_type": "441",
            "price_code": "SIM-RES",
            "initial_reading": 12.5,
            "address": "Hangzhou",
            "overdraft": 20,
            "comm_no": "86000000000077",
            "init_cycle": 123.4,
        },
    )
    await hass.async_block_till_done()
    assert response["meter_id"] == "202611220001"
    [opened] = [p for n, p in sim.requests if n == "1001"]
    assert (opened["overdraft"], opened["commNo"], opened["initCycle"]) == ("20.00", "86000000000077", "123.4000")
    assert sim.meters["202611220001"].reading == Decimal("12.5000")
    assert state_decimal(hass, entity_id(hass, "202611220001", "reading")) == Decimal("12.5")

    dev = device(hass, setup_entry, "202611220001")
    response = await call(
        hass,
        "replace_meter",
        {
            "device_id": dev,
            "new_meter_no": "202611220002",
            "new_meter_type": "502",
            "new_reading": 0,
            "new_comm_no": "C2",
        },
    )
    await hass.async_block_till_done()
    [swapped] = [p for n, p in sim.requests if n == "1009"]
    assert swapped["newCommNo"] == "C2"
    assert response["meter_id"] == "202611220002"
    assert "202611220001" not in sim.meters
    assert device_by_identifier(hass, (DOMAIN, "goldcard_202611220001"), setup_entry.entry_id) is None
    new_dev = device(hass, setup_entry, "202611220002")

    with pytest.raises(HomeAssistantError) as err:
        await call(
            hass,
            "register_meter",
            {
                "config_entry_id": setup_entry.entry_id,
                "user_no": "U-NEW-1",
                "meter_no": "202611220009",
                "meter_type": "441",
                "price_code": "SIM-RES",
            },
        )
    assert err.value.translation_key == "command_failed"

    await call(hass, "deregister_meter", {"device_id": new_dev, "reason": "moved out"})
    await hass.async_block_till_done()
    assert "202611220002" not in sim.meters
    assert sent(sim, "1002")[-1]["initNum"] == "0.0000"
    assert device_by_identifier(hass, (DOMAIN, "goldcard_202611220002"), setup_entry.entry_id) is None


async def test_not_supported_and_unknown_entry(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """A backend without a capability answers 'not supported'; a foreign entry id is refused."""
    dev = device(hass, setup_entry, next(iter(sim.meters)))
    with patch.object(setup_entry.runtime_data.client, "capabilities", frozenset({Capability.DETAILS})):
        for service, data in (
            ("recharge", {"amount": 1}),
            ("cancel_command", {}),
            ("set_price", {"price_1": 1}),
            ("get_daily_usage", {"start_date": "2026-01-01", "end_date": "2026-01-02"}),
            ("deregister_meter", {"reason": "x"}),
            ("replace_meter", {"new_meter_no": "1", "new_meter_type": "441"}),
        ):
            with pytest.raises(ServiceValidationError) as err:
                await call(hass, service, {"device_id": dev, **data})
            assert err.value.translation_key == "not_supported", service
    with pytest.raises(ServiceValidationError) as err:
        await call(
            hass,
            "register_meter",
            {"config_entry_id": "nope", "user_no": "1", "meter_no": "1", "meter_type": "441", "price_code": "P"},
        )
    assert err.value.translation_key == "unknown_entry"


async def test_recharge_garbled_answer_is_unknown(
    hass: HomeAssistant, setup_entry: MockConfigEntry, sim: GoldcardSimulator
) -> None:
    """A 200 with a body that is not JSON may hide an accepted recharge: 'unknown', retry reuses the serial."""
    meter_no, meter = next(iter(sim.meters.items()))
    before = meter.balance
    sim.fail_next("malformed", endpoint="1004")
    data = {"device_id": device(hass, setup_entry, meter_no), "amount": 7, "reference": "R-GARBLED"}
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "recharge", data)
    assert err.value.translation_key == "money_outcome_unknown"
    assert hass.states.get(entity_id(hass, meter_no, "recharge_status")).state == "unknown"
    assert (await call(hass, "recharge", data))["state"] == "pending"
    first, second = sent(sim, "1004")
    assert first["serialNo"] == second["serialNo"]
    await sim.settle()
    assert meter.balance in (before + Decimal(7), before + Decimal("7.00"))


async def test_service_descriptions_load(hass: HomeAssistant, setup_entry: MockConfigEntry) -> None:
    """services.yaml parses in this Home Assistant: every service shows its fields in the UI."""
    from homeassistant.helpers.service import async_get_all_descriptions

    from custom_components.meter_cloud.services import SERVICES

    descriptions = (await async_get_all_descriptions(hass))[DOMAIN]
    assert set(descriptions) == set(SERVICES)
    assert len(SERVICES) == 25
    for name, description in descriptions.items():
        assert description["fields"], name
    assert "price_1" in descriptions["set_price"]["fields"]


async def test_money_actions_offer_only_prepaid_devices(hass: HomeAssistant, setup_entry: MockConfigEntry) -> None:
    """The device pickers of money and prepaid actions ask for a device with a prepaid balance, as HA's selector
    validates them; the other device actions still take any meter."""
    from homeassistant.helpers import selector
    from homeassistant.helpers.service import async_get_all_descriptions

    descriptions = (await async_get_all_descriptions(hass))[DOMAIN]
    prepaid = ("recharge", "adjust_balance", "set_price", "read_price", "get_charge_state")
    prepaid += ("set_remaining_balance", "open_account")
    for name in prepaid:
        # As this Home Assistant validates (and normalises) the selector.
        validated = selector.selector(descriptions[name]["fields"]["device_id"]["selector"]).config
        assert validated["entity"] == [{"integration": DOMAIN, "domain": ["sensor"], "device_class": ["monetary"]}], (
            name
        )
    assert "entity" not in descriptions["cancel_command"]["fields"]["device_id"]["selector"]["device"]
