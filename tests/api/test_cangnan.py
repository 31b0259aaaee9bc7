"""CangnanClient and its envelope over real HTTP against the CNMCSP simulator: every value is the simulator's own."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler, Middleware
from Crypto.Cipher import DES

from custom_components.meter_cloud.api import (
    AlarmPriority,
    AlarmType,
    AuthenticationError,
    CangnanClient,
    Capability,
    CloudConnectionError,
    CloudTimeoutError,
    CommandError,
    CommandKind,
    CommandReceipt,
    CommandRef,
    ConfigurationError,
    CustomerInfo,
    DuplicateSerialError,
    InvalidRequestError,
    MeterCloudError,
    MeterData,
    MeterRegistration,
    MeterReplacement,
    PriceSchedule,
    PushError,
    PushResult,
    ResponseError,
    UnsupportedError,
    ValveState,
)
from custom_components.meter_cloud.api.cangnan import ERRORS, format_meter_list, parse_meter_list
from custom_components.meter_cloud.api.envelope import ENCODINGS, MACS, MODES, PADDINGS, Envelope, retail_mac
from simulator.cangnan import ALARM_TYPES, MESSAGES, OK_MESSAGE, PUSH_PATHS, CangnanEnvelope, CangnanSimulator, SimMeter
from simulator.common import dumps, sign

from ..timing import LOST_ANSWER_HANG, LOST_ANSWER_TIMEOUT
from .conftest import TZ

KEY16 = "0123456789ABCDEFFEDCBA9876543210"
KEY24 = KEY16 + "89ABCDEF01234567"
VALVES = {"01": ValveState.OPEN, "00": ValveState.CLOSED, "10": ValveState.MOVING, "11": ValveState.FAULT}
STAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")

Serve = Callable[[CangnanSimulator], Awaitable[TestServer]]


@dataclass
class Wire:
    """What passes between client and simulator; `rewrite` changes the next answer on its way back."""

    bodies: list[bytes] = field(default_factory=list)
    answers: list[bytes] = field(default_factory=list)
    rewrite: Callable[[bytes], bytes] | None = None
    delay: float = 0.0
    in_flight: int = 0
    peak: int = 0

    def middleware(self) -> Middleware:
        """An aiohttp middleware recording raw request and answer bytes (vendor endpoints only)."""

        @web.middleware
        async def watch(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not request.path.startswith("/rest/"):
                return await handler(request)
            self.bodies.append(await request.read())
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                await asyncio.sleep(self.delay)
                response = await handler(request)
            finally:
                self.in_flight -= 1
            if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
                return response
            self.answers.append(response.body)
            if self.rewrite is None:
                return response
            rewrite, self.rewrite = self.rewrite, None
            return web.Response(status=response.status, body=rewrite(response.body), content_type="application/json")

        return watch


def make_sim(**kwargs: Any) -> CangnanSimulator:
    """A simulator whose commands wait for settle() and whose lost answers hang half a second."""
    simulator = CangnanSimulator(**({"meters": 6, "command_delay": 3600, "seed": 7} | kwargs))
    simulator.hang_seconds = LOST_ANSWER_HANG
    return simulator


def cn_config(sim: CangnanSimulator, server: TestServer | None, **overrides: str) -> dict[str, str]:
    """The config-flow fields that point a client at the simulator and follow all its meters."""
    config = {
        "base_url": str(server.make_url("")) if server is not None else "http://127.0.0.1:9",
        "app_token": sim.app_token,
        "app_secret": sim.app_secret,
        "data_from": sim.data_from,
        "billing_side": sim.billing_mode,
        "meters": "\n".join(pair(meter) for meter in sim.meters.values()),
    }
    if sim.envelope is not None:
        config |= {
            "encryption_key": sim.envelope.key.hex().upper(),
            "encryption_mode": sim.envelope.mode,
            "encryption_padding": sim.envelope.padding,
            "encryption_mac": sim.envelope.mac,
            "encryption_encoding": sim.envelope.encoding,
        }
    return config | overrides


def pair(meter: SimMeter) -> str:
    """A meter as a line of the meter list."""
    return f"{meter.user_id}:{meter.meter_id}"


def as_meter(meter: SimMeter) -> MeterData:
    """What the integration knows about a meter after a poll."""
    return MeterData(meter_id=meter.meter_id, user_no=meter.user_id)


def calls(sim: CangnanSimulator, name: str) -> list[dict[str, Any]]:
    """Payloads (opened, decoded) the simulator received on one endpoint."""
    return [payload for endpoint, payload in sim.requests if endpoint == name]


def nth(sim: CangnanSimulator, index: int) -> SimMeter:
    """The simulator's meter created `index`-th."""
    return list(sim.meters.values())[index]


def opened(sim: CangnanSimulator, raw: bytes) -> dict[str, Any]:
    """An answer body as the simulator reads it: opened with its own envelope when it has one."""
    plain = sim.envelope.open(raw) if sim.envelope is not None else raw
    decoded: dict[str, Any] = json.loads(plain)
    return decoded


def wall(text: str) -> datetime:
    """A wall-clock time the client sent, in the vendor's zone."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=TZ)


@pytest.fixture
def wire() -> Wire:
    """The recorder between client and simulator."""
    return Wire()


@pytest.fixture
def sim() -> CangnanSimulator:
    """Six meters billed by the meter: both number styles, and the quirky keys on the third and sixth."""
    return make_sim()


@pytest.fixture
async def server(sim: CangnanSimulator, serve: Serve) -> TestServer:
    """The simulator on loopback."""
    return await serve(sim)


@pytest.fixture
def client(sim: CangnanSimulator, server: TestServer, session: aiohttp.ClientSession) -> CangnanClient:
    """A client following every simulated meter."""
    cangnan = CangnanClient(session, cn_config(sim, server), tz=TZ)
    cangnan.request_timeout = 5
    return cangnan


async def rig(serve: Serve, session: aiohttp.ClientSession, **kwargs: Any) -> tuple[CangnanSimulator, CangnanClient]:
    """Another simulator and a client configured for it (same envelope, billing and meters)."""
    simulator = make_sim(**kwargs)
    cangnan = CangnanClient(session, cn_config(simulator, await serve(simulator)), tz=TZ)
    cangnan.request_timeout = 5
    return simulator, cangnan


def sealed_envelope(**settings: str) -> CangnanEnvelope:
    """The simulator's envelope with the 16-byte test key."""
    return CangnanEnvelope.from_hex(KEY16, **settings)


# ---- identity and the meter list ---------------------------------------------------------------------


def test_identity_and_declarations() -> None:
    """The entry is identified by company and token; the push paths are the simulator's."""
    config = {"data_from": "苍南仪表集团", "app_token": "SIMTOKEN01"}
    assert CangnanClient.unique_id(config) == "cangnan_苍南仪表集团_simtoken01"
    assert CangnanClient.title(config) == "Cangnan 苍南仪表集团"
    assert set(CangnanClient.push_paths) == set(PUSH_PATHS.values())
    assert CangnanClient.max_price_tiers == 3
    assert set(CangnanClient.alarm_types) == {
        AlarmType.COMMUNICATION_FAULT,
        AlarmType.GAS_LEAK,
        AlarmType.REED_SWITCH_FAULT,
        AlarmType.VALVE_LEAK,
        AlarmType.VALVE_FAULT,
        AlarmType.BATTERY_FAULT,
        AlarmType.MAGNETIC_INTERFERENCE,
        AlarmType.LOW_BALANCE,
        AlarmType.TAMPERING,
        AlarmType.OTHER,
    }


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("U1:M1\nU2:M2", [("U1", "M1"), ("U2", "M2")]),
        ("U1:M1;U2:M2,U3:M3", [("U1", "M1"), ("U2", "M2"), ("U3", "M3")]),
        ("  U1 : M1 \r\n\n\t U2/M2\t\r\n;;, ", [("U1", "M1"), ("U2", "M2")]),
        ("U1/M1", [("U1", "M1")]),
        ("U1:M1\nU1:M2", [("U1", "M1"), ("U1", "M2")]),  # one user may have several meters
        ("KYNYN144801:012345678901", [("KYNYN144801", "012345678901")]),
    ],
)
def test_parse_meter_list(text: str, pairs: list[tuple[str, str]]) -> None:
    """Newlines, ';' and ',' separate pairs; ':' or '/' separates user and meter; blanks are ignored."""
    assert parse_meter_list(text) == pairs
    assert parse_meter_list(format_meter_list(pairs)) == pairs
    assert format_meter_list(pairs) == "\n".join(f"{user}:{meter}" for user, meter in pairs)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("U1:M1\nU2:M1", None),  # the same meter twice, under two users
        ("U1:M1\nU1:M1", None),
        ("U1:M1\nM2", "M2"),
        ("U1:M1:X", "U1:M1:X"),
        ("U 1:M1", "U 1:M1"),
        (":M1", ":M1"),
        ("U1:", "U1:"),
        ("U1 M1", "U1 M1"),
        ("U1=M1", "U1=M1"),
        ("", None),
        ("  \n ;, \t", None),
    ],
)
def test_parse_meter_list_refusals(text: str, named: str | None) -> None:
    """Duplicates, garbage and an empty list are refused as invalid_meter_list, naming the bad line."""
    with pytest.raises(ConfigurationError) as err:
        parse_meter_list(text)
    assert err.value.reason == "invalid_meter_list"
    if named is not None:
        assert str(err.value) == named


async def test_client_refuses_bad_meter_list(session: aiohttp.ClientSession) -> None:
    """The constructor parses the list: an entry with a broken one does not load."""
    sim = make_sim(meters=2)
    with pytest.raises(ConfigurationError) as err:
        CangnanClient(session, cn_config(sim, None, meters="U1:M1\nU2:M1"), tz=TZ)
    assert err.value.reason == "invalid_meter_list"


# ---- readings (ReadCurrentData) ----------------------------------------------------------------------


