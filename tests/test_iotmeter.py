"""IoT meter data platform through Home Assistant against the simulator."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from unittest.mock import patch

import pytest
from aiohttp.test_utils import TestClient, TestServer
from homeassistant.config_entries import SOURCE_USER
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.meter_cloud.api import IotMeterClient
from custom_components.meter_cloud.compat import device_by_identifier
from custom_components.meter_cloud.const import DOMAIN, EVENT_ALARM, EVENT_DEVICE_EVENT
from simulator.iotmeter import IotMeterSimulator

from .conftest import IOT_PUSH_ID, iot_data

PUSH = f"/api/meter_cloud/push/{IOT_PUSH_ID}"


def eid(hass: HomeAssistant, device: str, key: str, platform: str = "sensor") -> str:
    """Entity id of a device's entity."""
    found = er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"iotmeter_{device}_{key}")
    assert found is not None, f"no {platform} {key} for {device}"
    return found


def has(hass: HomeAssistant, device: str, key: str, platform: str = "sensor") -> bool:
    """Whether a device has that entity."""
    return er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"iotmeter_{device}_{key}") is not None


def value(hass: HomeAssistant, device: str, key: str) -> Decimal:
    """A sensor state as a Decimal."""
    return Decimal(hass.states.get(eid(hass, device, key)).state)


def dev(hass: HomeAssistant, entry: MockConfigEntry, device: str) -> str:
    """Device id."""
    found = device_by_identifier(hass, (DOMAIN, f"iotmeter_{device}"), entry.entry_id)
    assert found is not None
    return found.id


def meters(sim: IotMeterSimulator) -> list[str]:
    """Communication numbers of the simulated meters (not RTUs)."""
    return [no for no, d in sim.devices.items() if d.device_type == 1]


def rtus(sim: IotMeterSimulator) -> list[str]:
    """Communication numbers of the simulated RTUs."""
    return [no for no, d in sim.devices.items() if d.device_type == 2]


def sent(sim: IotMeterSimulator, name: str) -> list[Any]:
    """Bodies the simulator received on an endpoint."""
    return [body for n, _query, body in sim.requests if n == name]


async def call(hass: HomeAssistant, service: str, data: dict[str, Any]) -> Any:
    """Call one of our services and return its response."""
    return await hass.services.async_call(DOMAIN, service, data, blocking=True, return_response=True)


async def refresh(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Poll now."""
    await entry.runtime_data.async_refresh()
    await hass.async_block_till_done()


def last_command(sim: IotMeterSimulator) -> dict[str, Any]:
    """The newest command in the simulator's queue."""
    return sim.commands[max(sim.commands)]


# --- flow -------------------------------------------------------------------------------------


async def test_flow_read_only_and_with_control(
    hass: HomeAssistant, iot_sim: IotMeterSimulator, iot_server: TestServer
) -> None:
    """Data credentials alone make a read-only entry; control credentials are checked by a real login."""
    data = iot_data(iot_sim, iot_server)
    form = {k: v for k, v in data.items() if k not in ("backend", "push_id")}
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"backend": "iotmeter"})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {**form, "data_api_key": "nope"})
    assert result["errors"] == {"base": "invalid_auth_iotmeter"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {**form, "password": "wrong"})
    assert result["errors"] == {"base": "invalid_control_auth"}
    assert result["description_placeholders"]["error"] == "用户名或密码错误"  # the platform's own words
    with patch("custom_components.meter_cloud.async_setup_entry", return_value=True):
        result = await hass.config_entries.flow.async_configure(result["flow_id"], form)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == f"IoT meter platform {iot_sim.company_no}"
    assert [n for n, *_ in iot_sim.requests].count("Login") == 2  # the refused one and the good one


async def test_read_only_entry(hass: HomeAssistant, iot_sim: IotMeterSimulator, iot_server: TestServer) -> None:
    """Without control credentials: readings, no valve, control actions say 'not supported'."""
    data = iot_data(iot_sim, iot_server, control=False)
    entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id=IotMeterClient.unique_id(data))
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    meter = meters(iot_sim)[0]
    assert value(hass, meter, "reading") == iot_sim.devices[meter].std_sum
    assert not has(hass, meter, "valve", "valve")
    for service, extra in (("recharge", {"amount": 5}), ("read_price", {}), ("list_commands", {})):
        with pytest.raises(ServiceValidationError) as err:
            await call(hass, service, {"device_id": dev(hass, entry, meter), **extra})
        assert err.value.translation_key == "read_only_entry"


# --- readings ---------------------------------------------------------------------------------


