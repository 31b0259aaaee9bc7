"""IotMeterClient over real HTTP against the IoT meter platform simulator: every value is the simulator's own."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler, Middleware

from custom_components.meter_cloud.api import (
    Alarm,
    AlarmPriority,
    AlarmType,
    AuthenticationError,
    Capability,
    CloudConnectionError,
    CloudTimeoutError,
    CommandError,
    CommandKind,
    CommandRef,
    CommandResult,
    DuplicateSerialError,
    InvalidRequestError,
    IotMeterClient,
    MeterCloudError,
    MeterData,
    PriceSchedule,
    PushError,
    PushResult,
    ResponseError,
    UnsupportedError,
    ValveState,
)
from custom_components.meter_cloud.api.iotmeter import LATE_UPLOADS
from custom_components.meter_cloud.api.iotmeter.control import parse_expiration
from custom_components.meter_cloud.api.iotmeter.records import alarm_from_record, conditions_of
from custom_components.meter_cloud.api.models import DEVICE_STATES
from custom_components.meter_cloud.api.parse import as_datetime
from simulator.iotmeter import (
    ALARMS,
    EVENTS,
    METER_BITS,
    RTU_BITS,
    STATE_MSG,
    IotMeterSimulator,
    SimDevice,
    q3,
)

from ..timing import LOST_ANSWER_HANG, LOST_ANSWER_TIMEOUT
from .conftest import TZ

WIRE = "%Y-%m-%dT%H:%M:%S"
# ext_data's meter booleans (3.1.1) and the RTU's own four.
METER_FLAGS = (
    "valve_open",
    "remote_valve_off",
    "apart_valve_off",
    "max_flow_valve_off",
    "min_flow_valve_off",
    "dead_valve_off",
    "magnetic_attack",
    "ext_power",
    "pulse_fault",
    "battery_cut",
    "force_valve_on",
)
RTU_FLAGS = ("rtu_door_open", "rtu_power", "rtu_fence_alarm", "rtu_vibrate_alarm")
READING, ALARM, EVENT, REPORT = (
    "api/Data/MeterData/Add",
    "api/Data/DeviceAlarm/Add",
    "api/Data/DeviceEvent/Add",
    "api/Conf/CtrlData/Report",
)
COMMAND_TIMEOUT = timedelta(hours=24)

Rewrite = Callable[[Any], Any]


@dataclass
class Wire:
    """Headers and answers passing between client and simulator; `rewrites` change answers on their way back."""

    headers: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    answers: list[tuple[str, Any]] = field(default_factory=list)
    rewrites: dict[str, Rewrite] = field(default_factory=dict)

    def middleware(self) -> Middleware:
        """An aiohttp middleware recording each vendor request's headers and (rewritten) answer."""

        @web.middleware
        async def watch(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.startswith("/_sim/"):
                return await handler(request)
            self.headers.append((request.path, dict(request.headers)))
            response = await handler(request)
            if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
                return response
            answer = json.loads(response.body) if response.content_type == "application/json" else None
            rewrite = next((fn for suffix, fn in self.rewrites.items() if request.path.endswith(suffix)), None)
            if rewrite is not None:
                answer = rewrite(answer)
                response = web.Response(
                    status=response.status, text=json.dumps(answer, ensure_ascii=False), content_type="application/json"
                )
            self.answers.append((request.path, answer))
            return response

        return watch

    def of(self, suffix: str) -> list[dict[str, str]]:
        """Headers of the requests whose path ends with `suffix`."""
        return [headers for path, headers in self.headers if path.endswith(suffix)]


Serve = Callable[[IotMeterSimulator], Awaitable[TestServer]]


class TextExtSimulator(IotMeterSimulator):
    """ext_data sent as a JSON string: the spec types it "JSON", its samples show an object."""

    def _record(
        self, dev: SimDevice, data_type: int = 0, at: datetime | None = None, received: datetime | None = None
    ) -> dict[str, Any]:
        record = super()._record(dev, data_type, at, received)
        return record | {"ext_data": json.dumps(record["ext_data"], ensure_ascii=False)}


class LowerCountSimulator(IotMeterSimulator):
    """Every list with the table's lower-case totalcount (GetRealList2 included)."""

    @staticmethod
    def _listing(rows: list[dict[str, Any]], page: tuple[int, int], *, upper: bool) -> dict[str, Any]:
        return IotMeterSimulator._listing(rows, page, upper=False)


class UpperCountSimulator(IotMeterSimulator):
    """Every list with the sample's "Totalcount" (the GetList2 lists included)."""

    @staticmethod
    def _listing(rows: list[dict[str, Any]], page: tuple[int, int], *, upper: bool) -> dict[str, Any]:
        return IotMeterSimulator._listing(rows, page, upper=True)


CASINGS: dict[str, type[IotMeterSimulator]] = {
    "as_simulated": IotMeterSimulator,
    "lower": LowerCountSimulator,
    "upper": UpperCountSimulator,
}


def make_sim(cls: type[IotMeterSimulator] = IotMeterSimulator, **kwargs: Any) -> IotMeterSimulator:
    """Five meters (one valve closed, one nearly out of money) and two RTUs; commands wait for step()/settle()."""
    simulator = cls(**({"meters": 5, "rtus": 2, "command_delay": 3600, "seed": 7} | kwargs))
    simulator.hang_seconds = LOST_ANSWER_HANG
    return simulator


def iot_config(
    sim: IotMeterSimulator, server: TestServer | None, *, control: bool = True, **overrides: str
) -> dict[str, str]:
    """The config-flow fields; data and control API on the same simulator."""
    url = str(server.make_url("")) if server is not None else "http://127.0.0.1:9/"
    config = {"data_url": url, "company_no": sim.company_no, "data_api_key": sim.data_api_key}
    if control:
        config |= {"control_url": url, "login_name": sim.login_name, "password": sim.password}
    return config | overrides


def make_client(
    sim: IotMeterSimulator, server: TestServer | None, session: aiohttp.ClientSession, **kwargs: Any
) -> IotMeterClient:
    """A client for the simulator with a short timeout."""
    iot = IotMeterClient(session, iot_config(sim, server, **kwargs), tz=TZ)
    iot.request_timeout = 5
    return iot


@pytest.fixture
def wire() -> Wire:
    """The recorder between client and simulator."""
    return Wire()


@pytest.fixture
def sim() -> IotMeterSimulator:
    """The default simulator."""
    return make_sim()


@pytest.fixture
async def server(sim: IotMeterSimulator, serve: Serve) -> TestServer:
    """The simulator on loopback (data and control API)."""
    return await serve(sim)


@pytest.fixture
def client(sim: IotMeterSimulator, server: TestServer, session: aiohttp.ClientSession) -> IotMeterClient:
    """A client with data and control credentials."""
    return make_client(sim, server, session)


@pytest.fixture
def reader(sim: IotMeterSimulator, server: TestServer, session: aiohttp.ClientSession) -> IotMeterClient:
    """A client with data credentials only."""
    return make_client(sim, server, session, control=False)


# ---- helpers --------------------------------------------------------------------------------------


def names(sim: IotMeterSimulator) -> list[str]:
    """Endpoint names of every request the simulator received, in order."""
    return [name for name, *_ in sim.requests]


def sent(sim: IotMeterSimulator, name: str) -> list[Any]:
    """Bodies the simulator received on one endpoint."""
    return [body for n, _params, body in sim.requests if n == name]


def queries(sim: IotMeterSimulator, name: str) -> list[dict[str, str]]:
    """Query and path parameters the simulator received on one endpoint."""
    return [params for n, params, _body in sim.requests if n == name]


def meter_nos(sim: IotMeterSimulator) -> list[str]:
    """Communication numbers of the simulated meters."""
    return [no for no, dev in sim.devices.items() if dev.device_type == 1]


def rtu_nos(sim: IotMeterSimulator) -> list[str]:
    """Communication numbers of the simulated RTUs."""
    return [no for no, dev in sim.devices.items() if dev.device_type == 2]


def open_meter(sim: IotMeterSimulator) -> SimDevice:
    """The first meter whose valve is open."""
    return next(dev for dev in sim.devices.values() if dev.device_type == 1 and dev.flags["valve_open"])


def following(dev: SimDevice, amount: Decimal, after: int = 0) -> dict[str, Any]:
    """The numbers the meter expects on its next remote charge (`after` more queued before it)."""
    times = int(dev.charges["remote_charge_times"])
    total = Decimal(str(dev.charges["remote_total_value"]))
    return {"counter": times + 1 + after, "total": total + amount}


def wall(text: str) -> datetime:
    """A platform wall-clock time."""
    return datetime.strptime(text, WIRE).replace(tzinfo=TZ)


def midnight(day: date) -> datetime:
    """00:00 of a day, platform time."""
    return datetime.combine(day, time(), tzinfo=TZ)


def state_text(bits: int, table: dict[int, str]) -> str:
    """meter_stat_emsg / rtu_state_msg for a state word."""
    return ",".join(text for bit, text in table.items() if bits & bit) or "正常"


# What each simulated state bit means, in DEVICE_STATES words (independent of the client's word rules).
BIT_STATES = {
    "meter": {
        1: "valve_fault",
        2: "battery_fault",
        4: "magnetic_interference",
        8: "reed_switch_fault",
        16: "tampering",
        32: "gas_leak",
        64: "battery_cut",
    },
    "rtu": {1: "door_open", 2: "mains_lost", 4: "fence_alarm", 8: "vibration"},
}


def conditions(bits: int, kind: str) -> tuple[str, ...]:
    """The conditions a state word names, most severe first (DEVICE_STATES order), or ("normal",)."""
    named = {state for bit, state in BIT_STATES[kind].items() if bits & bit}
    return tuple(state for state in DEVICE_STATES if state in named) or ("normal",)


def expected(dev: SimDevice) -> MeterData:
    """What the client must make of a simulated device's real-time record: every field, nothing else."""
    common: dict[str, Any] = {
        "meter_id": dev.comm_no,
        "reading_time": dev.acquired,
        "temperature": q3(dev.temperature),
        "pressure": q3(dev.pressure),
        "rssi": dev.rssi,
        "battery_voltage": q3(dev.battery_voltage),
        "battery_level": dev.battery_level,
        "state_code": dev.state_bits,
        "conditions": conditions(dev.state_bits, "rtu" if dev.device_type == 2 else "meter"),
        "device_state": conditions(dev.state_bits, "rtu" if dev.device_type == 2 else "meter")[0],
    }
    if dev.device_type == 2:
        return MeterData(
            **common,
            kind="rtu",
            model="RTU",
            state_message=state_text(dev.state_bits, RTU_BITS),
            flags={name: dev.flags[name] for name in RTU_FLAGS},
        )
    return MeterData(
        **common,
        kind="meter",
        model="物联网表",
        reading=q3(dev.std_sum),
        work_volume=q3(dev.work_sum),
        std_flow=q3(dev.std_flow),
        work_flow=q3(dev.work_flow),
        magnetic_attacks=dev.magatt_times,
        this_month=q3(dev.this_month_sum),
        last_month=q3(dev.last_month_sum),
        this_cycle=q3(dev.this_cycle_sum),
        last_cycle=q3(dev.last_cycle_sum),
        balance=q3(dev.remain_money),
        remain_volume=q3(dev.remain_money / dev.curr_price),
        price=q3(dev.curr_price),
        total_recharge=q3(dev.total_buy_value),
        state_message=state_text(dev.state_bits, METER_BITS),
        valve=ValveState.OPEN if dev.flags["valve_open"] else ValveState.CLOSED,
        flags={name: dev.flags[name] for name in METER_FLAGS} | {"low_power": dev.flags["power_level"] > 0},
    )


def command(sim: IotMeterSimulator, serial: str) -> dict[str, Any]:
    """The simulator's command with this ctrl_define_no."""
    [found] = [c for c in sim.commands.values() if c["ctrl_define_no"] == serial]
    return found


def ref(serial: str, kind: CommandKind, vendor_id: str | None) -> CommandRef:
    """A reference to a queued command."""
    return CommandRef(serial, kind, vendor_id=vendor_id)


async def state_of(client: IotMeterClient, serial: str, kind: CommandKind, vendor_id: str | None) -> CommandResult:
    """The one result async_command_states gives for one command."""
    [result] = await client.async_command_states([ref(serial, kind, vendor_id)])
    return result


def push_headers(sim: IotMeterSimulator) -> dict[str, str]:
    """The platform's push headers (2.2.1)."""
    return {"Content-Type": "application/json", "company_no": sim.company_no, "data_api_key": sim.data_api_key}


def push_body(entry: dict[str, Any], *drop: str) -> bytes:
    """A logged alarm/event or a record as the platform pushes it (without its id and company)."""
    return json.dumps({k: v for k, v in entry.items() if k not in {"company_no", *drop}}, ensure_ascii=False).encode()


def envelope(result: PushResult) -> dict[str, Any]:
    """Our answer to a push: the spec's JSON envelope."""
    assert isinstance(result.response, dict)
    return result.response


def renamed(body: bytes, old: str, new: str) -> bytes:
    """An alarm body as an event body, or the other way round: the same record under the other prefix."""
    data = json.loads(body)
    return json.dumps({key.replace(f"{old}_", f"{new}_", 1): value for key, value in data.items()}).encode()


NOW = datetime(2026, 1, 1, tzinfo=TZ)


# ---- identity, capabilities, fields ---------------------------------------------------------------


async def test_identity_and_capabilities(
    sim: IotMeterSimulator, server: TestServer, session: aiohttp.ClientSession
) -> None:
    """Control needs URL, login and password; without any one of them the client is read-only."""
    config = iot_config(sim, server)
    assert IotMeterClient.unique_id(config) == "iotmeter_1001"
    assert IotMeterClient.title(config) == "IoT meter platform 1001"
    read = {
        Capability.PUSH,
        Capability.HISTORY,
        Capability.DAILY_SPEND,
        Capability.ALARM_HISTORY,
        Capability.SINGLE_READ,
    }
    control = {
        Capability.VALVE,
        Capability.RECHARGE,
        Capability.SET_PRICE,
        Capability.CANCEL_COMMAND,
        Capability.COMMAND_QUEUE,
        Capability.READ_PRICE,
        Capability.SET_REMAINING,
        Capability.CHARGE_STATE,
        Capability.OPEN_ACCOUNT,
        Capability.SET_CUMULATIVE,
        Capability.RELEASE_FORCE,
    }
    full = IotMeterClient(session, config, tz=TZ)
    assert full.capabilities == read | control
    assert full.supports(Capability.VALVE)
    for missing in ("control_url", "login_name", "password"):
        partial = IotMeterClient(session, config | {missing: ""}, tz=TZ)
        assert partial.capabilities == read, missing
        assert not partial.supports(Capability.VALVE)
    reader = IotMeterClient(session, iot_config(sim, server, control=False), tz=TZ)
    assert reader.capabilities == read
    with pytest.raises(UnsupportedError):
        await reader.async_set_valve(MeterData(meter_id=meter_nos(sim)[0], kind="meter"), False, "RO-1")
    with pytest.raises(UnsupportedError):
        await reader.async_command_states([ref("RO-2", CommandKind.VALVE_OPEN, "1")])
    assert sim.requests == []
    assert reader.request_count == 0


async def test_fields_for_meter_and_rtu(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """A meter declares volumes, money and its valve; an RTU only time, state, signal, battery and its flags."""
    meters = await client.async_get_meters()
    meter, rtu = meters[meter_nos(sim)[0]], meters[rtu_nos(sim)[0]]
    meter_fields, rtu_fields = client.fields_for(meter), client.fields_for(rtu)
    assert {"reading", "balance", "valve", "total_recharge", "remain_volume", "price"} <= meter_fields
    assert rtu_fields == {"reading_time", "state_code", "state_message", "rssi", "battery_voltage", "flags"}
    assert rtu_fields < meter_fields
    assert client.fields == meter_fields
    # Every declared field is filled from the simulator's record, so no entity is created for nothing.
    for data, declared in ((meter, meter_fields), (rtu, rtu_fields)):
        assert [name for name in declared if getattr(data, name) is None] == []
    assert (rtu.reading, rtu.balance, rtu.valve, rtu.total_recharge) == (None, None, None, None)


# ---- readings ------------------------------------------------------------------------------------


async def test_get_meters_matches_simulator(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """Every field of every meter and RTU is the simulator's, including alarm-driven states and flags."""
    sim.tick(60)
    meter, other = meter_nos(sim)[:2]
    sim.add_alarm(meter, 1)  # magnetic attack: state bit 4, flag, counter
    sim.add_alarm(meter, 3)  # low battery: power_level 1 → low_power
    sim.add_alarm(other, 5)  # dismantled: valve closed, apart_valve_off
    sim.add_alarm(rtu_nos(sim)[0], 6)  # RTU door open
    sim.devices[meter].flags["force_valve_on"] = True
    assert sim.devices[meter].state_bits == 6
    assert {dev.flags["valve_open"] for dev in sim.devices.values() if dev.device_type == 1} == {True, False}
    got = await client.async_get_meters()
    assert set(got) == set(sim.devices)
    for comm_no, dev in sim.devices.items():
        assert got[comm_no] == expected(dev), comm_no
    low = got[meter]
    assert low.flags is not None
    assert (low.flags["low_power"], low.flags["magnetic_attack"], low.flags["force_valve_on"]) == (True, True, True)
    assert (low.state_code, low.state_message, low.magnetic_attacks) == (6, "低电,磁攻击", 1)
    assert got[other].valve is ValveState.CLOSED
    rtu = got[rtu_nos(sim)[0]]
    assert rtu.flags == {"rtu_door_open": True, "rtu_power": True, "rtu_fence_alarm": False, "rtu_vibrate_alarm": False}
    assert (rtu.state_code, rtu.state_message, rtu.kind, rtu.valve) == (1, "门禁打开", "rtu", None)
    assert rtu.reading_time is not None
    assert rtu.reading_time.utcoffset() == timedelta(hours=8)
    assert client.request_count == 1
    assert queries(sim, "GetRealList2") == [{"startrow": "0", "rowcount": "100"}]


async def test_rtu_state_comes_from_ext_data(sim: IotMeterSimulator, client: IotMeterClient, wire: Wire) -> None:
    """An RTU's state is ext_data.rtu_state/rtu_state_msg; a meter's is meter_state/meter_stat_emsg."""
    rtu, meter = rtu_nos(sim)[0], meter_nos(sim)[0]
    sim.add_alarm(rtu, 7)  # mains lost: bit 2
    sim.add_alarm(meter, 2)  # valve fault: bit 1

    def blank_meter_state(answer: dict[str, Any]) -> dict[str, Any]:
        answer["Data"] |= {"meter_state": 0, "meter_stat_emsg": ""}
        return answer

    wire.rewrites["GetRealModel/" + rtu] = blank_meter_state
    got = await client.async_get_meter(rtu)
    assert got is not None
    assert (got.state_code, got.state_message) == (2, "市电中断")

    def other_rtu_state(answer: dict[str, Any]) -> dict[str, Any]:
        answer["Data"]["ext_data"] |= {"rtu_state": 9, "rtu_state_msg": "不是表的状态"}
        return answer

    wire.rewrites["GetRealModel/" + meter] = other_rtu_state
    got = await client.async_get_meter(meter)
    assert got is not None
    assert (got.state_code, got.state_message) == (1, "阀门故障")


async def test_ext_data_as_json_string(serve: Serve, session: aiohttp.ClientSession) -> None:
    """ext_data as a JSON string gives the same flags, valve, state and total recharge as an object."""
    sim = make_sim(TextExtSimulator)
    client = make_client(sim, await serve(sim), session)
    sim.add_alarm(rtu_nos(sim)[0], 6)
    sim.add_alarm(meter_nos(sim)[1], 3)
    got = await client.async_get_meters()
    assert isinstance(sim.record(meter_nos(sim)[0])["ext_data"], str)
    for comm_no, dev in sim.devices.items():
        assert got[comm_no] == expected(dev), comm_no
    assert got[meter_nos(sim)[1]].flags == expected(sim.devices[meter_nos(sim)[1]]).flags
    assert any(data.flags and data.flags.get("low_power") for data in got.values())


@pytest.mark.parametrize("casing", sorted(CASINGS))
async def test_get_meters_paged(serve: Serve, session: aiohttp.ClientSession, casing: str) -> None:
    """250 devices come in three pages of 100, whichever casing the count has: one request per page."""
    sim = make_sim(CASINGS[casing], meters=230, rtus=20)
    client = make_client(sim, await serve(sim), session, control=False)
    got = await client.async_get_meters()
    assert len(got) == 250
    for comm_no, dev in sim.devices.items():
        assert got[comm_no] == expected(dev), comm_no
    assert client.request_count == 3
    assert [(q["startrow"], q["rowcount"]) for q in queries(sim, "GetRealList2")] == [
        ("0", "100"),
        ("100", "100"),
        ("200", "100"),
    ]


async def test_get_meters_exact_pages(serve: Serve, session: aiohttp.ClientSession) -> None:
    """200 devices are two requests: the count ends the paging, not an empty third page."""
    sim = make_sim(meters=200, rtus=0)
    client = make_client(sim, await serve(sim), session, control=False)
    assert len(await client.async_get_meters()) == 200
    assert client.request_count == 2


async def test_get_meters_without_count_is_one_page(sim: IotMeterSimulator, reader: IotMeterClient, wire: Wire) -> None:
    """Without a total the first page is all there is; rows without a communication number are skipped."""

    def no_count(answer: dict[str, Any]) -> dict[str, Any]:
        answer["Data"].append({"meter_comm_no": "", "std_sum": 1})
        return {key: value for key, value in answer.items() if key != "Totalcount"}

    wire.rewrites["GetRealList2"] = no_count
    got = await reader.async_get_meters()
    assert set(got) == set(sim.devices)
    assert reader.request_count == 1


async def test_get_meter_found_and_not_found(sim: IotMeterSimulator, client: IotMeterClient, wire: Wire) -> None:
    """GetRealModel gives one device; an unknown number is the platform's refusal; a null Data is None."""
    sim.tick(30)
    for comm_no in (meter_nos(sim)[2], rtu_nos(sim)[1]):
        assert await client.async_get_meter(comm_no) == expected(sim.devices[comm_no])
    assert queries(sim, "GetRealModel")[0] == {"meter_comm_no": meter_nos(sim)[2]}
    with pytest.raises(CommandError) as err:
        await client.async_get_meter("86000000009999")
    assert (str(err.value), err.value.code, err.value.reason) == ("找不到数据", "failed", "command_failed")
    wire.rewrites["GetRealModel/86000000009998"] = lambda _answer: {"Data": None, "State": "success", "Message": ""}
    assert await client.async_get_meter("86000000009998") is None


# ---- login and token ------------------------------------------------------------------------------


async def test_validate_logs_in_with_md5(sim: IotMeterSimulator, client: IotMeterClient, wire: Wire) -> None:
    """One data call, then Login with the MD5 password; control calls carry the token, data calls the key."""
    await client.async_validate()
    assert names(sim) == ["GetRealList2", "Login"]
    [login] = queries(sim, "Login")
    assert login == {"loginName": "admin", "pwd": hashlib.md5(b"123456").hexdigest()}
    [token] = [answer["Data"]["token"] for path, answer in wire.answers if path.endswith("Account/Login")]
    meter = open_meter(sim).comm_no
    receipt = await client.async_set_valve(MeterData(meter_id=meter, kind="meter"), False, "TOK-1")
    await client.async_command_states([ref("TOK-1", CommandKind.VALVE_CLOSE, receipt.vendor_id)])
    assert names(sim).count("Login") == 1
    control = wire.of("CtrlData/GetList") + wire.of("CtrlData/Add") + wire.of(f"CtrlData/GetModel/{receipt.vendor_id}")
    assert len(control) == 3
    for headers in control:
        assert headers["token"] == token
        assert "data_api_key" not in headers
    [data] = wire.of("GetRealList2")
    assert (data["company_no"], data["data_api_key"]) == (sim.company_no, sim.data_api_key)
    assert "token" not in data
    assert "token" not in wire.of("Account/Login")[0]
    # The 7-fraction-digit expiration is read to the microsecond.
    assert client._token_expires == sim._tokens[token]


async def test_read_only_validate_does_not_log_in(sim: IotMeterSimulator, reader: IotMeterClient) -> None:
    """Without control credentials validation is the data call alone."""
    await reader.async_validate()
    assert names(sim) == ["GetRealList2"]


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("2018-08-11 10:37:56", datetime(2018, 8, 11, 10, 37, 56, tzinfo=TZ)),  # 4.2.12's Report sample
        ("2018-08-11T10:37:56", datetime(2018, 8, 11, 10, 37, 56, tzinfo=TZ)),  # 4.2.4's GetModel sample
        ("2018-08-11 10:37:56.5", datetime(2018, 8, 11, 10, 37, 56, 500000, tzinfo=TZ)),
        ("2018-08-11T10:37:56.1234567", datetime(2018, 8, 11, 10, 37, 56, 123456, tzinfo=TZ)),
        ("2018-08-11T10:37:56+08:00", datetime(2018, 8, 11, 10, 37, 56, tzinfo=TZ)),
        ("2018-08-11 10:37:56.25+08:00", datetime(2018, 8, 11, 10, 37, 56, 250000, tzinfo=TZ)),
        ("2018-08-11T02:37:56Z", datetime(2018, 8, 11, 10, 37, 56, tzinfo=TZ)),
        ("2018-08-11T02:37:56.9Z", datetime(2018, 8, 11, 10, 37, 56, 900000, tzinfo=TZ)),
        ("2018-08-11T05:37:56+0300", datetime(2018, 8, 11, 10, 37, 56, tzinfo=TZ)),
        ("2018-08-11 10:37", datetime(2018, 8, 11, 10, 37, tzinfo=TZ)),
        ("2018-08-11", datetime(2018, 8, 11, tzinfo=TZ)),
        ("2018-08-11X10:37:56", None),
        ("2018-02-30 10:37:56.5", None),
    ],
)
def test_vendor_times(text: str, wanted: datetime | None) -> None:
    """Every time field reads fractions, `Z` or an offset, and `T` or a space between date and time."""
    got = as_datetime(text, TZ)
    assert got == wanted  # the same instant: an offset given is kept, none means the platform's zone
    assert got is None or got.tzinfo is not None


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("2017-05-17T11:17:31.6895023+08:00", datetime(2017, 5, 17, 11, 17, 31, 689502, tzinfo=TZ)),
        ("2017-05-17T03:17:31.1234567+00:00", datetime(2017, 5, 17, 3, 17, 31, 123456, tzinfo=UTC)),
        ("2017-05-17T11:17:31.6895023", datetime(2017, 5, 17, 11, 17, 31, 689502, tzinfo=TZ)),
        ("2017-05-17T11:17:31", datetime(2017, 5, 17, 11, 17, 31, tzinfo=TZ)),
        ("tomorrow", None),
        ("2017-13-40T11:17:31", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_expiration(text: str | None, wanted: datetime | None) -> None:
    """.NET's seven fraction digits, the offset or the vendor's zone when there is none; garbage is None."""
    got = parse_expiration(text, TZ)
    assert got == wanted
    if got is not None and wanted is not None:
        assert got.utcoffset() == wanted.utcoffset()


@pytest.mark.parametrize(("ttl", "logins"), [(3600, 1), (330, 1), (290, 4)])
async def test_token_margin(serve: Serve, session: aiohttp.ClientSession, wire: Wire, ttl: float, logins: int) -> None:
    """A token is used until five minutes before it expires; one closer to expiry is renewed before each call."""
    sim = make_sim(token_ttl=ttl)
    client = make_client(sim, await serve(sim), session)
    receipt = await client.async_set_valve(MeterData(meter_id=open_meter(sim).comm_no), True, "M-1")
    refs = [ref("M-1", CommandKind.VALVE_OPEN, receipt.vendor_id)]
    await client.async_command_states(refs)
    await client.async_command_states(refs)
    # GetList, Add and two GetModel: one login for all of them, or one before each.
    assert names(sim).count("Login") == logins
    assert names(sim).count("GetModel") == 2  # never refused: renewed before it expired
    tokens = {headers["token"] for headers in wire.of(f"GetModel/{receipt.vendor_id}")}
    assert len(tokens) == (1 if logins == 1 else 2)


async def test_garbage_expiration_falls_back_to_half_an_hour(
    sim: IotMeterSimulator, client: IotMeterClient, wire: Wire
) -> None:
    """An expiration that cannot be read counts as 30 minutes: the token is kept, not fetched per call."""

    def garbage(answer: dict[str, Any]) -> dict[str, Any]:
        answer["Data"]["expiration"] = "bald"
        return answer

    wire.rewrites["Account/Login"] = garbage
    before = datetime.now(TZ)
    await client.async_validate()
    assert client._token_expires is not None
    assert before + timedelta(minutes=30) <= client._token_expires <= datetime.now(TZ) + timedelta(minutes=30)
    await client.async_list_commands(MeterData(meter_id=meter_nos(sim)[0]))
    assert names(sim).count("Login") == 1


async def test_relogin_after_401(sim: IotMeterSimulator, client: IotMeterClient, wire: Wire) -> None:
    """A token the platform no longer takes (its clock passed token_ttl) costs exactly one more Login."""
    meter = MeterData(meter_id=open_meter(sim).comm_no, kind="meter")
    receipt = await client.async_set_valve(meter, False, "EXP-1")
    assert names(sim).count("Login") == 1
    sim.advance(sim.token_ttl + 60)
    result = await state_of(client, "EXP-1", CommandKind.VALVE_CLOSE, receipt.vendor_id)
    assert result.success is None
    assert names(sim)[-3:] == ["GetModel", "Login", "GetModel"]
    assert names(sim).count("Login") == 2
    first, second = (headers["token"] for headers in wire.of(f"GetModel/{receipt.vendor_id}"))
    assert first != second
    await client.async_list_commands(meter)
    assert names(sim).count("Login") == 2


async def test_wrong_password(sim: IotMeterSimulator, server: TestServer, session: aiohttp.ClientSession) -> None:
    """The platform's refusal of the login is an authentication error, at validation and at a command."""
    client = make_client(sim, server, session, password="654321")
    with pytest.raises(AuthenticationError, match="用户名或密码错误") as err:
        await client.async_validate()
    assert (err.value.reason, err.value.fields) == ("invalid_control_auth", ("password",))
    with pytest.raises(AuthenticationError):
        await client.async_set_valve(MeterData(meter_id=meter_nos(sim)[0], kind="meter"), True, "PW-1")
    assert queries(sim, "Login")[0]["pwd"] == hashlib.md5(b"654321").hexdigest()
    assert "GetList" not in names(sim)
    assert sim.commands == {}


async def test_second_401_is_not_retried_and_not_an_authentication_error(
    sim: IotMeterSimulator, client: IotMeterClient
) -> None:
    """A token refused again right after a fresh login is not retried forever, nor taken for a wrong password."""
    meter = MeterData(meter_id=open_meter(sim).comm_no, kind="meter")
    receipt = await client.async_set_valve(meter, False, "TWICE-1")
    sim.fail_next("auth", count=2, endpoint="GetModel")
    with pytest.raises(CloudConnectionError) as err:
        await client.async_command_states([ref("TWICE-1", CommandKind.VALVE_CLOSE, receipt.vendor_id)])
    assert (err.value.code, err.value.reason) == ("401", "token_refused")
    assert names(sim).count("GetModel") == 2
    assert names(sim).count("Login") == 2
    assert (await state_of(client, "TWICE-1", CommandKind.VALVE_CLOSE, receipt.vendor_id)).success is None
    assert names(sim).count("Login") == 3  # the refused token was dropped


async def test_concurrent_calls_log_in_once(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """Calls that start together share one login."""
    meter = MeterData(meter_id=meter_nos(sim)[0])
    await asyncio.gather(*(client.async_list_commands(meter) for _ in range(4)))
    assert names(sim).count("Login") == 1
    assert names(sim).count("GetList") == 4


async def test_login_name_with_query_characters(serve: Serve, session: aiohttp.ClientSession) -> None:
    """A login name with characters that mean something in a query string still logs in."""
    sim = make_sim(login_name="ops+gas&co")
    client = make_client(sim, await serve(sim), session)
    await client.async_validate()
    assert queries(sim, "Login")[0]["loginName"] == "ops+gas&co"


# ---- commands ------------------------------------------------------------------------------------


async def test_set_valve(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """setvalveoff / setvalveon go into the queue with the spec's fields and act once the meter answers."""
    dev = open_meter(sim)
    meters = await client.async_get_meters()
    receipt = await client.async_set_valve(meters[dev.comm_no], False, "VALVE-1")
    queued = command(sim, "VALVE-1")
    assert (receipt.serial, receipt.meter_id, receipt.vendor_id) == ("VALVE-1", dev.comm_no, str(queued["ctrl_id"]))
    assert receipt.accepted_at is not None
    assert abs(receipt.accepted_at - datetime.now(TZ)) < timedelta(seconds=5)
    [body] = sent(sim, "Add")
    assert body == {
        "processor_name": "iotmeterv1",
        "ctrl_define_no": "VALVE-1",
        "target_comm_no": dev.comm_no,
        "target_devtype": 1,
        "ctrl_time": receipt.accepted_at.strftime(WIRE),
        "ctrl_timeout": (receipt.accepted_at + COMMAND_TIMEOUT).strftime(WIRE),
        "ctrl_type": "iotmeterv1.common.setvalveoff",
        "ctrl_data": "{}",
    }
    assert sent(sim, "GetList") == [{"ctrl_define_no": "VALVE-1", "target_comm_no": dev.comm_no}]
    assert (await client.async_get_meters())[dev.comm_no].valve is ValveState.OPEN
    await sim.settle()
    assert (await client.async_get_meters())[dev.comm_no].valve is ValveState.CLOSED
    await client.async_set_valve(meters[dev.comm_no], True, "VALVE-2")
    assert command(sim, "VALVE-2")["ctrl_type"] == "iotmeterv1.common.setvalveon"
    await sim.settle()
    assert (await client.async_get_meters())[dev.comm_no].valve is ValveState.OPEN


async def test_recharge_is_idempotent_by_reference(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """remotecharge carries the charge and the counters it is given; the same reference is found, not added again."""
    dev = open_meter(sim)
    meter = (await client.async_get_meters())[dev.comm_no]
    before, total = dev.remain_money, dev.total_buy_value
    assert meter.total_recharge == q3(total)
    serial = client.recharge_serial("ORDER-1")
    assert serial == "ORDER-1"
    numbers = following(dev, Decimal("50.5"))
    one = await client.async_recharge(meter, Decimal("50.5"), "ORDER-1", serial=serial, when=NOW, **numbers)
    queued = command(sim, "ORDER-1")
    assert one.vendor_id == str(queued["ctrl_id"])
    assert queued["ctrl_type"] == "iotmeterv1.prepay.remotecharge"
    assert json.loads(queued["ctrl_data"]) == {
        "charge_value": 50.5,
        "total_value": float(numbers["total"]),
        "charge_times": numbers["counter"],
    }
    # The queue already has this reference: the client says so (with the task's id); the ledger decides.
    with pytest.raises(DuplicateSerialError) as err:
        await client.async_recharge(meter, Decimal("50.5"), "ORDER-1", serial=serial, when=NOW, **numbers)
    assert err.value.vendor_id == one.vendor_id
    assert names(sim).count("Add") == 1
    assert sent(sim, "GetList").count({"ctrl_define_no": "ORDER-1", "target_comm_no": dev.comm_no}) == 2
    await sim.settle()
    remote_total = Decimal(str(dev.charges["remote_total_value"]))
    assert (dev.remain_money, remote_total) == (before + Decimal("50.5"), numbers["total"])
    assert dev.total_buy_value > total
    with pytest.raises(DuplicateSerialError):
        await client.async_recharge(meter, Decimal("50.5"), "ORDER-1", serial=serial, when=NOW, **numbers)
    await sim.settle()
    assert dev.remain_money == before + Decimal("50.5")
    # Without the meter's counters nothing is sent.
    with pytest.raises(InvalidRequestError):
        await client.async_recharge(meter, Decimal(1), "ORDER-2", serial="ORDER-2", when=NOW)
    assert names(sim).count("Add") == 1


async def test_recharge_after_lost_answer(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """Add went through but its answer was lost: the resend finds the task by ctrl_define_no and adds nothing."""
    dev = open_meter(sim)
    meter = (await client.async_get_meters())[dev.comm_no]
    before = dev.remain_money
    numbers = following(dev, Decimal(20))
    await client.async_validate()  # the login is not what times out
    client.request_timeout = LOST_ANSWER_TIMEOUT
    sim.fail_next("timeout", endpoint="Add")
    with pytest.raises(CloudTimeoutError) as err:
        await client.async_recharge(meter, Decimal(20), "LOST-1", serial="LOST-1", when=NOW, **numbers)
    assert err.value.outcome_unknown is True
    client.request_timeout = 5
    with pytest.raises(DuplicateSerialError) as duplicate:
        await client.async_recharge(meter, Decimal(20), "LOST-1", serial="LOST-1", when=NOW, **numbers)
    assert duplicate.value.vendor_id == str(command(sim, "LOST-1")["ctrl_id"])
    assert names(sim).count("Add") == 1
    await sim.settle()
    assert dev.remain_money == before + 20


async def test_back_to_back_recharges_keep_the_total(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """Two charges queued before the meter answered the first, numbered n+1 and n+2: both arrive."""
    dev = open_meter(sim)
    meter = (await client.async_get_meters())[dev.comm_no]
    total, before = dev.total_buy_value, dev.remain_money
    first = following(dev, Decimal(50))
    second = {"counter": first["counter"] + 1, "total": first["total"] + 30}
    await client.async_recharge(meter, Decimal(50), "PAIR-1", serial="PAIR-1", when=NOW, **first)
    await client.async_recharge(meter, Decimal(30), "PAIR-2", serial="PAIR-2", when=NOW, **second)
    await sim.settle()
    assert dev.remain_money == before + 80
    assert Decimal(str(dev.charges["remote_total_value"])) == second["total"]
    assert dev.total_buy_value > total
    assert dev.charges["remote_charge_times"] == second["counter"]


async def test_set_price_tiered(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """One AddMulti for several meters: ladder_price with 5 prices and 4 ladders, ids per meter in the result."""
    meters = await client.async_get_meters()
    targets = [meters[no] for no in meter_nos(sim)[:3]]
    schedule = PriceSchedule(
        prices=(Decimal("2.5"), Decimal(3), Decimal("3.5")),
        ladder_limits=(Decimal(300), Decimal("600.5")),
        code="HA-T",
        effective_date=date(2026, 1, 1),
    )
    result = await client.async_set_price(targets, schedule)
    [bodies] = sent(sim, "AddMulti")
    assert names(sim).count("AddMulti") == 1
    assert [b["target_comm_no"] for b in bodies] == [m.meter_id for m in targets]
    ladder = {
        "price1": 2.5,
        "ladder1": 300.0,
        "price2": 3.0,
        "ladder2": 600.5,
        "price3": 3.5,
        "ladder3": 0.0,
        "price4": 0.0,
        "ladder4": 0.0,
        "price5": 0.0,
        "cycle_start": "2026-01-01T00:00:00",
        "cycle_month": 12,
    }
    for body in bodies:
        assert body["ctrl_type"] == "iotmeterv1.prepay.setprice"
        assert body["ctrl_define_no"] == f"HA-T-{body['target_comm_no']}"
        assert json.loads(body["ctrl_data"]) == ladder
    assert (result["price_code"], result["meters"]) == ("HA-T", [m.meter_id for m in targets])
    assert result["commands"] == {m.meter_id: str(command(sim, f"HA-T-{m.meter_id}")["ctrl_id"]) for m in targets}
    assert len(set(result["commands"].values())) == 3
    await sim.settle()
    for target in targets:
        dev = sim.devices[target.meter_id]
        assert (dev.curr_price, dev.ladder["ladder2"], dev.ladder["cycle_month"]) == (Decimal("2.5"), 600.5, 12)
    assert (await client.async_get_meters())[targets[0].meter_id].price == Decimal("2.5")


async def test_set_price_flat_defaults(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """A flat price cycles one month from today; without a code one is made up from the time."""
    meter = MeterData(meter_id=meter_nos(sim)[0], kind="meter")
    result = await client.async_set_price([meter], PriceSchedule(prices=(Decimal("3.05"),)))
    assert re.fullmatch(r"HA\d{14}", result["price_code"])
    data = json.loads(sent(sim, "AddMulti")[0][0]["ctrl_data"])
    assert (data["price1"], data["price2"], data["ladder1"]) == (3.05, 0.0, 0.0)
    assert data["cycle_start"] == f"{datetime.now(TZ).date().isoformat()}T00:00:00"
    assert data["cycle_month"] == 1
    cycled = PriceSchedule(prices=(Decimal(2), Decimal(3)), ladder_limits=(Decimal(100),), cycle_months=6)
    await client.async_set_price([meter], cycled)
    assert json.loads(sent(sim, "AddMulti")[1][0]["ctrl_data"])["cycle_month"] == 6


async def test_set_price_tier_limit(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """Five tiers fill every field; a sixth is refused before anything is sent."""
    meter = MeterData(meter_id=meter_nos(sim)[0], kind="meter")
    five = PriceSchedule(
        prices=tuple(Decimal(n) for n in (1, 2, 3, 4, 5)), ladder_limits=tuple(Decimal(n * 100) for n in (1, 2, 3, 4))
    )
    with pytest.raises(InvalidRequestError) as err:
        await client.async_set_price([meter], replace(five, prices=(*five.prices, Decimal(6))))
    assert (err.value.reason, err.value.request_sent) == ("invalid_price_schedule", False)
    assert sim.requests == []
    await client.async_set_price([meter], five)
    data = json.loads(sent(sim, "AddMulti")[0][0]["ctrl_data"])
    assert [data[f"price{n}"] for n in range(1, 6)] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [data[f"ladder{n}"] for n in range(1, 5)] == [100.0, 200.0, 300.0, 400.0]


async def test_set_price_refused_item_is_not_reported_queued(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """An item the platform refuses does not show up as a queued command."""
    meters = await client.async_get_meters()
    good, rtu = meters[meter_nos(sim)[0]], meters[rtu_nos(sim)[0]]
    result = await client.async_set_price([good, rtu], PriceSchedule(prices=(Decimal(3),), code="MIX"))
    assert result["commands"][good.meter_id] == str(command(sim, f"MIX-{good.meter_id}")["ctrl_id"])
    assert rtu.meter_id not in result["commands"]


async def test_other_commands(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """setremain, setcumulant (work_sum defaults to std_sum), getprice, getchargestate and releaseforce."""
    dev = open_meter(sim)
    dev.flags["force_valve_on"] = True
    meter = (await client.async_get_meters())[dev.comm_no]
    cases: list[tuple[CommandKind, dict[str, Any], str, dict[str, Any]]] = [
        (CommandKind.SET_REMAINING, {"amount": Decimal("88.5")}, "prepay.setremain", {"remain_value": 88.5}),
        (
            CommandKind.SET_CUMULATIVE,
            {"std_sum": Decimal("100.5")},
            "common.setcumulant",
            {"std_sum": 100.5, "work_sum": 100.5},
        ),
        (CommandKind.READ_PRICE, {}, "prepay.getprice", {}),
        (CommandKind.CHARGE_STATE, {}, "prepay.getchargestate", {}),
        (CommandKind.RELEASE_FORCE, {}, "common.releaseforce", {}),
    ]
    receipts = {}
    for kind, params, ctrl_type, data in cases:
        receipts[kind] = await client.async_command(meter, kind, params, serial=f"CMD-{kind.value}")
        queued = command(sim, f"CMD-{kind.value}")
        assert queued["ctrl_type"] == f"iotmeterv1.{ctrl_type}"
        assert json.loads(queued["ctrl_data"]) == data
    await client.async_command(
        meter, CommandKind.SET_CUMULATIVE, {"std_sum": Decimal(7), "work_sum": Decimal("7.25")}, serial="CMD-WS"
    )
    assert json.loads(command(sim, "CMD-WS")["ctrl_data"]) == {"std_sum": 7.0, "work_sum": 7.25}
    ladder, charges = dict(dev.ladder), dict(dev.charges)
    await sim.settle()
    results = {
        kind: await state_of(client, f"CMD-{kind.value}", kind, receipt.vendor_id) for kind, receipt in receipts.items()
    }
    assert all(result.success is True for result in results.values())
    assert results[CommandKind.SET_REMAINING].data == {"remain_value": 88.5}
    assert results[CommandKind.READ_PRICE].data == ladder
    assert results[CommandKind.CHARGE_STATE].data == charges
    assert results[CommandKind.RELEASE_FORCE].data is None
    assert results[CommandKind.READ_PRICE].kind == "read_price"
    got = (await client.async_get_meters())[dev.comm_no]
    assert got.flags is not None
    assert (got.balance, got.reading, got.work_volume) == (Decimal("88.5"), Decimal(7), Decimal("7.25"))
    assert got.flags["force_valve_on"] is False


async def test_open_account(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """open_account_param: the opening charge and the ladder, ladders as whole numbers; fractions refused."""
    dev = sim.devices[meter_nos(sim)[1]]
    dev.flags["open_state"] = False
    meter = MeterData(meter_id=dev.comm_no, kind="meter")
    price = PriceSchedule(
        prices=(Decimal("2.8"), Decimal("3.2")), ladder_limits=(Decimal(300),), effective_date=date(2026, 1, 1)
    )
    with pytest.raises(InvalidRequestError) as err:
        await client.async_command(
            meter,
            CommandKind.OPEN_ACCOUNT,
            {"amount": Decimal(100), "price": replace(price, ladder_limits=(Decimal("300.5"),))},
            serial="OPEN-0",
        )
    assert err.value.reason == "ladder_not_integer"
    assert sim.requests == []
    receipt = await client.async_command(
        meter, CommandKind.OPEN_ACCOUNT, {"amount": Decimal(100), "price": price}, serial="OPEN-1"
    )
    queued = command(sim, "OPEN-1")
    assert queued["ctrl_type"] == "iotmeterv1.prepay.openaccount"
    data = json.loads(queued["ctrl_data"])
    assert data == {
        "charge_value": 100.0,
        "total_value": 100.0,
        "price1": 2.8,
        "ladder1": 300,
        "price2": 3.2,
        "ladder2": 0,
        "price3": 0.0,
        "ladder3": 0,
        "price4": 0.0,
        "ladder4": 0,
        "price5": 0.0,
        "cycle_start_time": "2026-01-01T00:00:00",
        "cycle_month": 12,
    }
    assert [type(data[f"ladder{n}"]) for n in range(1, 5)] == [int] * 4
    await sim.settle()
    result = await state_of(client, "OPEN-1", CommandKind.OPEN_ACCOUNT, receipt.vendor_id)
    assert (result.success, result.kind) == (True, "open_account")
    assert result.data == {"success": 0, "reason": 0, "reason_msg": "", "remain": 100.0}
    assert (dev.remain_money, dev.total_buy_value, dev.flags["open_state"]) == (Decimal(100), Decimal(100), True)
    await client.async_command(
        meter, CommandKind.OPEN_ACCOUNT, {"amount": Decimal(10), "total": Decimal(250), "price": price}, serial="OPEN-2"
    )
    assert json.loads(command(sim, "OPEN-2")["ctrl_data"])["total_value"] == 250.0


async def test_open_account_refused_by_meter(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """A delivered openaccount the meter refuses (success 1) is a failed command."""
    meter = MeterData(meter_id=meter_nos(sim)[0], kind="meter")
    price = PriceSchedule(prices=(Decimal(3),))
    receipt = await client.async_command(
        meter, CommandKind.OPEN_ACCOUNT, {"amount": Decimal(5), "price": price}, serial="OPEN-X"
    )
    await sim.settle()
    assert receipt.vendor_id is not None
    [item] = sim.report_body(int(receipt.vendor_id))
    item["return_data"] = json.dumps({"success": 1, "reason": 2, "reason_msg": "表计已开户", "remain": 0})
    pushed = client.parse_push(REPORT, push_headers(sim), json.dumps([item]).encode(), NOW)
    [result] = pushed.commands
    assert result.success is False


@pytest.mark.parametrize("kind", [CommandKind.BALANCE_CREDIT, CommandKind.BALANCE_DEDUCT])
async def test_unsupported_command(sim: IotMeterSimulator, client: IotMeterClient, kind: CommandKind) -> None:
    """Kinds the platform has no ctrl_type for are refused without a request."""
    with pytest.raises(UnsupportedError):
        await client.async_command(MeterData(meter_id=meter_nos(sim)[0]), kind, {"amount": Decimal(1)}, serial="U-1")
    assert sim.requests == []


async def test_rtu_takes_no_commands(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """Valve, recharge and the other commands are refused for an RTU before anything is queued."""
    rtu = (await client.async_get_meters())[rtu_nos(sim)[0]]
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: client.async_set_valve(rtu, False, "R-1"),
        lambda: client.async_recharge(rtu, Decimal(5), "R-2", serial="R-2", when=NOW, counter=1, total=Decimal(5)),
        lambda: client.async_command(rtu, CommandKind.READ_PRICE, {}, serial="R-3"),
        lambda: client.async_command(rtu, CommandKind.SET_REMAINING, {"amount": Decimal(1)}, serial="R-4"),
    ]
    for call in calls:
        with pytest.raises(UnsupportedError):
            await call()
    assert names(sim) == ["GetRealList2"]
    assert sim.commands == {}


async def test_command_state_machine(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """Waiting, sent and answered are under way (None); success is True with the state in the message."""
    dev = open_meter(sim)
    receipt = await client.async_set_valve(MeterData(meter_id=dev.comm_no, kind="meter"), False, "SM-1")
    for state in (0, 1, 2):
        result = await state_of(client, "SM-1", CommandKind.VALVE_CLOSE, receipt.vendor_id)
        assert (result.success, result.message, result.cancelled) == (None, f"{state} {STATE_MSG[state]}", False)
        assert sim.commands[int(receipt.vendor_id or 0)]["ctrl_state"] == state
        await sim.step()
    result = await state_of(client, "SM-1", CommandKind.VALVE_CLOSE, receipt.vendor_id)
    assert result == CommandResult(
        meter_id=dev.comm_no,
        serial="SM-1",
        success=True,
        kind="valve_close",
        vendor_id=receipt.vendor_id,
        message="3 任务成功",
        data=None,
        cancelled=False,
    )
    assert dev.flags["valve_open"] is False
    assert queries(sim, "GetModel")[-1] == {"ctrl_id": receipt.vendor_id}


async def test_command_states_skip_unsent(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """A reference without a platform id is not asked about."""
    assert await client.async_command_states([ref("NONE-1", CommandKind.VALVE_OPEN, None)]) == []
    assert sim.requests == []


async def test_recharge_results(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """0xaa is a charge done; 0xbb, though the task succeeded, is the meter's refusal and no money moves."""
    first, second = (sim.devices[no] for no in meter_nos(sim)[:2])
    sim.refuse_charges = {second.comm_no}
    before = (first.remain_money, second.remain_money)
    ok = await client.async_recharge(
        MeterData(meter_id=first.comm_no), Decimal(10), "C-OK", serial="C-OK", when=NOW, **following(first, Decimal(10))
    )
    no = await client.async_recharge(
        MeterData(meter_id=second.comm_no),
        Decimal(10),
        "C-NO",
        serial="C-NO",
        when=NOW,
        **following(second, Decimal(10)),
    )
    await sim.settle()
    done, refused = await client.async_command_states(
        [ref("C-OK", CommandKind.RECHARGE, ok.vendor_id), ref("C-NO", CommandKind.RECHARGE, no.vendor_id)]
    )
    assert (done.success, done.kind, done.serial) == (True, "recharge", "C-OK")
    assert done.data is not None
    assert (done.data["success"], done.data["remain"]) == (0xAA, float(q3(before[0] + 10)))
    assert (refused.success, refused.kind, refused.serial, refused.cancelled) == (False, "recharge", "C-NO", False)
    assert refused.message is not None
    assert "0xbb" in refused.message
    assert "reason 3" in refused.message
    assert refused.data is not None
    assert refused.data["success"] == 0xBB
    assert (first.remain_money, second.remain_money) == (before[0] + 10, before[1])


@pytest.mark.parametrize(
    ("setting", "state", "feedback"),
    [
        ("timeout_commands", 6, "等待应答超时"),
        ("fail_commands", 4, "表计执行失败"),
        ("send_fail_commands", 7, "发送数据失败"),
        ("cancel", 5, "任务被取消"),
        ("gone", 99, "设备不存在"),
    ],
)
async def test_command_failures(
    sim: IotMeterSimulator, client: IotMeterClient, setting: str, state: int, feedback: str
) -> None:
    """Timed out, failed, not sent, cancelled and other errors are final failures; only the meter aimed at."""
    target, bystander = meter_nos(sim)[:2]
    if setting not in ("cancel", "gone"):
        setattr(sim, setting, {target})
    hit = await client.async_command(MeterData(meter_id=target), CommandKind.RELEASE_FORCE, {}, serial="F-1")
    spared = await client.async_command(MeterData(meter_id=bystander), CommandKind.RELEASE_FORCE, {}, serial="F-2")
    if setting == "cancel":
        await client.async_cancel_command(
            MeterData(meter_id=target), ref("F-1", CommandKind.RELEASE_FORCE, hit.vendor_id)
        )
    elif setting == "gone":
        del sim.devices[target]
    await sim.settle()
    failed, fine = await client.async_command_states(
        [ref("F-1", CommandKind.RELEASE_FORCE, hit.vendor_id), ref("F-2", CommandKind.RELEASE_FORCE, spared.vendor_id)]
    )
    assert sim.commands[int(hit.vendor_id or 0)]["ctrl_state"] == state
    assert (failed.success, failed.message, failed.cancelled) == (False, f"{state} {feedback}", state == 5)
    assert (failed.meter_id, failed.serial, failed.kind) == (target, "F-1", "release_force")
    assert (fine.success, fine.cancelled) == (True, False)


async def test_command_times_out_after_a_day(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """Without a timeout of its own a command gets 24 hours (the ledger's expiry): just before it is still waiting,
    just after it is state 6."""
    receipt = await client.async_set_valve(MeterData(meter_id=open_meter(sim).comm_no), False, "T-1")
    sim.advance(COMMAND_TIMEOUT.total_seconds() - 120)
    assert (await state_of(client, "T-1", CommandKind.VALVE_CLOSE, receipt.vendor_id)).success is None
    sim.advance(180)
    result = await state_of(client, "T-1", CommandKind.VALVE_CLOSE, receipt.vendor_id)
    assert (result.success, result.message) == (False, "6 等待应答超时")


async def test_cancel_and_retry(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """Cancel while waiting; cancel again is refused; retry puts it back; retrying a success is refused."""
    dev = open_meter(sim)
    meter = MeterData(meter_id=dev.comm_no, kind="meter")
    receipt = await client.async_set_valve(meter, False, "CR-1")
    cancel = ref("CR-1", CommandKind.VALVE_CLOSE, receipt.vendor_id)
    await client.async_cancel_command(meter, cancel)
    assert queries(sim, "Cancel") == [{"ctrl_id": receipt.vendor_id}]
    result = await state_of(client, "CR-1", CommandKind.VALVE_CLOSE, receipt.vendor_id)
    assert (result.success, result.cancelled) == (False, True)
    with pytest.raises(CommandError, match="任务状态不允许取消") as err:
        await client.async_cancel_command(meter, cancel)
    assert err.value.code == "failed"
    await sim.settle()
    assert dev.flags["valve_open"] is True
    await client.async_retry_command(meter, cancel)
    assert queries(sim, "Retry") == [{"ctrl_id": receipt.vendor_id}]
    assert (await state_of(client, "CR-1", CommandKind.VALVE_CLOSE, receipt.vendor_id)).success is None
    await sim.settle()
    assert (await state_of(client, "CR-1", CommandKind.VALVE_CLOSE, receipt.vendor_id)).success is True
    assert dev.flags["valve_open"] is False
    with pytest.raises(CommandError, match="任务状态不允许重试"):
        await client.async_retry_command(meter, cancel)


async def test_cancel_or_retry_without_vendor_id(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """Without the platform's ctrl_id there is nothing to name: no request is sent."""
    meter = MeterData(meter_id=meter_nos(sim)[0])
    for action in (client.async_cancel_command, client.async_retry_command):
        with pytest.raises(CommandError) as err:
            await action(meter, ref("NO-ID", CommandKind.VALVE_CLOSE, None))
        assert (err.value.reason, str(err.value)) == ("no_pending_command", "NO-ID")
    assert sim.requests == []


async def test_command_states_survive_a_deleted_command(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """A command deleted on the platform does not hide the state of the others."""
    meter = MeterData(meter_id=open_meter(sim).comm_no, kind="meter")
    gone = await client.async_set_valve(meter, False, "DEL-1")
    kept = await client.async_set_valve(meter, True, "DEL-2")
    del sim.commands[int(gone.vendor_id or 0)]
    await sim.settle()
    results = await client.async_command_states(
        [ref("DEL-1", CommandKind.VALVE_CLOSE, gone.vendor_id), ref("DEL-2", CommandKind.VALVE_OPEN, kept.vendor_id)]
    )
    assert [r.success for r in results if r.serial == "DEL-2"] == [True]


async def test_list_commands(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """The device's queue, newest first, each with its reference, kind, state and parsed result."""
    one, two = meter_nos(sim)[:2]
    meter = MeterData(meter_id=one, kind="meter")
    await client.async_command(meter, CommandKind.READ_PRICE, {}, serial="L-1")
    await client.async_command(MeterData(meter_id=two), CommandKind.READ_PRICE, {}, serial="L-OTHER")
    await sim.settle()
    await client.async_set_valve(meter, False, "L-2")
    await client.async_command(meter, CommandKind.SET_REMAINING, {"amount": Decimal(9)}, serial="L-3")
    await sim.step()
    listed = await client.async_list_commands(meter)
    assert [item["reference"] for item in listed] == ["L-3", "L-2", "L-1"]
    ids = [int(item["ctrl_id"]) for item in listed]
    assert ids == sorted(ids, reverse=True)
    for item in listed:
        stored = command(sim, item["reference"])
        assert item == {
            "ctrl_id": str(stored["ctrl_id"]),
            "reference": stored["ctrl_define_no"],
            "kind": {"L-1": "read_price", "L-2": "valve_close", "L-3": "set_remaining"}[item["reference"]],
            "state": stored["ctrl_state"],
            "state_message": stored["ctrl_state_msg"],
            "time": stored["ctrl_time"],
            "result": json.loads(stored["return_data"]) or None,
        }
    assert listed[2]["result"] == sim.devices[one].ladder
    assert [item["state"] for item in listed] == [1, 1, 3]
    assert sent(sim, "GetList")[-1] == {"target_comm_no": one}


# ---- history and alarms ----------------------------------------------------------------------------


def month_start_in_history(today: date) -> date:
    """A first of the month 5 to 50 days back: inside the simulator's 60 days, with days on either side."""
    return next(day for back in range(5, 51) if (day := today - timedelta(days=back)).day == 1)


def frozen(record: dict[str, Any]) -> tuple[datetime, Decimal]:
    """A frozen record as (time, standard volume)."""
    return wall(record["acquisition_time"]), Decimal(str(record["std_sum"]))


async def test_history_across_a_month(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """One query per calendar month; only frozen points within [start, end] (UTC bounds work too)."""
    comm_no = meter_nos(sim)[0]
    boundary = month_start_in_history(datetime.now(TZ).date())
    start = midnight(boundary - timedelta(days=3)) + timedelta(seconds=30)
    end = midnight(boundary + timedelta(days=2))
    noon = dict(sim.history[comm_no][-5])
    sim.history[comm_no].append(
        noon
        | {
            "data_type": 0,
            "acquisition_time": (midnight(boundary - timedelta(days=1)) + timedelta(hours=12)).strftime(WIRE),
            "std_sum": 99999.0,
        }
    )
    points = await client.async_history(MeterData(meter_id=comm_no), start.astimezone(UTC), end.astimezone(UTC))
    assert [p.time for p in points] == [midnight(boundary + timedelta(days=n)) for n in (-2, -1, 0, 1, 2)]
    records = [r for r in sim.history[comm_no] if r["data_type"] == 1]
    assert [(p.time, p.value) for p in points] == [
        frozen(r) for r in records if start <= wall(r["acquisition_time"]) <= end
    ]
    assert all(p.value != Decimal(99999) for p in points)
    before = boundary - timedelta(days=3)
    last_day = (boundary - timedelta(days=1)).day
    assert sent(sim, "GetHistoryList2") == [
        {
            "meter_comm_no": comm_no,
            "data_type": 1,
            "year": before.year,
            "month": before.month,
            "start_day": before.day,
            "start_hour": 0,
            "start_minute": 0,
            "end_day": last_day,
            "end_hour": 23,
            "end_minute": 59,
        },
        {
            "meter_comm_no": comm_no,
            "data_type": 1,
            "year": boundary.year,
            "month": boundary.month,
            "start_day": 1,
            "start_hour": 0,
            "start_minute": 0,
            "end_day": (boundary + timedelta(days=2)).day,
            "end_hour": 0,
            "end_minute": 0,
        },
    ]
    assert client.request_count == 2


async def test_history_sorted_and_deduplicated(sim: IotMeterSimulator, client: IotMeterClient, wire: Wire) -> None:
    """Rows out of order and repeated still give one point per time, oldest first."""

    def shuffled(answer: dict[str, Any]) -> dict[str, Any]:
        answer["Data"] = list(reversed(answer["Data"])) + answer["Data"][:2]
        return answer

    wire.rewrites["GetHistoryList2"] = shuffled
    comm_no = meter_nos(sim)[1]
    today = datetime.now(TZ).date()
    start, end = midnight(today - timedelta(days=40)), midnight(today - timedelta(days=30))
    points = await client.async_history(MeterData(meter_id=comm_no), start, end)
    records = [frozen(r) for r in sim.history[comm_no] if start <= wall(r["acquisition_time"]) <= end]
    assert len(records) == 11
    assert [(p.time, p.value) for p in points] == records


async def test_history_empty_window(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """Before the simulator's history there is nothing."""
    start = datetime(2020, 1, 1, tzinfo=TZ)
    assert await client.async_history(MeterData(meter_id=meter_nos(sim)[0]), start, start + timedelta(days=3)) == []


def test_window_bodies_per_month() -> None:
    """A span over three months (a leap February) is three bodies, each clipped to the span."""
    start, end = datetime(2028, 1, 30, 7, 45, 10, tzinfo=TZ), datetime(2028, 3, 2, 6, 5, 59, tzinfo=TZ)
    assert IotMeterClient._window(start, end) == [
        {"year": 2028, "month": 1, "start_day": 30, "start_hour": 7, "start_minute": 45}
        | {"end_day": 31, "end_hour": 23, "end_minute": 59},
        {"year": 2028, "month": 2, "start_day": 1, "start_hour": 0, "start_minute": 0}
        | {"end_day": 29, "end_hour": 23, "end_minute": 59},
        {"year": 2028, "month": 3, "start_day": 1, "start_hour": 0, "start_minute": 0}
        | {"end_day": 2, "end_hour": 6, "end_minute": 5},
    ]
    december = datetime(2027, 12, 31, 23, 0, tzinfo=TZ)
    assert [(b["year"], b["month"]) for b in IotMeterClient._window(december, december + timedelta(hours=2))] == [
        (2027, 12),
        (2028, 1),
    ]


async def test_alarms_and_events_since(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """Alarms and events since a time, oldest first, with type, priority, code, message and a stable key."""
    meter, rtu = meter_nos(sim)[0], rtu_nos(sim)[0]
    since = datetime.now(TZ).replace(second=30, microsecond=0) - timedelta(hours=2)
    # Received before `since` (seen by an earlier catch-up): not again, even though it happened after it.
    seen = sim.add_alarm(meter, 2, when=since + timedelta(minutes=1))
    seen["receive_time"] = (since - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    sim.add_alarm(meter, 1, when=since - timedelta(hours=5))  # uploaded 5 hours late: new to us
    sim.add_alarm(meter, 4, when=since + timedelta(minutes=10))
    sim.add_event(meter, 101, when=since + timedelta(minutes=5))
    sim.add_alarm(rtu, 6, "门开了", when=since + timedelta(minutes=20))
    alarms = await client.async_alarms_since(since.astimezone(UTC))
    assert [(a.meter_id, a.type, a.priority, a.code, a.message, a.time) for a in alarms] == [
        (meter, AlarmType.MAGNETIC_INTERFERENCE, AlarmPriority.HIGH, "1", ALARMS[1], since - timedelta(hours=5)),
        (meter, AlarmType.VALVE_OPENED, AlarmPriority.LOW, "101", EVENTS[101], since + timedelta(minutes=5)),
        (meter, AlarmType.GAS_LEAK, AlarmPriority.HIGH, "4", ALARMS[4], since + timedelta(minutes=10)),
        (rtu, AlarmType.DOOR_OPEN, AlarmPriority.HIGH, "6", "门开了", since + timedelta(minutes=20)),
    ]
    assert len({a.key for a in alarms}) == 4
    # Within the hour after a wide scan, a poll reads only its own window: the late one is not asked again.
    assert await client.async_alarms_since(since) == alarms[1:]
    start = since - LATE_UPLOADS
    windows = IotMeterClient._window(start, datetime.now(TZ))
    narrow = IotMeterClient._window(since, datetime.now(TZ))
    starts = ("year", "month", "start_day", "start_hour", "start_minute")
    assert {key: sent(sim, "DeviceAlarm/GetList2")[0][key] for key in starts} == {
        "year": start.year,
        "month": start.month,
        "start_day": start.day,
        "start_hour": start.hour,
        "start_minute": start.minute,
    }
    assert names(sim).count("DeviceEvent/GetList2") == len(windows) + len(narrow)
    # The same alarm pushed is the same Alarm, key included, so it counts once.
    entry = next(e for e in sim.alarms if e["alarm_code"] == 4)
    pushed = client.parse_push(ALARM, push_headers(sim), push_body(entry, "alarm_id"), NOW).alarm
    assert pushed == alarms[2]


@pytest.mark.parametrize("casing", ["as_simulated", "upper"])
async def test_alarms_paged(serve: Serve, session: aiohttp.ClientSession, casing: str) -> None:
    """150 alarms in the window come in two pages, whichever casing the count has."""
    sim = make_sim(CASINGS[casing])
    client = make_client(sim, await serve(sim), session, control=False)
    since = datetime.now(TZ).replace(second=0, microsecond=0) - timedelta(minutes=30)
    meter = meter_nos(sim)[0]
    for n in range(150):
        sim.add_alarm(meter, 4, f"泄漏 {n}", when=since + timedelta(seconds=n))
    alarms = await client.async_alarms_since(since)
    assert [a.message for a in alarms] == [f"泄漏 {n}" for n in range(150)]
    windows = IotMeterClient._window(since - LATE_UPLOADS, datetime.now(TZ))
    pages = [q["startrow"] for q in queries(sim, "DeviceAlarm/GetList2")]
    assert (pages.count("100"), len(pages)) == (1, len(windows) + 1)
    assert client.request_count == 2 * len(windows) + 1


async def test_alarms_since_the_future(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """Nothing happened after now."""
    sim.add_alarm(meter_nos(sim)[0], 4)
    assert await client.async_alarms_since(datetime.now(TZ) + timedelta(days=40)) == []


# ---- pushes --------------------------------------------------------------------------------------


async def test_parse_reading_push(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """MeterData/Add: the device's reading, a stable data_guid for an identical body; frozen data is no reading."""
    sim.tick(60)
    for comm_no in (meter_nos(sim)[0], rtu_nos(sim)[0]):
        body = json.dumps(sim.reading_body(comm_no), ensure_ascii=False).encode()
        result = client.parse_push("/" + READING, push_headers(sim), body, NOW)
        assert result.reading == expected(sim.devices[comm_no])
        assert (envelope(result)["State"], envelope(result)["Message"]) == ("success", "")
        assert len(base64.b64decode(envelope(result)["Data"])) == 16
        again = client.parse_push(READING + "/", push_headers(sim), body, NOW)
        assert (again.serial, again.response) == (result.serial, result.response)
    comm_no = meter_nos(sim)[0]
    live = client.parse_push(READING, push_headers(sim), push_body(sim.reading_body(comm_no)), NOW)
    sim.advance(60)
    sim.tick(15)
    later = client.parse_push(READING, push_headers(sim), push_body(sim.reading_body(comm_no)), NOW)
    assert later.serial != live.serial
    assert envelope(later)["Data"] != envelope(live)["Data"]
    record = sim.history[comm_no][-2]
    frozen_push = client.parse_push(READING, push_headers(sim), push_body(record, "data_guid"), NOW)
    assert frozen_push.reading is None
    assert envelope(frozen_push)["State"] == "success"
    assert frozen_push.serial not in (live.serial, later.serial)


@pytest.mark.parametrize(
    ("text", "event", "kind"),
    [
        ("磁攻击", False, AlarmType.MAGNETIC_INTERFERENCE),
        ("阀门故障", False, AlarmType.VALVE_FAULT),
        ("电池低电", False, AlarmType.BATTERY_FAULT),
        ("燃气泄漏", False, AlarmType.GAS_LEAK),
        ("拆表", False, AlarmType.TAMPERING),
        ("RTU门禁打开", False, AlarmType.DOOR_OPEN),
        ("RTU市电中断", False, AlarmType.MAINS_LOST),
        ("电池断电", False, AlarmType.BATTERY_CUT),
        ("通讯异常", False, AlarmType.COMMUNICATION_FAULT),
        ("某种新报警", False, AlarmType.DEVICE_ALARM),
        ("开阀", True, AlarmType.VALVE_OPENED),
        ("关阀", True, AlarmType.VALVE_CLOSED),
        ("远程充值", True, AlarmType.RECHARGED),
        ("价格调整", True, AlarmType.PRICE_CHANGED),
        ("换表(累计量重置)", True, AlarmType.METER_REPLACED),
        ("某种新事件", True, AlarmType.DEVICE_EVENT),
    ],
)
def test_alarm_and_event_kinds_from_words(text: str, event: bool, kind: AlarmType) -> None:
    """The spec has no code table: the vendor's words decide the kind; words we do not know keep the generic kind."""
    prefix = "event" if event else "alarm"
    row = {
        "device_comm_no": "86000000000001",
        f"{prefix}_time": "2026-03-01 08:30:00",
        f"{prefix}_code": "9",
        f"{prefix}_content": text,
    }
    alarm = alarm_from_record(row, TZ, event=event)
    assert alarm is not None
    assert (alarm.type, alarm.event, alarm.message) == (kind, event, text)


@pytest.mark.parametrize(
    ("text", "expected_conditions"),
    [
        ("正常", ("normal",)),
        ("", ("normal",)),
        ("低电,燃气泄漏", ("gas_leak", "battery_fault")),
        ("阀门故障，磁攻击、新状态", ("magnetic_interference", "valve_fault", "other")),
    ],
)
def test_conditions_from_state_words(text: str, expected_conditions: tuple[str, ...]) -> None:
    """A state text's conditions, most severe first; an unknown word is "other", nothing named is "normal"."""
    assert conditions_of(text) == expected_conditions


@pytest.mark.parametrize(("path", "kind"), [(ALARM, "alarm"), (EVENT, "event")])
async def test_parse_alarm_and_event_push(sim: IotMeterSimulator, client: IotMeterClient, path: str, kind: str) -> None:
    """DeviceAlarm/Add and DeviceEvent/Add: alarm or event, the code and text, one stable id per body."""
    meter = meter_nos(sim)[0]
    when = datetime(2026, 3, 1, 8, 30, tzinfo=TZ)
    log = sim.add_alarm if kind == "alarm" else sim.add_event
    code = 4 if kind == "alarm" else 102
    entry = log(meter, code, when=when)
    body = push_body(entry, f"{kind}_id")
    result = client.parse_push(path, push_headers(sim), body, NOW)
    assert result.alarm == Alarm(
        meter_id=meter,
        type=AlarmType.GAS_LEAK if kind == "alarm" else AlarmType.VALVE_CLOSED,
        priority=AlarmPriority.HIGH if kind == "alarm" else AlarmPriority.LOW,
        message=(ALARMS if kind == "alarm" else EVENTS)[code],
        code=str(code),
        time=when,
        key=result.serial,
        event=kind == "event",
    )
    assert result.serial
    assert isinstance(envelope(result)["Data"], int)
    assert envelope(result)["State"] == "success"
    again = client.parse_push(path, push_headers(sim), body, NOW)
    assert (again.serial, again.response) == (result.serial, result.response)
    later = push_body(log(meter, code, when=when + timedelta(minutes=1)), f"{kind}_id")
    other = client.parse_push(path, push_headers(sim), later, NOW)
    assert other.serial != result.serial
    assert envelope(other)["Data"] != envelope(result)["Data"]
    # An alarm and an event with the same code and time are different things.
    twin_path, twin_kind = (EVENT, "event") if kind == "alarm" else (ALARM, "alarm")
    twin = client.parse_push(twin_path, push_headers(sim), renamed(body, kind, twin_kind), NOW)
    assert twin.alarm is not None
    assert (twin.alarm.code, twin.alarm.time, twin.alarm.meter_id) == (str(code), when, meter)
    assert twin.alarm.type is not result.alarm.type
    assert twin.serial != result.serial


async def test_parse_report_push(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """CtrlData/Report: an array of results, each answered in the Data list; a single object is taken too."""
    one, two = (sim.devices[no] for no in meter_nos(sim)[:2])
    sim.refuse_charges = {two.comm_no}
    valve = await client.async_set_valve(MeterData(meter_id=one.comm_no), False, "REP-1")
    charge = await client.async_recharge(
        MeterData(meter_id=two.comm_no), Decimal(5), "REP-2", serial="REP-2", when=NOW, **following(two, Decimal(5))
    )
    await sim.settle()
    ids = [int(valve.vendor_id or 0), int(charge.vendor_id or 0)]
    body = sim.report_body(ids[0]) + sim.report_body(ids[1])
    result = client.parse_push("/" + REPORT, push_headers(sim), json.dumps(body, ensure_ascii=False).encode(), NOW)
    done, refused = result.commands
    assert (done.vendor_id, done.meter_id, done.success, done.kind, done.message) == (
        valve.vendor_id,
        one.comm_no,
        True,
        "valve_close",
        "3 任务成功",
    )
    assert (refused.vendor_id, refused.meter_id, refused.success, refused.kind) == (
        charge.vendor_id,
        two.comm_no,
        False,
        "recharge",
    )
    assert result.response == {
        "Data": [
            {"ctrl_id": ids[0], "meter_comm_no": one.comm_no, "result": True, "message": ""},
            {"ctrl_id": ids[1], "meter_comm_no": two.comm_no, "result": True, "message": ""},
        ],
        "State": "success",
        "Message": "",
    }
    again = client.parse_push(REPORT, push_headers(sim), json.dumps(body, ensure_ascii=False).encode(), NOW)
    assert again.serial == result.serial
    single = client.parse_push(REPORT, push_headers(sim), json.dumps(body[0]).encode(), NOW)
    assert [r.vendor_id for r in single.commands] == [valve.vendor_id]
    assert single.serial != result.serial


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("unknown_path", 404, "unknown_path"),
        ("wrong_key", 401, "bad_key"),
        ("wrong_company", 401, "bad_key"),
        ("no_headers", 401, "bad_key"),
        ("not_json", 400, "malformed"),
        ("not_an_object", 400, "malformed"),
        ("no_meter_comm_no", 400, "malformed"),
        ("no_device_comm_no", 400, "malformed"),
        ("event_without_device", 400, "malformed"),
        ("empty_report", 400, "malformed"),
        ("report_without_state", 400, "malformed"),
    ],
)
async def test_push_rejections(
    sim: IotMeterSimulator, client: IotMeterClient, case: str, status: int, reason: str
) -> None:
    """Foreign, broken or misaddressed pushes are refused with the spec's failure envelope."""
    meter = meter_nos(sim)[0]
    headers = push_headers(sim)
    path, body = READING, push_body(sim.reading_body(meter))
    alarm = {k: v for k, v in sim.add_alarm(meter, 4).items() if k not in ("alarm_id", "company_no")}
    if case == "unknown_path":
        path = "api/Data/MeterData/Delete"
    elif case == "wrong_key":
        headers = headers | {"data_api_key": sim.data_api_key.upper()}
    elif case == "wrong_company":
        headers = headers | {"company_no": "1002"}
    elif case == "no_headers":
        headers = {}
    elif case == "not_json":
        body = b'{"meter_comm_no": '
    elif case == "not_an_object":
        body = json.dumps([sim.reading_body(meter)]).encode()
    elif case == "no_meter_comm_no":
        body = json.dumps({k: v for k, v in sim.reading_body(meter).items() if k != "meter_comm_no"}).encode()
    elif case == "no_device_comm_no":
        path, body = ALARM, json.dumps(alarm | {"device_comm_no": ""}).encode()
    elif case == "event_without_device":
        path, body = EVENT, json.dumps({"event_code": 101, "event_time": "2026-03-01T08:00:00"}).encode()
    elif case == "empty_report":
        path, body = REPORT, b"[]"
    elif case == "report_without_state":
        path, body = REPORT, json.dumps([{"ctrl_id": 1, "meter_comm_no": meter}]).encode()
    with pytest.raises(PushError) as err:
        client.parse_push(path, headers, body, NOW)
    assert (err.value.status, err.value.reason) == (status, reason)
    assert isinstance(err.value.response, dict)
    assert (err.value.response["Data"], err.value.response["State"]) == (None, "failed")
    assert err.value.response["Message"] == str(err.value)


async def test_push_with_non_ascii_key_is_refused(sim: IotMeterSimulator, client: IotMeterClient) -> None:
    """A forged push whose headers carry non-ASCII text is a 401, not a crash."""
    headers = push_headers(sim) | {"data_api_key": "密钥"}
    with pytest.raises(PushError) as err:
        client.parse_push(READING, headers, push_body(sim.reading_body(meter_nos(sim)[0])), NOW)
    assert err.value.status == 401


async def test_pushes_over_http(sim: IotMeterSimulator, client: IotMeterClient, aiohttp_server: Any) -> None:
    """The simulator's own pushes reach a receiver built on parse_push; re-sends get the same answer."""
    accepted: list[PushResult] = []

    async def receive(request: web.Request) -> web.Response:
        try:
            result = client.parse_push(request.path, request.headers, await request.read(), datetime.now(TZ))
        except PushError as err:
            return web.json_response(err.response, status=err.status)
        accepted.append(result)
        return web.json_response(result.response)

    app = web.Application()
    app.router.add_post("/{path:.*}", receive)
    receiver: TestServer = await aiohttp_server(app, host="127.0.0.1")
    sim.push_url = str(receiver.make_url("/"))
    dev = open_meter(sim)
    status, answer = await sim.push_reading(dev.comm_no)
    assert (status, answer["State"]) == (200, "success")
    assert accepted[0].reading == expected(dev)
    assert await sim.push_again() == (status, answer)
    status, answer = await sim.push_alarm(dev.comm_no, 4)
    assert (status, answer["State"]) == (200, "success")
    assert await sim.push_again() == (status, answer)
    status, answer = await sim.push_event(dev.comm_no, 101)
    assert (status, answer["State"]) == (200, "success")
    receipt = await client.async_set_valve(MeterData(meter_id=dev.comm_no), False, "HTTP-1")
    await sim.settle()
    await sim.drain()
    reports = [r for r in accepted if r.commands]
    assert [(r.commands[0].vendor_id, r.commands[0].success) for r in reports] == [(receipt.vendor_id, True)]
    events = [r.alarm for r in accepted if r.alarm is not None]
    assert [(a.type, a.code) for a in events] == [
        (AlarmType.GAS_LEAK, "4"),
        (AlarmType.GAS_LEAK, "4"),
        (AlarmType.VALVE_OPENED, "101"),
        (AlarmType.VALVE_CLOSED, "102"),  # the valve closing, as the simulator logs it
    ]
    sim.data_api_key = "0" * 32
    status, answer = await sim.push_reading(dev.comm_no)
    assert (status, answer["State"]) == (401, "failed")


# ---- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "error", "code", "unknown"),
    [
        ("auth", AuthenticationError, "401", False),
        ("http500", CloudConnectionError, "500", True),
        ("malformed", ResponseError, None, True),
        ("timeout", CloudTimeoutError, None, True),
        ("drop", CloudTimeoutError, None, True),
        ("error", CommandError, "failed", False),
    ],
)
async def test_failure_modes(
    sim: IotMeterSimulator,
    reader: IotMeterClient,
    mode: str,
    error: type[MeterCloudError],
    code: str | None,
    unknown: bool,
) -> None:
    """Each injected failure of the data API maps to its class once; the next call works."""
    reader.request_timeout = LOST_ANSWER_TIMEOUT
    sim.fail_next(mode, endpoint="GetRealList2", code="数据库忙" if mode == "error" else None)
    with pytest.raises(MeterCloudError) as err:
        await reader.async_get_meters()
    assert type(err.value) is error
    assert (err.value.code, err.value.outcome_unknown) == (code, unknown)
    if mode == "error":
        assert str(err.value) == "数据库忙"
    assert len(await reader.async_get_meters()) == len(sim.devices)
    assert reader.request_count == 2


@pytest.mark.parametrize(
    ("mode", "error", "unknown"),
    [("http500", CloudConnectionError, True), ("malformed", ResponseError, True), ("error", CommandError, False)],
)
async def test_control_failure_modes(
    sim: IotMeterSimulator, client: IotMeterClient, mode: str, error: type[MeterCloudError], unknown: bool
) -> None:
    """The control API's failures map alike; a refused Add queues nothing."""
    sim.fail_next(mode, endpoint="Add")
    with pytest.raises(MeterCloudError) as err:
        await client.async_set_valve(MeterData(meter_id=open_meter(sim).comm_no), False, "FM-1")
    assert type(err.value) is error
    assert err.value.outcome_unknown is unknown
    assert names(sim).count("Login") == 1


async def test_wrong_data_key(sim: IotMeterSimulator, server: TestServer, session: aiohttp.ClientSession) -> None:
    """The simulator checks company_no and data_api_key itself: HTTP 401."""
    for overrides in ({"data_api_key": "0" * 32}, {"company_no": "1002"}):
        client = make_client(sim, server, session, control=False, **overrides)
        with pytest.raises(AuthenticationError) as err:
            await client.async_get_meters()
        assert (err.value.code, err.value.reason) == ("401", "invalid_auth")


@pytest.mark.parametrize(
    ("suffix", "answer", "message"),
    [
        ("GetRealList2", [1, 2], "not a JSON object"),
        ("GetRealList2", {"Data": {}, "Totalcount": 1, "State": "success"}, "no Data list"),
        ("Account/Login", {"Data": {"expiration": "x"}, "State": "success"}, "no token"),
        ("CtrlData/Add", {"Data": 0, "State": "success"}, "no ctrl_id"),
        ("CtrlData/AddMulti", {"Data": None, "State": "success"}, "no Data list"),
    ],
)
async def test_answers_that_make_no_sense(
    sim: IotMeterSimulator, client: IotMeterClient, wire: Wire, suffix: str, answer: Any, message: str
) -> None:
    """Answers of the wrong shape are response errors: the outcome is unknown."""
    wire.rewrites[suffix] = lambda _answer: answer
    meter = MeterData(meter_id=open_meter(sim).comm_no, kind="meter")
    call: Awaitable[Any]
    if suffix == "GetRealList2":
        call = client.async_get_meters()
    elif suffix.endswith("AddMulti"):
        call = client.async_set_price([meter], PriceSchedule(prices=(Decimal(3),)))
    else:
        call = client.async_set_valve(meter, False, "SHAPE-1")
    with pytest.raises(ResponseError, match=message) as err:
        await call
    assert err.value.outcome_unknown is True


async def test_odd_but_readable_shapes(sim: IotMeterSimulator, client: IotMeterClient, wire: Wire) -> None:
    """ext_data that is no JSON, return_data as an object or garbage, rows without a state: read, never crashed."""
    dev = open_meter(sim)

    def broken_ext(answer: dict[str, Any]) -> dict[str, Any]:
        answer["Data"]["ext_data"] = "{not json"
        return answer

    wire.rewrites["GetRealModel/" + dev.comm_no] = broken_ext
    got = await client.async_get_meter(dev.comm_no)
    assert got is not None
    assert (got.flags, got.valve, got.total_recharge) == (None, None, None)
    assert (got.reading, got.balance) == (q3(dev.std_sum), q3(dev.remain_money))

    receipt = await client.async_recharge(
        MeterData(meter_id=dev.comm_no), Decimal(5), "ODD-1", serial="ODD-1", when=NOW, **following(dev, Decimal(5))
    )
    await sim.settle()
    [item] = sim.report_body(int(receipt.vendor_id or 0))
    for return_data, success, data in (
        ({"success": 0xBB, "reason": 1}, False, {"success": 0xBB, "reason": 1}),
        ("{garbage", True, None),
        ("[1, 2]", True, None),
        ("", True, None),
    ):
        body = json.dumps([item | {"return_data": return_data}]).encode()
        [result] = client.parse_push(REPORT, push_headers(sim), body, NOW).commands
        assert (result.success, result.data) == (success, data), return_data

    def with_stateless_row(answer: dict[str, Any]) -> dict[str, Any]:
        answer["Data"].append({"ctrl_id": 999, "ctrl_define_no": "NO-STATE"})
        answer["Totalcount"] += 1
        return answer

    wire.rewrites["CtrlData/GetList"] = with_stateless_row
    listed = await client.async_list_commands(MeterData(meter_id=dev.comm_no))
    assert [item["reference"] for item in listed] == ["ODD-1"]
    wire.rewrites["CtrlData/GetModel/" + str(receipt.vendor_id)] = lambda _answer: {"Data": None, "State": "success"}
    assert await client.async_command_states([ref("ODD-1", CommandKind.RECHARGE, receipt.vendor_id)]) == []


async def test_connection_refused(session: aiohttp.ClientSession, socket_enabled: None, unused_tcp_port: int) -> None:
    """Nothing listening: the request never left, so it is a connection error and not a timeout."""
    sim = make_sim(meters=1, rtus=0)
    refused = IotMeterClient(session, iot_config(sim, None, data_url=f"http://127.0.0.1:{unused_tcp_port}/"), tz=TZ)
    with pytest.raises(CloudConnectionError) as err:
        await refused.async_get_meters()
    assert not isinstance(err.value, CloudTimeoutError)
    assert (err.value.request_sent, err.value.outcome_unknown) == (False, False)