async def test_get_meters_matches_simulator(sim: CangnanSimulator, client: CangnanClient, wire: Wire) -> None:
    """Every field equals the simulator's, whatever the row's number style, key casing or extra keys."""
    for meter, valve in zip(sim.meters.values(), ("01", "00", "10", "11", "01", "00"), strict=True):
        meter.valve = valve
    sim.tick(45)
    meters = await client.async_get_meters()
    assert client.request_count == 1
    assert set(meters) == set(sim.meters)
    for meter_id, meter in sim.meters.items():
        got = meters[meter_id]
        assert got.meter_id == meter.meter_id
        assert got.user_no == meter.user_id
        assert got.reading == meter.reading
        assert got.reading_time == meter.read_time
        assert got.reading_time is not None
        assert got.reading_time.utcoffset() == timedelta(hours=8)
        assert got.valve is VALVES[meter.valve]
        assert got.temperature == meter.temperature
        assert got.pressure == meter.pressure
        assert got.total_gas == meter.total_used_gas
        assert got.total_recharge == meter.total_buy_money
        assert got.balance == meter.remain_money
        assert got.total_money == meter.total_used_money
        assert got.price == meter.price
        assert got.total_gas != got.total_money  # gas and money are not swapped
        assert got.balance != got.total_recharge  # remaining and bought are not swapped
    assert {meters[m].valve for m in sim.meters} == set(ValveState) - {ValveState.UNKNOWN}
    # The rows really carried the quirks this test claims to cover.
    rows = json.loads(wire.answers[0])["ReadingData"]
    assert {type(row["Reading"]) for row in rows} == {float, str}
    assert sum("remainMoney" in row and "price" in row and "SignalQuality" in row for row in rows) == 2
    assert sum("RemainMoney" in row for row in rows) == 4
    [payload] = calls(sim, "ReadCurrentData")
    assert payload == {
        "Meters": [{"UserID": m.user_id, "MeterID": m.meter_id} for m in sim.meters.values()],
        "DataFrom": sim.data_from,
    }


async def test_get_meters_follows_use(sim: CangnanSimulator, client: CangnanClient) -> None:
    """Nothing is cached: after gas flowed, the next poll has the simulator's new numbers."""
    before = await client.async_get_meters()
    sim.tick(120)
    after = await client.async_get_meters()
    moved = 0
    for meter_id, meter in sim.meters.items():
        assert (after[meter_id].reading, after[meter_id].balance) == (meter.reading, meter.remain_money)
        assert after[meter_id].total_money == meter.total_used_money
        moved += after[meter_id].reading != before[meter_id].reading
    assert moved == sum(meter.valve == "01" for meter in sim.meters.values()) > 0
    assert client.request_count == 2


@pytest.mark.parametrize("platform", ["meter", "system"])
async def test_system_billing_reports_no_money(serve: Serve, session: aiohttp.ClientSession, platform: str) -> None:
    """With the CIS billing, money fields stay None (even if the platform sends some) and money commands go."""
    sim = make_sim(billing_mode=platform)
    client = CangnanClient(session, cn_config(sim, await serve(sim), billing_side="system"), tz=TZ)
    meters = await client.async_get_meters()
    assert set(meters) == set(sim.meters)
    for meter_id, meter in sim.meters.items():
        got = meters[meter_id]
        assert (got.reading, got.total_gas, got.temperature) == (meter.reading, meter.total_used_gas, meter.temperature)
        assert (got.balance, got.total_money, got.total_recharge, got.price) == (None, None, None, None)
    money = {Capability.RECHARGE, Capability.SET_PRICE, Capability.ADJUST_BALANCE, Capability.CANCEL_COMMAND}
    assert not client.capabilities & money
    assert {Capability.VALVE, Capability.REGISTER_METER, Capability.PUSH} <= client.capabilities
    assert not client.fields & {"balance", "price", "total_money", "total_recharge"}
    assert {"reading", "valve", "total_gas", "temperature", "pressure"} <= client.fields


async def test_meter_billing_declares_money(client: CangnanClient) -> None:
    """Billed by the meter, the account can recharge, price, adjust and cancel, and reports balances."""
    money = {Capability.RECHARGE, Capability.SET_PRICE, Capability.ADJUST_BALANCE, Capability.CANCEL_COMMAND}
    assert money <= client.capabilities
    assert all(client.supports(capability) for capability in money)
    assert {"balance", "price", "total_money", "total_recharge"} <= client.fields


async def test_batches_of_a_hundred(serve: Serve, session: aiohttp.ClientSession, wire: Wire) -> None:
    """250 meters are read in three requests of at most 100, two in flight at a time."""
    sim, client = await rig(serve, session, meters=250)
    wire.delay = 0.1
    meters = await client.async_get_meters()
    assert len(meters) == 250
    assert all(meters[m.meter_id].reading == m.reading for m in sim.meters.values())
    assert client.request_count == 3
    sizes = sorted(len(payload["Meters"]) for payload in calls(sim, "ReadCurrentData"))
    assert sizes == [50, 100, 100]
    asked = [row["MeterID"] for payload in calls(sim, "ReadCurrentData") for row in payload["Meters"]]
    assert sorted(asked) == sorted(sim.meters)
    assert wire.peak == 2
    await client.async_get_meters()
    assert client.request_count == 6


async def test_lost_pair_costs_only_its_reading(serve: Serve, session: aiohttp.ClientSession) -> None:
    """A pair the platform no longer knows fails its batch; bisecting it finds the pair and reads the rest; from
    then on it is asked alone (one request), until the platform knows it again."""
    sim, client = await rig(serve, session, meters=120)
    lost = nth(sim, 0)
    del sim.meters[lost.meter_id]
    meters = await client.async_get_meters()
    assert set(meters) == set(sim.meters)
    assert len(meters) == 119
    assert all(meters[m.meter_id].balance == m.remain_money for m in sim.meters.values())
    assert client.unknown_meters == {pair(lost)}
    # 100 → 50 + 50 → 25 + 25 → 12 + 13 → 6 + 6 → 3 + 3 → 1 + 2, plus the healthy batch of 20.
    sizes = sorted(len(payload["Meters"]) for payload in calls(sim, "ReadCurrentData"))
    assert sizes == [1, 2, 3, 3, 6, 6, 12, 13, 20, 25, 25, 50, 50, 100]
    assert client.request_count == 14
    sim.requests.clear()
    with pytest.raises(ConfigurationError) as err:
        await client.async_validate()
    assert err.value.reason == "unknown_meters"
    assert str(err.value) == pair(lost)
    assert client.unknown_meters == {pair(lost)}
    # No second search: the other 119 in two batches, the lost pair alone.
    asked = [[row["MeterID"] for row in payload["Meters"]] for payload in calls(sim, "ReadCurrentData")]
    assert sorted(map(len, asked)) == [1, 19, 100]
    assert [lost.meter_id] in asked
    sim.meters[lost.meter_id] = lost  # the platform knows it again: the next poll forgets the old verdict
    assert len(await client.async_get_meters()) == 120
    assert client.unknown_meters == set()
    sim.requests.clear()
    await client.async_validate()
    assert sorted(len(payload["Meters"]) for payload in calls(sim, "ReadCurrentData")) == [20, 100]


async def test_a_platform_that_takes_fewer_meters_is_learned(serve: Serve, session: aiohttp.ClientSession) -> None:
    """A platform that refuses more than 30 meters at once (80002003): the first poll asks again in 50s (refused
    too), then 20s, and every meter is read; 20 is its size from then on, also for a client started afresh on the
    same store. A platform refusing every request learns nothing and fails the poll after one walk down."""
    sim, client = await rig(serve, session, meters=120)
    sim.max_meters = 30
    saved: list[int] = []
    store: dict[str, Any] = {}
    client.attach_store(store, lambda: saved.append(store["read_batch"]))
    meters = await client.async_get_meters()
    assert {meter_id: meter.reading for meter_id, meter in meters.items()} == {
        m.meter_id: m.reading for m in sim.meters.values()
    }
    # 100 (refused) → 50 + 50 (both refused) → 20 + 20 + 10 each; the last batch of 20 is answered at once.
    sizes = sorted(len(payload["Meters"]) for payload in calls(sim, "ReadCurrentData"))
    assert sizes == [10, 10, 20, 20, 20, 20, 20, 50, 50, 100]
    assert (client.batch_size, store, saved[-1]) == (20, {"read_batch": 20}, 20)
    sim.requests.clear()
    sim.tick(30)
    meters = await client.async_get_meters()
    assert sorted(len(payload["Meters"]) for payload in calls(sim, "ReadCurrentData")) == [20] * 6
    assert all(meters[m.meter_id].reading == m.reading for m in sim.meters.values())
    restarted = CangnanClient(session, client._config, tz=TZ)
    restarted.attach_store(store, lambda: None)
    sim.requests.clear()
    assert len(await restarted.async_get_meters()) == 120
    assert sorted(len(payload["Meters"]) for payload in calls(sim, "ReadCurrentData")) == [20] * 6

    refusing, fresh = await rig(serve, session, meters=3)
    refusing.max_meters = 0
    with pytest.raises(CommandError) as err:
        await fresh.async_get_meters()
    assert err.value.code == "80002003"
    assert sorted(len(payload["Meters"]) for payload in calls(refusing, "ReadCurrentData")) == [1, 2, 3]
    assert fresh.batch_size == 100


async def test_validate_names_every_bad_pair(
    sim: CangnanSimulator, server: TestServer, session: aiohttp.ClientSession, client: CangnanClient
) -> None:
    """A good list validates; a wrong user and a missing meter are both named, sorted."""
    await client.async_validate()
    assert client.unknown_meters == set()
    moved = nth(sim, 1)
    good = [pair(meter) for meter in sim.meters.values() if meter is not moved]
    meters = "\n".join([*good, f"NOBODY:{moved.meter_id}", "KYNYN144801:999999999999"])
    other = CangnanClient(session, cn_config(sim, server, meters=meters), tz=TZ)
    with pytest.raises(ConfigurationError) as err:
        await other.async_validate()
    assert err.value.reason == "unknown_meters"
    assert str(err.value) == f"KYNYN144801:999999999999, NOBODY:{moved.meter_id}"
    assert len(await other.async_get_meters()) == len(sim.meters) - 1