async def test_meters_and_rtus(hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator) -> None:
    """Every field of a meter, every flag as a binary sensor, RTUs as devices of their own."""
    iot_sim.tick(60)
    await refresh(hass, iot_entry)
    for comm_no in meters(iot_sim):
        d = iot_sim.devices[comm_no]
        assert value(hass, comm_no, "reading") == d.std_sum
        assert value(hass, comm_no, "work_volume") == d.work_sum
        assert value(hass, comm_no, "std_flow") == d.std_flow
        assert value(hass, comm_no, "work_flow") == d.work_flow
        assert value(hass, comm_no, "temperature") == d.temperature
        assert value(hass, comm_no, "pressure") == d.pressure
        assert value(hass, comm_no, "this_month") == d.this_month_sum
        assert value(hass, comm_no, "last_cycle") == d.last_cycle_sum
        assert value(hass, comm_no, "balance") == d.remain_money
        assert value(hass, comm_no, "price") == d.curr_price
        assert value(hass, comm_no, "battery_level") == d.battery_level
        assert value(hass, comm_no, "rssi") == d.rssi
        assert value(hass, comm_no, "magnetic_attacks") == d.magatt_times
        valve_open = d.flags["valve_open"]
        assert hass.states.get(eid(hass, comm_no, "valve_open", "binary_sensor")).state == (
            "on" if valve_open else "off"
        )
        assert hass.states.get(eid(hass, comm_no, "valve", "valve")).state == ("open" if valve_open else "closed")
        assert hass.states.get(eid(hass, comm_no, "magnetic_attack", "binary_sensor")).state in ("on", "off")
    rtu = rtus(iot_sim)[0]
    assert has(hass, rtu, "rtu_door_open", "binary_sensor")
    assert has(hass, rtu, "rtu_power", "binary_sensor")
    assert not has(hass, rtu, "reading")
    assert not has(hass, rtu, "valve", "valve")
    assert device_by_identifier(hass, (DOMAIN, f"iotmeter_{rtu}"), iot_entry.entry_id).model == "RTU"


async def test_paging(hass: HomeAssistant, iot_sim: IotMeterSimulator, iot_server: TestServer) -> None:
    """Devices come a page at a time: one request per page, never one per meter (pages of 5 here, 100 for real;
    the API tests page 250 devices by 100)."""
    big = IotMeterSimulator(meters=12, rtus=1, command_delay=3600)
    iot_sim.devices.update(big.devices)
    iot_sim.history.update(big.history)
    data = iot_data(iot_sim, iot_server, control=False)
    entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id="iot-big")
    entry.add_to_hass(hass)
    with patch("custom_components.meter_cloud.api.iotmeter.PAGE_SIZE", 5):
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
    assert len(entry.runtime_data.data) == len(iot_sim.devices) == 13
    pages = [q for n, q, _b in iot_sim.requests if n == "GetRealList2"]
    assert [(p["startrow"], p["rowcount"]) for p in pages][-3:] == [("0", "5"), ("5", "5"), ("10", "5")]
    await big.close()


# --- commands ---------------------------------------------------------------------------------