async def test_batch_failure_that_is_not_a_pair(sim: CangnanSimulator, client: CangnanClient) -> None:
    """Only pair errors are bisected: 80002014 (reading failed) fails the poll in one request."""
    sim.fail_next("error", code="80002014", endpoint="ReadCurrentData")
    with pytest.raises(CommandError) as err:
        await client.async_get_meters()
    assert (err.value.code, err.value.reason) == ("80002014", "reading_failed")
    assert client.request_count == 1
    assert client.unknown_meters == set()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"[1, 2]", "answer is not a JSON object"),
        (b'{"ReturnMessage": "ok"}', "answer has no ReturnCode"),
        (b'{"ReturnCode": "0", "ReturnMessage": "ok"}', "ReadCurrentData answer has no ReadingData list"),
        (b'{"ReturnCode": "0", "ReadingData": {"MeterID": "1"}}', "ReadCurrentData answer has no ReadingData list"),
    ],
)
async def test_answers_that_make_no_sense(client: CangnanClient, wire: Wire, answer: bytes, message: str) -> None:
    """An answer of the wrong shape is a ResponseError whose outcome is unknown."""
    wire.rewrite = lambda _: answer
    with pytest.raises(ResponseError, match=message) as err:
        await client.async_get_meters()
    assert err.value.outcome_unknown is True


async def test_rows_without_meter_are_skipped(client: CangnanClient, wire: Wire) -> None:
    """Rows that are not objects or lack a MeterID are skipped; an integer ReturnCode 0 is success."""
    body = {"ReturnCode": 0, "ReadingData": [1, {"Reading": "5"}, {"meterid": "X1", "Reading": "7.5", "ValveState": 1}]}
    wire.rewrite = lambda _: json.dumps(body).encode()
    meters = await client.async_get_meters()
    assert meters == {"X1": MeterData(meter_id="X1", reading=Decimal("7.5"), valve=ValveState.UNKNOWN)}


# ---- the envelope (spec 4.2) -------------------------------------------------------------------------


@pytest.mark.parametrize("key", [KEY16, KEY24], ids=["key16", "key24"])
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("mac", MACS)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", MODES)
async def test_envelope_round_trip(
    serve: Serve, session: aiohttp.ClientSession, wire: Wire, mode: str, padding: str, mac: str, encoding: str, key: str
) -> None:
    """Each setting, both key lengths: a real reading and a real recharge, nothing in clear on the wire."""
    envelope = CangnanEnvelope.from_hex(key, mode=mode, padding=padding, mac=mac, encoding=encoding)
    sim, client = await rig(serve, session, meters=3, envelope=envelope)
    assert client.envelope == Envelope(bytes.fromhex(key), mode, padding, mac, encoding)
    meters = await client.async_get_meters()
    for meter_id, meter in sim.meters.items():
        assert (meters[meter_id].reading, meters[meter_id].balance) == (meter.reading, meter.remain_money)
        assert meters[meter_id].reading_time == meter.read_time
    meter = nth(sim, 0)
    before = meter.remain_money
    when = datetime.now(TZ).replace(microsecond=0)
    await client.async_recharge(as_meter(meter), Decimal("12.34"), "ENV-1", serial="ENV-1", when=when)
    [payload] = calls(sim, "recharge")  # the simulator opened it with its own implementation
    assert (payload["TradeNo"], payload["RechargeAmt"], payload["DataFrom"]) == ("ENV-1", "12.3400", sim.data_from)
    await sim.settle()
    assert meter.remain_money == before + Decimal("12.34")
    assert len(wire.bodies) == len(wire.answers) == 2
    for raw in wire.bodies + wire.answers:
        outer = json.loads(raw)
        assert set(outer) == {"Data", "MAC"}
        data = base64.b64decode(outer["Data"], validate=True) if encoding == "base64" else bytes.fromhex(outer["Data"])
        assert data
        assert len(data) % 8 == 0
        assert re.fullmatch("[0-9A-F]{16}" if mac.startswith("x919") else "[0-9A-F]{64}", outer["MAC"])
        assert sim.data_from.encode() not in raw
        assert b"ReturnCode" not in raw
        assert b"ENV-1" not in raw


def x919_unpadded(k1: bytes, k2: bytes, data: bytes) -> bytes:
    """ANSI X9.19 on whole blocks, written out from the standard: DES-CBC-MAC with K1, then D(K2), E(K1)."""
    state = bytes(8)
    for start in range(0, len(data), 8):
        block = bytes(a ^ b for a, b in zip(state, data[start : start + 8], strict=True))
        state = DES.new(k1, DES.MODE_ECB).encrypt(block)  # noqa: S304 - the standard's own cipher
    return DES.new(k1, DES.MODE_ECB).encrypt(DES.new(k2, DES.MODE_ECB).decrypt(state))  # noqa: S304


def test_retail_mac_standard_vector() -> None:
    """The X9.19 vector holds for the reference code; retail_mac is that MAC over ISO 9797-1 method-2 padding."""
    k1, k2 = bytes.fromhex("0123456789ABCDEF"), bytes.fromhex("FEDCBA9876543210")
    text = b"Now is the time for all "
    # ANSI X9.9 and X9.19 test vectors (24 bytes, no padding needed): the reference code must reproduce them.
    assert DES.new(k1, DES.MODE_CBC, iv=bytes(8)).encrypt(text)[-8:].hex().upper() == "70A30640CC76DD8B"  # noqa: S304
    assert x919_unpadded(k1, k2, text).hex().upper() == "A1C72E74EA3FA9B6"
    # The envelope pads with 0x80 and zeros (method 2), so even whole blocks get one more block.
    assert retail_mac(k1, k2, text) == x919_unpadded(k1, k2, text + b"\x80" + bytes(7))
    assert retail_mac(k1, k2, text).hex().upper() == "E9086230CA3BE796"
    for length in range(40):
        data = bytes(range(1, length + 1))
        padded = data + b"\x80" + bytes(-(length + 1) % 8)
        assert retail_mac(k1, k2, data) == x919_unpadded(k1, k2, padded)
        assert retail_mac(k1, k2, data).hex().upper() == CangnanEnvelope(k1 + k2).mac_of(data)


@pytest.mark.parametrize("key", [KEY16, KEY24])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mac", MACS)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_envelope_matches_simulator_at_every_length(key: str, mode: str, padding: str, mac: str, encoding: str) -> None:
    """Client and simulator seal the same bytes to the same body and open each other's, around block edges."""
    ours = Envelope.from_config(key, mode, padding, mac, encoding)
    theirs = CangnanEnvelope.from_hex(key, mode=mode, padding=padding, mac=mac, encoding=encoding)
    for length in range(1, 26):
        data = ("苍南" + "x" * length).encode()[:length]  # no trailing zero bytes: zero padding cannot keep them
        assert ours.seal(data) == theirs.seal(data)
        assert theirs.open(ours.seal(data)) == data
        assert ours.open(theirs.seal(data)) == data


def _flip_data(body: bytes) -> bytes:
    outer = json.loads(body)
    raw = base64.b64decode(outer["Data"])
    outer["Data"] = base64.b64encode(bytes([raw[0] ^ 0x01]) + raw[1:]).decode()
    return json.dumps(outer).encode()


def _flip_mac(body: bytes) -> bytes:
    outer = json.loads(body)
    outer["MAC"] = ("0" if outer["MAC"][0] != "0" else "1") + outer["MAC"][1:]
    return json.dumps(outer).encode()


@pytest.mark.parametrize("tamper", [_flip_data, _flip_mac], ids=["data", "mac"])
async def test_tampered_answer_is_refused(
    serve: Serve, session: aiohttp.ClientSession, wire: Wire, tamper: Callable[[bytes], bytes]
) -> None:
    """One bit changed in Data or MAC on the way back: the MAC check refuses the answer."""
    sim, client = await rig(serve, session, envelope=sealed_envelope())
    wire.rewrite = tamper
    with pytest.raises(ResponseError, match="MAC does not match") as err:
        await client.async_get_meters()
    assert err.value.outcome_unknown is True
    assert len(await client.async_get_meters()) == len(sim.meters)


async def test_plain_error_accepted_when_sealed(serve: Serve, session: aiohttp.ClientSession, wire: Wire) -> None:
    """A refusal the platform sends in clear is still understood as that refusal."""
    sim, client = await rig(serve, session, envelope=sealed_envelope())
    envelope = sim.envelope
    assert envelope is not None
    sim.fail_next("error", code="80002013", endpoint="controlValve")
    wire.rewrite = envelope.open
    with pytest.raises(CommandError) as err:
        await client.async_set_valve(as_meter(nth(sim, 0)), False, "s" * 32)
    assert (err.value.code, err.value.reason, str(err.value)) == (
        "80002013",
        "meter_user_mismatch",
        MESSAGES["80002013"],
    )
    assert set(json.loads(wire.answers[-1])) == {"Data", "MAC"}  # the simulator sealed it; the wire took it off


async def test_plain_success_refused_when_sealed(serve: Serve, session: aiohttp.ClientSession, wire: Wire) -> None:
    """With encryption on, a success answer in clear carries no MAC: it must not be believed."""
    sim, client = await rig(serve, session, envelope=sealed_envelope())
    envelope = sim.envelope
    assert envelope is not None

    def forge(body: bytes) -> bytes:
        answer = json.loads(envelope.open(body))
        answer["ReadingData"][0]["RemainMoney"] = 999999
        return json.dumps(answer).encode()

    wire.rewrite = forge
    with pytest.raises(ResponseError, match="not sealed"):
        await client.async_get_meters()
    # A command's bare success, and an answer in clear without any ReturnCode, are not believed either.
    wire.rewrite = envelope.open
    with pytest.raises(ResponseError, match="not sealed") as err:
        await client.async_set_valve(as_meter(nth(sim, 0)), False, "p" * 32)
    assert err.value.outcome_unknown is True  # the platform did get the command
    assert json.loads(envelope.open(wire.answers[-1]))[" ReturnCode "] == "0"
    wire.rewrite = lambda _: b'{"ReturnMessage": "ok"}'
    with pytest.raises(ResponseError, match="not sealed"):
        await client.async_get_meters()
    assert len(await client.async_get_meters()) == len(sim.meters)


async def test_sealed_answer_that_is_no_object(serve: Serve, session: aiohttp.ClientSession, wire: Wire) -> None:
    """An authentic envelope whose content is not a JSON object is a ResponseError."""
    sim, client = await rig(serve, session, envelope=sealed_envelope())
    envelope = sim.envelope
    assert envelope is not None
    wire.rewrite = lambda _: envelope.seal(b"[1, 2]")
    with pytest.raises(ResponseError, match="decrypted answer is not a JSON object"):
        await client.async_get_meters()
    wire.rewrite = lambda _: envelope.seal(b"\xff not json")
    with pytest.raises(ResponseError, match="not valid JSON"):
        await client.async_get_meters()


async def test_mismatched_settings_fail_loudly(serve: Serve, session: aiohttp.ClientSession) -> None:
    """A client sealing differently from the platform gets its plain 400 refusal, as a ResponseError."""
    sim = make_sim(meters=2, envelope=sealed_envelope())
    server = await serve(sim)
    for overrides in ({"encryption_mode": "ecb"}, {"encryption_mac": "hmac_sha256"}, {"encryption_encoding": "hex"}):
        client = CangnanClient(session, cn_config(sim, server, **overrides), tz=TZ)
        with pytest.raises(ResponseError) as err:
            await client.async_get_meters()
        assert err.value.code == "400"
    # Three keys where the platform has two: the X9.19 MAC (K1 and K2 only) passes, the decryption does not.
    client = CangnanClient(session, cn_config(sim, server, encryption_key=KEY24), tz=TZ)
    with pytest.raises(ResponseError):
        await client.async_get_meters()
    plain = CangnanClient(session, {**cn_config(sim, server), "encryption_key": ""}, tz=TZ)
    assert plain.envelope is None
    with pytest.raises(ResponseError):
        await plain.async_get_meters()
    assert calls(sim, "ReadCurrentData") == [{}] * 5  # the simulator could open none of them


@pytest.mark.parametrize(
    ("key", "mode", "padding", "mac", "encoding", "message"),
    [
        ("0123456789ABCDEFFEDCBA987654321G", "cbc", "pkcs7", "x919", "base64", "not hex"),
        ("not hex at all", "cbc", "pkcs7", "x919", "base64", "not hex"),
        ("0123456789ABCDEF", "cbc", "pkcs7", "x919", "base64", "32 or 48 hex digits"),
        ("0123456789ABCDEFFEDCBA98765432", "cbc", "pkcs7", "x919", "base64", "32 or 48 hex digits"),
        (KEY24 + "0011223344556677", "cbc", "pkcs7", "x919", "base64", "32 or 48 hex digits"),  # 32 bytes
        ("0123456789ABCDEF0123456789ABCDEF", "cbc", "pkcs7", "x919", "base64", "degenerates"),
        ("0123456789ABCDEF0023456789ABCDEF", "cbc", "pkcs7", "x919", "base64", "degenerates"),  # parity bits only
        (KEY16 + "FEDCBA9876543210", "cbc", "pkcs7", "x919", "base64", "degenerates"),  # K2 == K3
        (KEY16, "cfb", "pkcs7", "x919", "base64", None),  # refused, though its message blames the key length
        (KEY16, "cbc", "iso7816", "x919", "base64", None),
        (KEY16, "cbc", "pkcs7", "cmac", "base64", "cmac"),
        (KEY16, "cbc", "pkcs7", "x919", "base32", "base32"),
    ],
)
async def test_envelope_refuses_bad_settings(
    session: aiohttp.ClientSession,
    key: str,
    mode: str,
    padding: str,
    mac: str,
    encoding: str,
    message: str | None,
) -> None:
    """Non-hex, wrong length, degenerate keys and unknown settings are invalid_encryption_key, also at setup."""
    with pytest.raises(ConfigurationError, match=message) as err:
        Envelope.from_config(key, mode, padding, mac, encoding)
    assert err.value.reason == "invalid_encryption_key"
    settings = {
        "encryption_key": key,
        "encryption_mode": mode,
        "encryption_padding": padding,
        "encryption_mac": mac,
        "encryption_encoding": encoding,
    }
    with pytest.raises(ConfigurationError) as err:
        CangnanClient(session, cn_config(make_sim(meters=1), None, **settings), tz=TZ)
    assert err.value.reason == "invalid_encryption_key"


def test_envelope_accepts_loose_key_text() -> None:
    """Lower case and surrounding blanks are fine; the defaults are CBC, PKCS#7, X9.19, Base64."""
    envelope = Envelope.from_config(f"  {KEY24.lower()}\n", "ecb", "zero", "hmac_sha256", "hex")
    assert envelope == Envelope(bytes.fromhex(KEY24), "ecb", "zero", "hmac_sha256", "hex")
    assert Envelope(bytes.fromhex(KEY16)) == Envelope.from_config(KEY16, "cbc", "pkcs7", "x919", "base64")


def test_envelope_open_refuses_garbage() -> None:
    """Anything but a whole, authentic envelope is a ResponseError."""
    ours = Envelope.from_config(KEY16, "cbc", "pkcs7", "x919", "base64")
    hexed = Envelope.from_config(KEY16, "cbc", "pkcs7", "x919", "hex")
    good = json.loads(ours.seal(b'{"a": 1}'))
    cases: list[tuple[Envelope, bytes, str]] = [
        (ours, b"\xff\xfe", "not JSON"),
        (ours, b"[]", "lacks Data or MAC"),
        (ours, json.dumps({"Data": good["Data"]}).encode(), "lacks Data or MAC"),
        (ours, json.dumps({"Data": good["Data"], "MAC": 5}).encode(), "lacks Data or MAC"),
        (ours, json.dumps({"Data": "@@@@", "MAC": good["MAC"]}).encode(), "not valid Base64"),
        (hexed, json.dumps({"Data": "zz", "MAC": good["MAC"]}).encode(), "not valid Base64/hex"),
        (ours, json.dumps({"Data": "", "MAC": ours.mac_of(b"")}).encode(), "not whole 3DES blocks"),
        (ours, json.dumps({"Data": "AAAAAA==", "MAC": ours.mac_of(bytes(4))}).encode(), "not whole 3DES blocks"),
    ]
    for envelope, body, message in cases:
        with pytest.raises(ResponseError, match=message):
            envelope.open(body)
    # An authentic MAC over a block whose plaintext ends in no valid PKCS#7 padding.
    unpadded = CangnanEnvelope.from_hex(KEY16, padding="zero").seal(b"ABCDEFGH")
    with pytest.raises(ResponseError, match="bad padding"):
        ours.open(unpadded)
    assert ours.open(json.dumps({"Data": good["Data"], "MAC": good["MAC"].lower()}).encode()) == b'{"a": 1}'


# ---- commands ----------------------------------------------------------------------------------------


async def test_set_valve(sim: CangnanSimulator, client: CangnanClient, wire: Wire) -> None:
    """controlValve 2010 closes and 1010 opens; the spec's spaced success keys are understood."""
    meter = nth(sim, 0)
    assert meter.valve == "01"
    receipt = await client.async_set_valve(as_meter(meter), False, "v" * 32)
    assert receipt == CommandReceipt(serial="v" * 32, meter_id=meter.meter_id)
    assert calls(sim, "controlValve") == [
        {"UserID": meter.user_id, "MeterID": meter.meter_id, "Control": 2010, "DataFrom": sim.data_from}
    ]
    assert json.loads(wire.answers[-1])[" ReturnCode "] == "0"  # the samples' keys, spaces and all
    assert (await client.async_get_meters())[meter.meter_id].valve is ValveState.MOVING
    await sim.settle()
    assert meter.valve == "00"
    assert (await client.async_get_meters())[meter.meter_id].valve is ValveState.CLOSED
    await client.async_set_valve(as_meter(meter), True, "w" * 32)
    assert calls(sim, "controlValve")[-1]["Control"] == 1010
    sim.fail_valves = True
    await sim.settle()
    assert (await client.async_get_meters())[meter.meter_id].valve is ValveState.FAULT


async def test_recharge(sim: CangnanSimulator, client: CangnanClient) -> None:
    """TradeNo is the reference, the amount has 4 decimals, the time is the vendor's wall clock."""
    meter = nth(sim, 1)
    remain, bought = meter.remain_money, meter.total_buy_money
    reference = "ORDER-2026-0001"
    assert client.recharge_serial(reference) == reference
    when = datetime(2026, 3, 1, 1, 15, 30, tzinfo=UTC)
    receipt = await client.async_recharge(
        as_meter(meter), Decimal("50.5"), reference, serial=client.recharge_serial(reference), when=when
    )
    assert receipt == CommandReceipt(serial=reference, meter_id=meter.meter_id)
    assert calls(sim, "recharge") == [
        {
            "UserID": meter.user_id,
            "MeterID": meter.meter_id,
            "TradeNo": reference,
            "RechargeTime": "2026-03-01 09:15:30",
            "RechargeAmt": "50.5000",
            "DataFrom": sim.data_from,
        }
    ]
    assert (sim.trades[reference]["state"], sim.trades[reference]["amount"]) == ("pending", Decimal("50.5"))
    assert meter.remain_money == remain
    await sim.settle()
    got = (await client.async_get_meters())[meter.meter_id]
    assert got.balance == remain + Decimal("50.5") == meter.remain_money
    assert got.total_recharge == bought + Decimal("50.5")
    await client.async_recharge(as_meter(meter), Decimal("0.12345"), "R2", serial="R2", when=when)
    assert calls(sim, "recharge")[-1]["RechargeAmt"] == "0.1235"