async def test_valve_through_the_queue(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """setvalveoff: closing while the queue works; the poll reads the final state and the valve shows closed."""
    meter = next(m for m in meters(iot_sim) if iot_sim.devices[m].flags["valve_open"])
    valve = eid(hass, meter, "valve", "valve")
    await hass.services.async_call("valve", "close_valve", {"entity_id": valve}, blocking=True)
    assert hass.states.get(valve).state == "closing"
    command = last_command(iot_sim)
    assert (command["ctrl_type"], command["processor_name"]) == ("iotmeterv1.common.setvalveoff", "iotmeterv1")
    assert isinstance(command["ctrl_data"], str)
    await iot_sim.step()
    await refresh(hass, iot_entry)
    assert hass.states.get(valve).state == "closing"
    await iot_sim.settle()
    await refresh(hass, iot_entry)
    assert hass.states.get(valve).state == "closed"


async def settle(hass: HomeAssistant, sim: IotMeterSimulator, rounds: int = 2) -> None:
    """Let the simulator finish every command and Home Assistant act on the reports, `rounds` times over (a report
    can queue more: a charge-state read releases the recharges waiting for it)."""
    for _ in range(rounds):
        await sim.settle()
        await hass.async_block_till_done(wait_background_tasks=True)
        await sim.drain()
        await hass.async_block_till_done(wait_background_tasks=True)


async def test_recharge_reads_the_counters_first_then_numbers_on(
    hass: HomeAssistant, iot_push: TestClient, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """First recharge: getchargestate, then remotecharge with the meter's count + 1 and total; later ones follow on;
    a 0xbb refusal makes the next one read the counters again."""
    meter = meters(iot_sim)[0]
    d = iot_sim.devices[meter]
    before = d.remain_money
    times, total = int(d.charges["remote_charge_times"]), Decimal(str(d.charges["remote_total_value"]))
    assert times >= 1  # recharged remotely before, by the gas company's own system
    device_id = dev(hass, iot_entry, meter)
    response = await call(hass, "recharge", {"device_id": device_id, "amount": 50, "reference": "IOT-1"})
    assert response["state"] == "preparing"
    await hass.async_block_till_done(wait_background_tasks=True)
    reading = last_command(iot_sim)
    assert (reading["ctrl_type"], reading["ctrl_define_no"]) == ("iotmeterv1.prepay.getchargestate", "IOT-1-cs")
    await settle(hass, iot_sim)
    command = last_command(iot_sim)
    assert command["ctrl_define_no"] == "IOT-1"
    assert json.loads(command["ctrl_data"]) == {
        "charge_value": 50.0,
        "total_value": float(total + 50),
        "charge_times": times + 1,
    }
    await settle(hass, iot_sim)
    status = eid(hass, meter, "recharge_status")
    assert hass.states.get(status).state == "confirmed"
    assert d.remain_money == before + 50

    # Known counters: the next recharge goes at once, numbered after the first.
    response = await call(hass, "recharge", {"device_id": device_id, "amount": 5, "reference": "IOT-2"})
    assert response["state"] == "pending"
    assert json.loads(last_command(iot_sim)["ctrl_data"])["charge_times"] == times + 2
    iot_sim.refuse_charges = True
    await settle(hass, iot_sim)
    assert hass.states.get(status).state == "failed"
    assert "0xbb" in iot_entry.runtime_data.commands.get("IOT-2").message
    iot_sim.refuse_charges = False
    # The meter refused our numbers: they are read again before the next recharge.
    response = await call(hass, "recharge", {"device_id": device_id, "amount": 7, "reference": "IOT-3"})
    assert response["state"] == "preparing"
    await settle(hass, iot_sim)
    await settle(hass, iot_sim)
    assert hass.states.get(status).state == "confirmed"
    assert d.remain_money == before + 57


async def test_timeout_cancel_retry(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """A command the platform times out fails with its state; cancel while waiting; retry puts it back."""
    meter = meters(iot_sim)[0]
    device_id = dev(hass, iot_entry, meter)
    iot_sim.timeout_commands = True
    await call(hass, "release_valve_force", {"device_id": device_id, "reference": "REL-1"})
    await iot_sim.settle()
    await refresh(hass, iot_entry)
    command = iot_entry.runtime_data.commands.get("REL-1")
    assert command.state.value == "failed"
    assert command.message.startswith("6")
    iot_sim.timeout_commands = False
    response = await call(hass, "retry_command", {"device_id": device_id, "serial": "REL-1"})
    assert response["state"] == "pending"
    assert sent(iot_sim, "Retry")
    await iot_sim.settle()
    await refresh(hass, iot_entry)
    assert iot_entry.runtime_data.commands.get("REL-1").state.value == "confirmed"

    await call(hass, "set_remaining_balance", {"device_id": device_id, "amount": 88, "reference": "REM-1"})
    response = await call(hass, "cancel_command", {"device_id": device_id})
    assert response["state"] == "cancelled"
    assert last_command(iot_sim)["ctrl_state"] == 5
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "retry_command", {"device_id": device_id, "serial": "NOPE"})
    assert err.value.translation_key == "no_retryable_command"


async def test_reads_return_results(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """read_price and get_charge_state wait for the meter's answer and return it; wait 0 returns pending."""
    meter = meters(iot_sim)[0]
    device_id = dev(hass, iot_entry, meter)

    client = iot_entry.runtime_data.client
    asked = client.async_command_states

    async def meter_answers_first(commands: Any) -> Any:
        await iot_sim.settle()  # the meter answers while Home Assistant waits
        return await asked(commands)

    with (
        patch("custom_components.meter_cloud.actions.POLL_WAIT", 0.01),
        patch.object(client, "async_command_states", meter_answers_first),
    ):
        response = await call(hass, "read_price", {"device_id": device_id, "wait": 5})
    assert response["state"] == "confirmed"
    assert response["result"]["price1"] == float(iot_sim.devices[meter].ladder["price1"])
    response = await call(hass, "get_charge_state", {"device_id": device_id, "wait": 0})
    assert response["state"] == "pending"
    listed = await call(hass, "list_commands", {"device_id": device_id})
    assert [c["kind"] for c in listed["commands"]][:2] == ["charge_state", "read_price"]


async def test_settings_commands(hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator) -> None:
    """set_price (one AddMulti for several meters), setremain, setcumulant, openaccount carry the spec's data."""
    ids = meters(iot_sim)
    devices = [dev(hass, iot_entry, m) for m in ids]
    tiers = {"price_1": 2.5, "ladder_1": 300, "price_2": 3, "ladder_2": 600, "price_3": 3.5, "cycle_months": 12}
    await call(hass, "set_price", {"device_id": devices, **tiers})
    assert len(sent(iot_sim, "AddMulti")) == 1
    assert len(sent(iot_sim, "AddMulti")[0]) == len(ids)
    ladder = json.loads(sent(iot_sim, "AddMulti")[0][0]["ctrl_data"])
    assert (ladder["price1"], ladder["ladder1"], ladder["price3"], ladder["price5"]) == (2.5, 300.0, 3.5, 0.0)
    assert ladder["cycle_month"] == 12
    await call(hass, "set_remaining_balance", {"device_id": devices[0], "amount": 12.5})
    assert json.loads(last_command(iot_sim)["ctrl_data"]) == {"remain_value": 12.5}
    await call(hass, "set_cumulative_volume", {"device_id": devices[0], "standard_volume": 100.5})
    assert json.loads(last_command(iot_sim)["ctrl_data"]) == {"std_sum": 100.5, "work_sum": 100.5}
    await call(hass, "open_account", {"device_id": devices[1], "amount": 100, "price_1": 2.8})
    opened = json.loads(last_command(iot_sim)["ctrl_data"])
    assert (opened["charge_value"], opened["price1"], opened["ladder1"]) == (100.0, 2.8, 0)
    await iot_sim.settle()
    await refresh(hass, iot_entry)
    assert iot_sim.devices[ids[0]].remain_money == Decimal("12.5")
    assert value(hass, ids[0], "reading") == Decimal("100.5")


async def test_token_expires_mid_session(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """An expired token is renewed without the user; a changed password starts reauth."""
    meter = meters(iot_sim)[0]
    logins = [n for n, *_ in iot_sim.requests].count("Login")
    iot_sim.advance(iot_sim.token_ttl + 60)
    await hass.services.async_call(
        "valve", "close_valve", {"entity_id": eid(hass, meter, "valve", "valve")}, blocking=True
    )
    assert [n for n, *_ in iot_sim.requests].count("Login") == logins + 1
    iot_sim.password = "changed"
    iot_sim.advance(iot_sim.token_ttl + 60)
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "release_valve_force", {"device_id": dev(hass, iot_entry, meter)})
    assert err.value.translation_key == "invalid_auth"
    await hass.async_block_till_done()
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [f["context"]["source"] for f in flows] == ["reauth"]


# --- pushes and alarms ------------------------------------------------------------------------


async def test_push_mode(
    hass: HomeAssistant, iot_push: TestClient, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """Readings, alarms and events pushed; re-sends applied once and answered alike; the key is checked."""
    meter = meters(iot_sim)[0]
    events = async_capture_events(hass, EVENT_ALARM)
    device_events = async_capture_events(hass, EVENT_DEVICE_EVENT)
    iot_sim.tick(120)
    status, answer = await iot_sim.push_reading(meter)
    await hass.async_block_till_done()
    assert (status, answer["State"]) == (200, "success")
    assert value(hass, meter, "reading") == iot_sim.devices[meter].std_sum
    iot_sim.add_alarm(meter, 1, "磁攻击")
    iot_sim.add_event(meter, 101, "开阀")
    await iot_sim.drain()
    await hass.async_block_till_done()
    # The platform has no code table: its words say what happened, in the user's language; code and words stay.
    assert [e.data["type"] for e in events] == ["magnetic_interference"]
    assert [(e.data["type"], e.data["message"]) for e in device_events] == [("valve_opened", "开阀")]
    state = hass.states.get(eid(hass, meter, "alarm", "event"))
    assert (state.attributes["event_type"], state.attributes["code"]) == ("magnetic_interference", "1")
    state = hass.states.get(eid(hass, meter, "device_events", "event"))
    assert (state.attributes["event_type"], state.attributes["message"]) == ("valve_opened", "开阀")

    body = json.dumps(iot_sim.reading_body(meter)).encode()
    headers = {"company_no": iot_sim.company_no, "data_api_key": iot_sim.data_api_key}
    answers = [await (await iot_push.post(f"{PUSH}/api/Data/MeterData/Add", data=body, headers=headers)).json()]
    answers.append(await (await iot_push.post(f"{PUSH}/api/Data/MeterData/Add", data=body, headers=headers)).json())
    assert answers[0]["Data"] == answers[1]["Data"]
    alarm = {
        "device_comm_no": meter,
        "device_type": "1",
        "alarm_time": "2026-11-20T10:00:00",
        "alarm_code": 4,
        "alarm_content": "泄漏",
        "receive_time": "2026-11-20T10:00:05",
        "alarm_data": {},
    }
    for _ in range(3):
        resp = await iot_push.post(f"{PUSH}/api/Data/DeviceAlarm/Add", json=alarm, headers=headers)
        assert (await resp.json())["State"] == "success"
    await hass.async_block_till_done()
    assert [e.data["type"] for e in events] == ["magnetic_interference", "gas_leak"]  # the re-sends fire nothing
    resp = await iot_push.post(f"{PUSH}/api/Data/DeviceAlarm/Add", json=alarm, headers={**headers, "data_api_key": "x"})
    assert resp.status == 401
    resp = await iot_push.post(f"{PUSH}/api/Conf/CtrlData/Report", data=b"[]", headers=headers)
    assert resp.status == 400


async def test_alarm_catch_up(hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator) -> None:
    """Alarms recorded while nothing was pushed are fired at the next poll, once; old history is not replayed."""
    meter = meters(iot_sim)[0]
    events = async_capture_events(hass, EVENT_ALARM)
    await refresh(hass, iot_entry)
    assert events == []
    iot_sim.add_alarm(meter, 2, "阀门故障")
    await refresh(hass, iot_entry)
    await refresh(hass, iot_entry)
    assert [(e.data["meter_id"], e.data["code"]) for e in events] == [(meter, "2")]
    assert sent(iot_sim, "DeviceAlarm/GetList2")


async def test_two_readings_in_one_second_are_two(
    hass: HomeAssistant, iot_push: TestClient, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """Only an identical body is a re-send: a new reading with the same acquisition second still applies."""
    meter = meters(iot_sim)[0]
    headers = {"company_no": iot_sim.company_no, "data_api_key": iot_sim.data_api_key}
    body = iot_sim.reading_body(meter)
    for std_sum in (1000.5, 1001.25):
        resp = await iot_push.post(f"{PUSH}/api/Data/MeterData/Add", json={**body, "std_sum": std_sum}, headers=headers)
        assert resp.status == 200
        await hass.async_block_till_done()
        assert value(hass, meter, "reading") == Decimal(str(std_sum))


async def test_confirmed_command_reads_the_device_alone(
    hass: HomeAssistant, iot_push: TestClient, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """After the Report of a confirmed command, GetRealModel refreshes that one device (not the whole list)."""
    meter = meters(iot_sim)[0]
    device_id = dev(hass, iot_entry, meter)
    lists = len([n for n, *_ in iot_sim.requests if n == "GetRealList2"])
    await call(hass, "set_remaining_balance", {"device_id": device_id, "amount": 42})
    await iot_sim.settle()
    await iot_sim.drain()
    await hass.async_block_till_done(wait_background_tasks=True)
    assert [q.get("meter_comm_no") for n, q, _ in iot_sim.requests if n == "GetRealModel"] == [meter]
    assert len([n for n, *_ in iot_sim.requests if n == "GetRealList2"]) == lists
    assert value(hass, meter, "balance") == Decimal(42)


async def test_diagnostics_hide_iot_secrets(
    hass: HomeAssistant, iot_entry: MockConfigEntry, iot_sim: IotMeterSimulator
) -> None:
    """The data key, login and password never reach diagnostics."""
    from custom_components.meter_cloud.diagnostics import async_get_config_entry_diagnostics

    text = str(await async_get_config_entry_diagnostics(hass, iot_entry))
    for secret in (iot_sim.data_api_key, iot_sim.password, iot_sim.login_name, IOT_PUSH_ID):
        assert secret not in text
    assert "command_queue" in text


async def test_options_show_push_url_without_details(hass: HomeAssistant, iot_entry: MockConfigEntry) -> None:
    """A pushing backend without a details call: the push URL, the poll interval and no details interval (the
    low-balance thresholds of its prepaid meters besides)."""
    result = await hass.config_entries.options.async_init(iot_entry.entry_id)
    assert result["step_id"] == "init"
    assert list(result["data_schema"].schema) == ["scan_interval", "low_balance_amount", "low_balance_days"]
    assert f"/api/meter_cloud/push/{iot_entry.data['push_id']}/" in result["description_placeholders"]["push_url"]