async def test_recharge_retry_after_lost_answer(sim: CangnanSimulator, client: CangnanClient, wire: Wire) -> None:
    """The first attempt is done but its answer lost; the resend with the same TradeNo is 80002033, reported as such."""
    meter = nth(sim, 0)
    before = meter.remain_money
    now = datetime.now(TZ)
    sim.fail_next("timeout", endpoint="recharge")
    client.request_timeout = LOST_ANSWER_TIMEOUT
    with pytest.raises(CloudTimeoutError) as err:
        await client.async_recharge(as_meter(meter), Decimal("20.5"), "ORDER-9", serial="ORDER-9", when=now)
    assert err.value.outcome_unknown is True
    assert "ORDER-9" in sim.trades
    client.request_timeout = 5
    # Whether that is our own earlier send (received: pending) or another terminal's trade, only the ledger knows.
    with pytest.raises(DuplicateSerialError) as duplicate:
        await client.async_recharge(as_meter(meter), Decimal("20.5"), "ORDER-9", serial="ORDER-9", when=now)
    assert duplicate.value.code == "80002033"
    assert [json.loads(raw).get("returnCode") for raw in wire.answers].count("80002033") == 1
    await sim.settle()
    assert meter.remain_money == before + Decimal("20.5")
    assert [payload["TradeNo"] for payload in calls(sim, "recharge")] == ["ORDER-9", "ORDER-9"]


async def test_existing_serial_on_adjustment(sim: CangnanSimulator, client: CangnanClient) -> None:
    """80002036 (serial exists) on a money command is a duplicate too; other refusals keep their own reason."""
    meter = nth(sim, 0)
    sim.fail_next("error", code="80002036", endpoint="remainOption")
    with pytest.raises(DuplicateSerialError) as duplicate:
        await client.async_adjust_balance(
            as_meter(meter), Decimal(5), "ADJ-0", credit=True, serial="ADJ-0", when=datetime.now(TZ)
        )
    assert (duplicate.value.code, duplicate.value.reason) == ("80002036", "duplicate_serial")
    sim.fail_next("error", code="80002030", endpoint="recharge")
    with pytest.raises(CommandError) as err:
        await client.async_recharge(as_meter(meter), Decimal(5), "R-0", serial="R-0", when=datetime.now(TZ))
    assert err.value.reason == "recharge_failed"


async def test_cancel_recharge(sim: CangnanSimulator, client: CangnanClient) -> None:
    """cancelRecharge names the trade and its amount; once the money is on the meter it is too late."""
    meter = nth(sim, 0)
    before = meter.remain_money
    now = datetime.now(TZ)
    await client.async_recharge(as_meter(meter), Decimal(30), "ORDER-C", serial="ORDER-C", when=now)
    await client.async_cancel_command(as_meter(meter), CommandRef("ORDER-C", CommandKind.RECHARGE, Decimal(30)))
    [payload] = calls(sim, "cancelRecharge")
    cancel_time = payload.pop("CancelTime")
    assert payload == {
        "UserID": meter.user_id,
        "MeterID": meter.meter_id,
        "TradeNo": "ORDER-C",
        "CancelAmt": "30.0000",
        "DataFrom": sim.data_from,
    }
    assert abs(wall(cancel_time) - datetime.now(TZ)) < timedelta(seconds=5)
    assert sim.trades["ORDER-C"]["state"] == "cancelled"
    await sim.settle()
    assert meter.remain_money == before
    await client.async_recharge(as_meter(meter), Decimal(40), "ORDER-D", serial="ORDER-D", when=now)
    with pytest.raises(CommandError) as err:  # the amount must match the trade's
        await client.async_cancel_command(as_meter(meter), CommandRef("ORDER-D", CommandKind.RECHARGE, Decimal(4)))
    assert (err.value.code, err.value.reason) == ("80002027", "cancel_recharge_failed")
    await sim.settle()
    with pytest.raises(CommandError) as err:
        await client.async_cancel_command(as_meter(meter), CommandRef("ORDER-D", CommandKind.RECHARGE, Decimal(40)))
    assert (err.value.code, err.value.reason) == ("80002027", "cancel_recharge_failed")
    assert meter.remain_money == before + 40


@pytest.mark.parametrize(
    ("kind", "amount"),
    [
        (CommandKind.VALVE_OPEN, None),
        (CommandKind.VALVE_CLOSE, None),
        (CommandKind.BALANCE_CREDIT, Decimal(5)),
        (CommandKind.BALANCE_DEDUCT, Decimal(5)),
        (CommandKind.RECHARGE, None),
    ],
)
async def test_cancel_other_commands_unsupported(
    sim: CangnanSimulator, client: CangnanClient, kind: CommandKind, amount: Decimal | None
) -> None:
    """Only recharges with a known amount can be cancelled; nothing is sent otherwise."""
    with pytest.raises(UnsupportedError):
        await client.async_cancel_command(as_meter(nth(sim, 0)), CommandRef("X" * 8, kind, amount))
    assert sim.requests == []
    assert client.request_count == 0


@pytest.mark.parametrize(("credit", "option"), [(True, 1000), (False, 2000)])
async def test_adjust_balance(sim: CangnanSimulator, client: CangnanClient, credit: bool, option: int) -> None:
    """remainOption: 1000 credits and 2000 deducts OptionAmt; bought money is untouched."""
    meter = nth(sim, 2)
    remain, bought = meter.remain_money, meter.total_buy_money
    when = datetime(2026, 5, 4, 23, 30, tzinfo=UTC)
    receipt = await client.async_adjust_balance(
        as_meter(meter), Decimal("12.34"), "ADJ-1", credit=credit, serial="ADJ-1", when=when
    )
    assert receipt.serial == "ADJ-1"
    assert calls(sim, "remainOption") == [
        {
            "UserID": meter.user_id,
            "MeterID": meter.meter_id,
            "TradeNo": "ADJ-1",
            "CMDOption": option,
            "OptionTime": "2026-05-05 07:30:00",
            "OptionAmt": "12.3400",
            "DataFrom": sim.data_from,
        }
    ]
    await sim.settle()
    assert meter.remain_money == remain + (Decimal("12.34") if credit else Decimal("-12.34"))
    assert meter.total_buy_money == bought
    assert (await client.async_get_meters())[meter.meter_id].balance == meter.remain_money


async def test_set_flat_price_one_meter(sim: CangnanSimulator, client: CangnanClient) -> None:
    """One meter: changePrice with PriceMode 100 and Price1 only; the next poll has the new price."""
    meter, other = nth(sim, 0), nth(sim, 1)
    other_price = other.price
    result = await client.async_set_price([as_meter(meter)], PriceSchedule(prices=(Decimal("3.1"),), code="HA-FLAT"))
    assert result == {"price_code": "HA-FLAT", "meters": [meter.meter_id]}
    assert calls(sim, "batchChangePrice") == []
    [payload] = calls(sim, "changePrice")
    assert STAMP.fullmatch(payload.pop("ChangeTime"))
    assert payload == {
        "UserID": meter.user_id,
        "MeterID": meter.meter_id,
        "PriceID": "HA-FLAT",
        "PriceMode": "100",
        "Price1": "3.1000",
        "DataFrom": sim.data_from,
    }
    assert (meter.price_id, meter.price_mode, meter.price, meter.levels) == ("HA-FLAT", "100", Decimal("3.1"), [])
    assert other.price == other_price
    assert (await client.async_get_meters())[meter.meter_id].price == Decimal("3.1")


async def test_set_tiered_price_many_meters(sim: CangnanSimulator, client: CangnanClient) -> None:
    """Several meters: one batchChangePrice with PriceMode 101, Price1-3, integer Level1-2, MonthCount 12."""
    meters = list(sim.meters.values())[:3]
    schedule = PriceSchedule(
        prices=(Decimal("2.5"), Decimal("3.5"), Decimal("4.25")),
        ladder_limits=(Decimal(50), Decimal("300.0")),
        code="HA-TIER",
        version="7",
        effective_date=date(2026, 7, 1),
    )
    result = await client.async_set_price([as_meter(m) for m in meters], schedule)
    assert result == {"price_code": "HA-TIER", "meters": [m.meter_id for m in meters]}
    assert calls(sim, "changePrice") == []
    [payload] = calls(sim, "batchChangePrice")
    assert STAMP.fullmatch(payload.pop("ChangeTime"))
    assert payload == {
        "Meters": [{"UserID": m.user_id, "MeterID": m.meter_id} for m in meters],
        "PriceID": "HA-TIER",
        "Version": "7",
        "PriceMode": "101",
        "IniDate": "2026-07-01 00:00:00",
        "MonthCount": "12",
        "Price1": "2.5000",
        "Price2": "3.5000",
        "Price3": "4.2500",
        "Level1": 50,
        "Level2": 300,
        "DataFrom": sim.data_from,
    }
    assert type(payload["Level1"]) is int
    assert type(payload["Level2"]) is int
    for meter in meters:
        assert meter.prices == [Decimal("2.5"), Decimal("3.5"), Decimal("4.25")]
        assert (meter.levels, meter.month_count, meter.price_mode) == ([50, 300], 12, "101")
    assert sim.prices["HA-TIER"]["ini_date"] == "2026-07-01 00:00:00"
    assert nth(sim, 3).price_id != "HA-TIER"
    polled = await client.async_get_meters()
    assert all(polled[m.meter_id].price == Decimal("2.5") for m in meters)


async def test_set_price_cycle_and_generated_code(sim: CangnanSimulator, client: CangnanClient) -> None:
    """cycle_months is sent as MonthCount; without a code one is made up from the time."""
    meter = nth(sim, 0)
    schedule = PriceSchedule(prices=(Decimal(2), Decimal(3)), ladder_limits=(Decimal(100),), cycle_months=6)
    result = await client.async_set_price([as_meter(meter)], schedule)
    assert re.fullmatch(r"HA\d{14}", result["price_code"])
    payload = calls(sim, "changePrice")[0]
    assert (payload["MonthCount"], payload["Level1"], payload["PriceID"]) == ("6", 100, result["price_code"])
    assert "Level2" not in payload
    assert "Price3" not in payload
    assert (meter.month_count, meter.levels, meter.price_id) == (6, [100], result["price_code"])


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        (PriceSchedule(prices=(Decimal(2), Decimal(3)), ladder_limits=(Decimal("50.5"),)), "ladder_not_integer"),
        (PriceSchedule(prices=(Decimal(1), Decimal(2), Decimal(3), Decimal(4))), "invalid_price_schedule"),
    ],
)
async def test_price_refused_before_sending(
    sim: CangnanSimulator, client: CangnanClient, schedule: PriceSchedule, reason: str
) -> None:
    """A fractional ladder or a fourth tier cannot be sent: InvalidRequestError, nothing goes out."""
    with pytest.raises(InvalidRequestError) as err:
        await client.async_set_price([as_meter(nth(sim, 0))], schedule)
    assert err.value.reason == reason
    assert err.value.request_sent is False
    assert sim.requests == []


# ---- account lifecycle -------------------------------------------------------------------------------


def registration(**overrides: Any) -> MeterRegistration:
    """A complete meteradd for a new user with a three-tier price."""
    fields: dict[str, Any] = {
        "user_no": "KYNYN144899",
        "meter_no": "012345678999",
        "meter_type": "CNMCPUJF",
        "meter_protocol": "CNNBIoTV1",
        "initial_reading": Decimal("12.5"),
        "customer": CustomerInfo(
            user_name="新用户",
            customer_type="003",
            phone="13500000000",
            address="浙江省温州市苍南县灵溪镇新小区9栋101室",
            room="101室",
            building="9栋",
        ),
        "opening_balance": Decimal(100),
        "fire_date": date(2026, 1, 15),
        "price": PriceSchedule(
            prices=(Decimal("2.5"), Decimal("3.5"), Decimal("4.5")),
            ladder_limits=(Decimal(200), Decimal(500)),
            code="P-NEW",
            cycle_months=6,
        ),
    }
    return MeterRegistration(**(fields | overrides))


async def test_register_meter(sim: CangnanSimulator, client: CangnanClient) -> None:
    """meteradd carries the account, the device and its price; the pair joins the followed meters."""
    result = await client.async_register_meter(registration())
    assert result == {"meter_id": "012345678999", "user_no": "KYNYN144899"}
    [payload] = calls(sim, "meteradd")
    assert payload == {
        "UserID": "KYNYN144899",
        "UserName": "新用户",
        "UserType": "003",
        "Phone": "13500000000",
        "FullAddrDetail": "浙江省温州市苍南县灵溪镇新小区9栋101室",
        "AddrDetail": "101室",
        "BuildingName": "9栋",
        "PreSaving": "100.0000",
        "MeterID": "012345678999",
        "MeterNo": "012345678999",
        "MeterParamModel": "CNMCPUJF",
        "MeterProtocol": "CNNBIoTV1",
        "MeterReading": "12.5000",
        "PriceID": "P-NEW",
        "PriceMode": "101",
        "MonthCount": "6",
        "Price1": "2.5000",
        "Price2": "3.5000",
        "Price3": "4.5000",
        "Level1": 200,
        "Level2": 500,
        "FireDate": "2026-01-15 00:00:00",
        "DataFrom": sim.data_from,
    }
    added = sim.meters["012345678999"]
    assert (added.user_id, added.param_model, added.protocol, added.state) == (
        "KYNYN144899",
        "CNMCPUJF",
        "CNNBIoTV1",
        0,
    )
    assert (added.user_name, added.user_type, added.phone, added.building) == ("新用户", "003", "13500000000", "9栋")
    assert (added.remain_money, added.total_buy_money, added.reading) == (Decimal(100), Decimal(100), Decimal("12.5"))
    assert (added.price_id, added.levels, added.month_count) == ("P-NEW", [200, 500], 6)
    assert client.pairs[-1] == ("KYNYN144899", "012345678999")
    assert client.meter_list() == "\n".join(pair(meter) for meter in sim.meters.values())
    assert parse_meter_list(client.meter_list())[-1] == ("KYNYN144899", "012345678999")
    got = (await client.async_get_meters())["012345678999"]
    assert (got.reading, got.balance, got.price, got.user_no) == (
        Decimal("12.5"),
        Decimal(100),
        Decimal("2.5"),
        "KYNYN144899",
    )
    with pytest.raises(CommandError) as err:
        await client.async_register_meter(registration())
    assert (err.value.code, err.value.reason) == ("80002009", "meter_exists")
    assert client.pairs.count(("KYNYN144899", "012345678999")) == 1


async def test_register_defaults(sim: CangnanSimulator, client: CangnanClient) -> None:
    """No customer name: the user number; no balance: 0; a separate MeterID; a flat price; no fire date."""
    result = await client.async_register_meter(
        registration(
            meter_id="CN-0001",
            customer=CustomerInfo(),
            opening_balance=None,
            fire_date=None,
            price=PriceSchedule(prices=(Decimal("2.8"),)),
        )
    )
    assert result == {"meter_id": "CN-0001", "user_no": "KYNYN144899"}
    [payload] = calls(sim, "meteradd")
    assert (payload["UserName"], payload["PreSaving"], payload["MeterID"], payload["MeterNo"]) == (
        "KYNYN144899",
        "0.0000",
        "CN-0001",
        "012345678999",
    )
    assert re.fullmatch(r"HA\d{14}", payload["PriceID"])
    assert {"FireDate", "Phone", "MonthCount", "Level1", "Price2"}.isdisjoint(payload)
    assert payload["PriceMode"] == "100"
    assert client.pairs[-1] == ("KYNYN144899", "CN-0001")
    assert sim.meters["CN-0001"].remain_money == 0


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ({"meter_protocol": None}, "meter_protocol"),
        ({"meter_type": ""}, "meter_type"),
        ({"price": None}, "price_1"),
        ({"meter_type": None, "meter_protocol": None}, "meter_type, meter_protocol"),
    ],
)
async def test_register_missing_field(
    sim: CangnanSimulator, client: CangnanClient, missing: dict[str, Any], named: str
) -> None:
    """Without a protocol, a model or a price nothing is sent: InvalidRequestError missing_field."""
    with pytest.raises(InvalidRequestError) as err:
        await client.async_register_meter(registration(**missing))
    assert (err.value.reason, str(err.value)) == ("missing_field", named)
    assert sim.requests == []
    assert len(client.pairs) == len(sim.meters)


async def test_register_lost_meter_again(sim: CangnanSimulator, client: CangnanClient) -> None:
    """A followed meter the platform lost is opened again: the stored list must still load."""
    lost = nth(sim, 0)
    del sim.meters[lost.meter_id]
    await client.async_get_meters()
    assert client.unknown_meters == {pair(lost)}
    await client.async_register_meter(registration(user_no=lost.user_id, meter_no=lost.meter_id))
    assert lost.meter_id in sim.meters
    assert parse_meter_list(client.meter_list()).count((lost.user_id, lost.meter_id)) == 1


async def test_modify_customer(sim: CangnanSimulator, client: CangnanClient) -> None:
    """metermodify sends only the details given; the others stay as they are."""
    meter = nth(sim, 1)
    name, room = meter.user_name, meter.addr_detail
    result = await client.async_modify_customer(
        as_meter(meter), CustomerInfo(phone="13900000000", address="新地址 1号", customer_type="001")
    )
    assert result == {"meter_id": meter.meter_id}
    assert calls(sim, "metermodify") == [
        {
            "UserID": meter.user_id,
            "MeterID": meter.meter_id,
            "UserType": "001",
            "Phone": "13900000000",
            "FullAddrDetail": "新地址 1号",
            "DataFrom": sim.data_from,
        }
    ]
    assert (meter.phone, meter.full_addr, meter.user_type) == ("13900000000", "新地址 1号", "001")
    assert (meter.user_name, meter.addr_detail) == (name, room)


async def test_suspend_and_resume(sim: CangnanSimulator, client: CangnanClient) -> None:
    """A suspended meter (-1) refuses money with 80002023 account_inactive; resumed (1) it takes it again."""
    meter = nth(sim, 0)
    before = meter.remain_money
    assert await client.async_suspend_meter(as_meter(meter), True) == {
        "meter_id": meter.meter_id,
        "status": "suspended",
    }
    assert calls(sim, "meterSuspend") == [
        {"UserID": meter.user_id, "MeterID": meter.meter_id, "DataFrom": sim.data_from}
    ]
    assert meter.state == -1
    with pytest.raises(CommandError) as err:
        await client.async_recharge(as_meter(meter), Decimal(10), "SUSP-1", serial="SUSP-1", when=datetime.now(TZ))
    assert (err.value.code, err.value.reason, str(err.value)) == ("80002023", "account_inactive", MESSAGES["80002023"])
    assert "SUSP-1" not in sim.trades
    assert (await client.async_get_meters())[meter.meter_id].reading == meter.reading  # still read
    assert await client.async_suspend_meter(as_meter(meter), False) == {"meter_id": meter.meter_id, "status": "active"}
    assert len(calls(sim, "meterResume")) == 1
    assert meter.state == 1
    await client.async_recharge(as_meter(meter), Decimal(10), "SUSP-1", serial="SUSP-1", when=datetime.now(TZ))
    await sim.settle()
    assert meter.remain_money == before + 10
    with pytest.raises(CommandError) as err:
        await client.async_suspend_meter(as_meter(meter), False)
    assert (err.value.code, err.value.reason) == ("80002026", "resume_failed")


async def test_replace_meter(sim: CangnanSimulator, client: CangnanClient) -> None:
    """meterChange moves the account to NewMeterID with PreSaving; the followed pair follows it."""
    meter = nth(sim, 1)
    old_id, user, reading = meter.meter_id, meter.user_id, meter.reading
    replacement = MeterReplacement(
        new_meter_no="012345678950",
        new_meter_type="CNMCPUJF",
        old_reading=reading,
        new_reading=Decimal("0.5"),
        new_meter_protocol="CNNBIoTV1",
        transfer_amount=Decimal("88.8"),
    )
    result = await client.async_replace_meter(as_meter(meter), replacement)
    assert result == {"meter_id": "012345678950", "old_meter_id": old_id, "user_no": user}
    [payload] = calls(sim, "meterChange")
    assert STAMP.fullmatch(payload.pop("ChangeTime"))
    assert payload == {
        "UserID": user,
        "OldMeterID": old_id,
        "OldENDREADING": f"{reading:.4f}",
        "NewMeterID": "012345678950",
        "NewMeterNo": "012345678950",
        "NewMeterParamModel": "CNMCPUJF",
        "NewMeterProtocol": "CNNBIoTV1",
        "NewMeterReading": "0.5000",
        "PreSaving": "88.8000",
        "DataFrom": sim.data_from,
    }
    assert old_id not in sim.meters
    assert sim.meters["012345678950"] is meter
    assert (meter.user_id, meter.remain_money, meter.param_model) == (user, Decimal("88.8"), "CNMCPUJF")
    assert client.pairs[1] == (user, "012345678950")
    assert client.meter_list().splitlines()[1] == f"{user}:012345678950"
    assert old_id not in client.meter_list()
    polled = await client.async_get_meters()
    assert (polled["012345678950"].reading, polled["012345678950"].balance) == (Decimal("0.5"), Decimal("88.8"))
    assert old_id not in polled
    assert client.unknown_meters == set()


async def test_replace_meter_without_transfer_or_protocol(sim: CangnanSimulator, client: CangnanClient) -> None:
    """No transfer: no PreSaving (the platform's default 0); no protocol: refused before sending; own ID kept."""
    meter = nth(sim, 0)
    with pytest.raises(InvalidRequestError) as err:
        await client.async_replace_meter(
            as_meter(meter), MeterReplacement(new_meter_no="N1", new_meter_type="CNMCPUJE", old_reading=meter.reading)
        )
    assert err.value.reason == "missing_field"
    assert sim.requests == []
    replacement = MeterReplacement(
        new_meter_no="N1",
        new_meter_type="CNMCPUJE",
        old_reading=meter.reading,
        new_meter_id="ID-N1",
        new_meter_protocol="CNModbusV61",
    )
    await client.async_replace_meter(as_meter(meter), replacement)
    payload = calls(sim, "meterChange")[0]
    assert "PreSaving" not in payload
    assert (payload["NewMeterID"], payload["NewMeterNo"], payload["NewMeterReading"]) == ("ID-N1", "N1", "0.0000")
    assert sim.meters["ID-N1"].remain_money == 0
    assert client.pairs[0] == (meter.user_id, "ID-N1")


async def test_deregister_meter(sim: CangnanSimulator, client: CangnanClient) -> None:
    """meterDelete closes the account; the pair leaves the followed meters and is not reported unknown."""
    meter = nth(sim, 2)
    result = await client.async_deregister_meter(as_meter(meter), Decimal("1.5"), "用户销户")
    assert result == {"meter_id": meter.meter_id}
    assert calls(sim, "meterDelete") == [
        {"UserID": meter.user_id, "MeterID": meter.meter_id, "DataFrom": sim.data_from}
    ]
    assert meter.meter_id not in sim.meters
    assert (meter.user_id, meter.meter_id) not in client.pairs
    assert len(client.pairs) == len(sim.meters) == 5
    assert pair(meter) not in client.meter_list().splitlines()
    polled = await client.async_get_meters()
    assert set(polled) == set(sim.meters)
    assert client.unknown_meters == set()
    with pytest.raises(CommandError) as err:
        await client.async_deregister_meter(as_meter(meter), Decimal("1.5"), "用户销户")
    assert (err.value.code, err.value.reason) == ("80002013", "meter_user_mismatch")


# ---- vendor errors and transport failures ------------------------------------------------------------


# Chapter 7, written out independently of api.cangnan.ERRORS: code → (class, reason).
CHAPTER_7: dict[str, tuple[type[MeterCloudError], str]] = {
    "80002001": (CommandError, "request_unparsable"),
    "80002002": (CommandError, "request_type_error"),
    "80001010": (CommandError, "vendor_storage_failed"),
    "80002003": (CommandError, "request_missing_field"),
    "80002009": (CommandError, "meter_exists"),
    "80002004": (CommandError, "price_invalid"),
    "80002007": (CommandError, "price_add_failed"),
    "80002005": (CommandError, "user_data_invalid"),
    "80002006": (CommandError, "meter_data_invalid"),
    "80002008": (CommandError, "account_add_failed"),
    "80002010": (CommandError, "remote_open_failed"),
    "80002011": (CommandError, "account_not_found"),
    "80002012": (CommandError, "account_modify_failed"),
    "80002013": (CommandError, "meter_user_mismatch"),
    "80002014": (CommandError, "reading_failed"),
    "80002015": (CommandError, "new_meter_exists"),
    "80002016": (CommandError, "meter_change_failed"),
    "80002017": (CommandError, "no_system_id"),
    "80002018": (CommandError, "meter_id_invalid"),
    "80002019": (CommandError, "valve_failed"),
    "80002020": (CommandError, "account_close_failed"),
    "80002022": (CommandError, "purchase_count_failed"),
    "80002021": (CommandError, "meter_number_change_failed"),
    "80002023": (CommandError, "account_inactive"),
    "80002024": (CommandError, "not_remote_meter"),
    "80002025": (CommandError, "suspend_failed"),
    "80002026": (CommandError, "resume_failed"),
    "80002027": (CommandError, "cancel_recharge_failed"),
    "80002028": (CommandError, "meter_model_not_found"),
    "80002029": (CommandError, "protocol_or_price_failed"),
    "80002030": (CommandError, "recharge_failed"),
    "80002031": (CommandError, "no_alarm_data"),
    "80002032": (CloudConnectionError, "peer_no_response"),  # the platform's own peer did not answer
    "80002033": (CommandError, "trade_no_exists"),
    "80002034": (CommandError, "price_id_exists"),
    "80002035": (CommandError, "price_id_not_found"),
    "80002036": (CommandError, "serial_exists"),
    "80002037": (CommandError, "command_serial_not_found"),
    "80002038": (CommandError, "balance_adjust_failed"),
}


def test_chapter_7_table() -> None:
    """The client maps exactly chapter 7's 39 distinct codes, each to the class and reason listed here."""
    assert len(CHAPTER_7) == 39
    assert set(CHAPTER_7) == set(MESSAGES)
    assert ERRORS == CHAPTER_7


@pytest.mark.parametrize(("code", "error", "reason"), [(code, *CHAPTER_7[code]) for code in sorted(CHAPTER_7)])
async def test_error_codes(
    sim: CangnanSimulator, client: CangnanClient, code: str, error: type[MeterCloudError], reason: str
) -> None:
    """Each chapter-7 code becomes its error class and reason, with the vendor's code and text."""
    meter = nth(sim, 0)
    sim.fail_next("error", code=code, endpoint="controlValve")
    with pytest.raises(MeterCloudError) as err:
        await client.async_set_valve(as_meter(meter), False, "e" * 32)
    assert type(err.value) is error
    assert (err.value.code, err.value.reason, str(err.value)) == (code, reason, MESSAGES[code])
    assert err.value.outcome_unknown is False
    assert meter.valve == "01"
    await client.async_set_valve(as_meter(meter), False, "e" * 32)
    assert meter.valve == "10"


async def test_unknown_error_code(sim: CangnanSimulator, client: CangnanClient) -> None:
    """A code outside chapter 7 is a generic refusal carrying the vendor's code and text."""
    sim.fail_next("error", code="80009999", endpoint="controlValve")
    with pytest.raises(CommandError) as err:
        await client.async_set_valve(as_meter(nth(sim, 0)), True, "u" * 32)
    assert type(err.value) is CommandError
    assert (err.value.code, err.value.reason, str(err.value)) == ("80009999", "command_failed", MESSAGES["80002003"])


@pytest.mark.parametrize(
    ("mode", "error", "code", "unknown"),
    [
        ("auth", AuthenticationError, "401", False),
        ("http500", CloudConnectionError, "500", True),
        ("malformed", ResponseError, None, True),
        ("drop", CloudTimeoutError, None, True),
        ("timeout", CloudTimeoutError, None, True),
    ],
)
async def test_failure_modes(
    sim: CangnanSimulator,
    client: CangnanClient,
    mode: str,
    error: type[MeterCloudError],
    code: str | None,
    unknown: bool,
) -> None:
    """Each injected failure maps to its class once; lost or garbled answers leave the outcome open."""
    client.request_timeout = LOST_ANSWER_TIMEOUT
    sim.fail_next(mode)
    with pytest.raises(MeterCloudError) as err:
        await client.async_get_meters()
    assert type(err.value) is error
    assert err.value.outcome_unknown is unknown
    assert err.value.code == code
    assert len(await client.async_get_meters()) == len(sim.meters)
    assert client.request_count == 2


async def test_wrong_credentials_company_and_clock(
    sim: CangnanSimulator, server: TestServer, session: aiohttp.ClientSession
) -> None:
    """The simulator checks the headers itself: a wrong secret or a UTC clock is 401; a wrong company 80002003."""
    for config, tz in ((cn_config(sim, server, app_secret="wrong"), TZ), (cn_config(sim, server), UTC)):
        with pytest.raises(AuthenticationError) as auth:
            await CangnanClient(session, config, tz=tz).async_get_meters()
        assert auth.value.code == "401"
    other = CangnanClient(session, cn_config(sim, server, data_from="别的燃气公司"), tz=TZ)
    with pytest.raises(CommandError) as err:
        await other.async_get_meters()
    assert (err.value.code, err.value.reason) == ("80002003", "request_missing_field")
    assert calls(sim, "ReadCurrentData")[-1]["DataFrom"] == "别的燃气公司"


async def test_connection_refused(session: aiohttp.ClientSession, socket_enabled: None, unused_tcp_port: int) -> None:
    """Nothing listening: the request never left, so it is a connection error and not a timeout."""
    sim = make_sim(meters=1)
    refused = CangnanClient(session, cn_config(sim, None, base_url=f"http://127.0.0.1:{unused_tcp_port}/"), tz=TZ)
    with pytest.raises(CloudConnectionError) as err:
        await refused.async_get_meters()
    assert not isinstance(err.value, CloudTimeoutError)
    assert (err.value.request_sent, err.value.outcome_unknown) == (False, False)


# ---- pushes (chapter 6) ------------------------------------------------------------------------------


def push_rig(session: aiohttp.ClientSession, sealed: bool) -> tuple[CangnanSimulator, CangnanClient]:
    """A simulator that signs (and maybe seals) pushes and a client that receives them."""
    sim = make_sim(meters=4, envelope=sealed_envelope() if sealed else None)
    return sim, CangnanClient(session, cn_config(sim, None), tz=TZ)


def as_bytes(response: dict[str, Any] | bytes) -> bytes:
    """Our answer body: the Cangnan client hands it over already encoded (and sealed when it seals)."""
    assert isinstance(response, bytes)
    return response


def answered(sim: CangnanSimulator, client: CangnanClient, response: dict[str, Any] | bytes) -> dict[str, Any]:
    """Our answer to a push, as the platform reads it; sealed exactly when encryption is on."""
    assert isinstance(response, bytes)
    assert (set(json.loads(response)) == {"Data", "MAC"}) is (client.envelope is not None)
    return opened(sim, response)


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
@pytest.mark.parametrize("valve", sorted(VALVES))
async def test_parse_reading_push(session: aiohttp.ClientSession, sealed: bool, valve: str) -> None:
    """A 6.1 push is authenticated and carries exactly the simulator's values; the answer is ReturnCode 0."""
    sim, client = push_rig(session, sealed)
    sim.tick(30)
    meter = nth(sim, 1)
    meter.valve = valve
    headers, body = sim.signed_push(PUSH_PATHS["reading"], sim.reading_body(meter.meter_id, serial="1" * 32))
    result = client.parse_push("/reading/", headers, body, datetime.now(TZ))
    assert result.serial == "1" * 32
    assert answered(sim, client, result.response) == {"ReturnCode": "0", "ReturnMessage": OK_MESSAGE}
    assert result.alarm is None
    got = result.reading
    assert got is not None
    assert (got.meter_id, got.user_no) == (meter.meter_no, meter.user_id)
    assert (got.reading, got.reading_time, got.valve) == (meter.reading, meter.read_time, VALVES[valve])
    assert (got.temperature, got.pressure) == (meter.temperature, meter.pressure)
    assert (got.balance, got.total_gas) == (None, None)


@pytest.mark.parametrize(
    ("code", "kind", "priority"),
    [
        ("01", AlarmType.COMMUNICATION_FAULT, AlarmPriority.MEDIUM),
        ("02", AlarmType.GAS_LEAK, AlarmPriority.HIGH),
        ("03", AlarmType.REED_SWITCH_FAULT, AlarmPriority.HIGH),
        ("04", AlarmType.VALVE_LEAK, AlarmPriority.HIGH),
        ("05", AlarmType.VALVE_FAULT, AlarmPriority.HIGH),
        ("06", AlarmType.BATTERY_FAULT, AlarmPriority.HIGH),
        ("07", AlarmType.MAGNETIC_INTERFERENCE, AlarmPriority.MEDIUM),
        ("08", AlarmType.LOW_BALANCE, AlarmPriority.MEDIUM),
        ("09", AlarmType.TAMPERING, AlarmPriority.HIGH),
        ("8", AlarmType.LOW_BALANCE, AlarmPriority.MEDIUM),
        ("42", AlarmType.OTHER, AlarmPriority.HIGH),
        ("", AlarmType.OTHER, AlarmPriority.HIGH),
    ],
)
@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
async def test_parse_alarm_push(
    session: aiohttp.ClientSession, sealed: bool, code: str, kind: AlarmType, priority: AlarmPriority
) -> None:
    """A 6.2 push becomes an alarm of our code's kind and priority, with its text and time."""
    sim, client = push_rig(session, sealed)
    meter = nth(sim, 0)
    message = ALARM_TYPES.get(code.zfill(2), "未知警报")
    headers, body = sim.signed_push("alarm", sim.alarm_body(meter.meter_id, code, message, serial="2" * 32))
    result = client.parse_push("alarm", headers, body, datetime.now(TZ))
    assert result.serial == "2" * 32
    assert answered(sim, client, result.response)["ReturnCode"] == "0"
    assert result.reading is None
    alarm = result.alarm
    assert alarm is not None
    assert (alarm.meter_id, alarm.type, alarm.priority, alarm.message, alarm.code) == (
        meter.meter_no,
        kind,
        priority,
        message,
        code,
    )
    assert alarm.time is not None
    assert abs(alarm.time - datetime.now(TZ)) < timedelta(seconds=5)


def _plain_push(sim: CangnanSimulator, body: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    stamp = datetime.now(TZ).strftime("%Y%m%d%H%M%S")
    headers = {"Content-Type": "application/json;charset=utf-8"} | sign(sim.app_token, sim.app_secret, stamp)
    return headers, dumps(body).encode()


REJECTIONS = [
    ("bad_signature", 401, "401", "bad_signature"),
    ("stale", 401, "401", "stale_timestamp"),
    ("future", 401, "401", "stale_timestamp"),
    ("other_token", 401, "401", "unknown_sender"),
    ("no_authorization", 401, "401", "unknown_sender"),
    ("unknown_path", 404, "80002003", "unknown_path"),
    ("not_json", 400, "80002001", "malformed"),
    ("no_serial", 400, "80002003", "malformed"),
    ("no_meter", 400, "80002003", "malformed"),
    ("other_company", 400, "80002003", "malformed"),
]
SEALED_ONLY = [("unsealed", 400, "80002001", "malformed"), ("tampered", 400, "80002001", "malformed")]


@pytest.mark.parametrize(
    ("sealed", "case", "status", "code", "reason"),
    [
        pytest.param(sealed, *case, id=f"{'sealed' if sealed else 'plain'}-{case[0]}")
        for sealed in (False, True)
        for case in REJECTIONS + (SEALED_ONLY if sealed else [])
    ],
)
async def test_push_rejections(
    session: aiohttp.ClientSession, sealed: bool, case: str, status: int, code: str, reason: str
) -> None:
    """Forged, stale, foreign, broken or misaddressed pushes are refused; the refusal is sealed when we seal."""
    sim, client = push_rig(session, sealed)
    now = datetime.now(TZ)
    meter_id = nth(sim, 0).meter_id
    body: dict[str, Any] | bytes = sim.reading_body(meter_id)
    path, when = "reading", now
    if case == "stale":
        when = now - timedelta(minutes=6)
    elif case == "future":
        when = now + timedelta(minutes=6)
    elif case == "not_json":
        body = b'{"requestSerialNo": "1", "meterNo": '
    elif case in ("no_serial", "no_meter"):
        drop = "requestSerialNo" if case == "no_serial" else "meterNo"
        body = {key: value for key, value in sim.reading_body(meter_id).items() if key != drop}
    elif case == "other_company":
        body = sim.reading_body(meter_id) | {"DataFrom": "别的燃气公司"}
    headers, raw = sim.signed_push("reading", body, now=when)
    if case == "bad_signature":
        token = headers["AccessToken"]
        headers = headers | {"AccessToken": ("0" if token[0] != "0" else "1") + token[1:]}
    elif case == "other_token":
        headers = headers | sign("OTHERTOKEN", sim.app_secret, now.strftime("%Y%m%d%H%M%S"))
    elif case == "no_authorization":
        headers = {key: value for key, value in headers.items() if key != "Authorization"}
    elif case == "unknown_path":
        path = "command"
    elif case == "unsealed":
        headers, raw = _plain_push(sim, sim.reading_body(meter_id))
    elif case == "tampered":
        raw = _flip_mac(raw)
    with pytest.raises(PushError) as err:
        client.parse_push(path, headers, raw, now)
    assert (err.value.status, err.value.reason) == (status, reason)
    assert answered(sim, client, err.value.response)["ReturnCode"] == code


async def test_push_within_the_window(session: aiohttp.ClientSession) -> None:
    """Four minutes of clock skew either way are tolerated."""
    sim, client = push_rig(session, sealed=True)
    now = datetime.now(TZ)
    for skew in (timedelta(minutes=-4), timedelta(minutes=4)):
        headers, raw = sim.signed_push("reading", sim.reading_body(nth(sim, 0).meter_id), now=now + skew)
        assert client.parse_push("reading", headers, raw, now).reading is not None


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
async def test_pushes_over_http(
    serve: Serve, session: aiohttp.ClientSession, aiohttp_server: Any, sealed: bool
) -> None:
    """The simulator's own push sender reaches a receiver built on parse_push and reads its answers."""
    sim, client = await rig(serve, session, meters=3, envelope=sealed_envelope() if sealed else None)
    accepted: list[PushResult] = []

    async def receive(request: web.Request) -> web.Response:
        try:
            result = client.parse_push(request.path, request.headers, await request.read(), datetime.now(TZ))
        except PushError as err:
            return web.Response(status=err.status, body=as_bytes(err.response), content_type="application/json")
        accepted.append(result)
        return web.Response(body=as_bytes(result.response), content_type="application/json")

    app = web.Application()
    app.router.add_post("/{path:.*}", receive)
    receiver: TestServer = await aiohttp_server(app, host="127.0.0.1")
    sim.push_url = str(receiver.make_url("/"))
    meter = nth(sim, 2)
    assert await sim.push_reading(meter.meter_id, serial="4" * 32) == (
        200,
        {"ReturnCode": "0", "ReturnMessage": OK_MESSAGE},
    )
    status, answer = await sim.push_alarm(meter.meter_id, "09", ALARM_TYPES["09"])
    assert (status, answer["ReturnCode"]) == (200, "0")
    assert accepted[0].serial == "4" * 32
    reading, alarm = accepted[0].reading, accepted[1].alarm
    assert reading is not None
    assert alarm is not None
    assert (reading.meter_id, reading.reading, reading.valve) == (meter.meter_id, meter.reading, ValveState.CLOSED)
    assert (alarm.type, alarm.message) == (AlarmType.TAMPERING, "非法拆装")
    sim.app_secret = "changed"  # now our receiver must refuse the simulator
    status, answer = await sim.push_reading(meter.meter_id)
    assert (status, answer["ReturnCode"]) == (401, "401")
    assert len(accepted) == 2
